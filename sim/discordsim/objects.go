package discordsim

import (
	"encoding/json"
	"strconv"
	"time"
)

// Discord-shaped JSON objects: one type per Discord object, rendered by the same constructors for the
// gateway's events and the REST routes, so both paths show the same object the same way. Only the
// fields a bot's infrastructure reads are modelled, but every ID is a string and empty lists are []
// (not null), as on Discord.

// ---- users ----

type simUser struct {
	ID            string  `json:"id"`
	Username      string  `json:"username"`
	Discriminator string  `json:"discriminator"`
	GlobalName    *string `json:"global_name"`
	Avatar        *string `json:"avatar"`
	Bot           bool    `json:"bot,omitempty"`
	PublicFlags   int     `json:"public_flags"`
}

// botUser is the user of the bot with token index tok.
func botUser(tok int) simUser {
	return simUser{ID: FormatID(BotUserID(tok)), Username: "sim-bot-" + strconv.Itoa(tok), Discriminator: "0", Bot: true}
}

// plainUser is a simulated user who is not a bot: a guild member, a DM recipient.
func plainUser(id uint64) simUser {
	return simUser{ID: FormatID(id), Username: "user-" + FormatID(id), Discriminator: "0"}
}

// simCurrentUser is the bot's own user as READY and GET /users/@me carry it: its user object and the
// fields only its owner sees.
type simCurrentUser struct {
	simUser
	Verified   bool    `json:"verified"`
	MFAEnabled bool    `json:"mfa_enabled"`
	Email      *string `json:"email"`
	Flags      int     `json:"flags"`
}

func currentUser(tok int) simCurrentUser {
	return simCurrentUser{simUser: botUser(tok), Verified: true}
}

// ---- applications ----

// simPartialApplication is the application as READY carries it: its ID and flags.
type simPartialApplication struct {
	ID    string `json:"id"`
	Flags int    `json:"flags"`
}

// botApplication is the application of the bot with token index tok; privileged is the set of
// privileged intents enabled for it.
func botApplication(tok, privileged int) simPartialApplication {
	return simPartialApplication{ID: FormatID(BotUserID(tok)), Flags: applicationFlags(privileged)}
}

// applicationFlags are the GATEWAY_* flags matching the privileged intents the app has enabled.
func applicationFlags(privileged int) int {
	f := 0
	if privileged&IntentGuildPresences != 0 {
		f |= 1 << 12
	}
	if privileged&IntentGuildMembers != 0 {
		f |= 1 << 14
	}
	if privileged&IntentMessageContent != 0 {
		f |= 1 << 18
	}
	return f
}

// simApplication is the application object of GET /applications/@me.
type simApplication struct {
	simPartialApplication
	Name        string  `json:"name"`
	Icon        *string `json:"icon"`
	Description string  `json:"description"`
	BotPublic   bool    `json:"bot_public"`
	Bot         simUser `json:"bot"`
}

// ---- guild members ----

type simMember struct {
	// User is in every member object but those of MESSAGE_CREATE and MESSAGE_UPDATE, which carry the
	// user as the message's author.
	User                       *simUser `json:"user,omitempty"`
	Nick                       *string  `json:"nick"`
	Avatar                     *string  `json:"avatar"`
	Roles                      []string `json:"roles"`
	JoinedAt                   string   `json:"joined_at"`
	PremiumSince               *string  `json:"premium_since"`
	Deaf                       bool     `json:"deaf"`
	Mute                       bool     `json:"mute"`
	Flags                      int      `json:"flags"`
	Pending                    bool     `json:"pending"`
	CommunicationDisabledUntil *string  `json:"communication_disabled_until"`
}

// partialMember is a member object without its user, as a message's member field is.
func partialMember(joinedAt string) simMember {
	return simMember{Roles: []string{}, JoinedAt: joinedAt}
}

func newMember(u simUser, joinedAt string) simMember {
	m := partialMember(joinedAt)
	m.User = &u
	return m
}

// guildMember is a member of a simulated guild: every member, the bots too, joined a day after the
// guild was created.
func guildMember(g *Guild, u simUser) simMember { return newMember(u, guildJoinedAt(g)) }

func guildJoinedAt(g *Guild) string { return discordTime(snowflakeTime(g.ID).Add(24 * time.Hour)) }

// ---- roles ----

type simRole struct {
	ID           string  `json:"id"`
	Name         string  `json:"name"`
	Color        int     `json:"color"`
	Hoist        bool    `json:"hoist"`
	Icon         *string `json:"icon"`
	UnicodeEmoji *string `json:"unicode_emoji"`
	Position     int     `json:"position"`
	Permissions  string  `json:"permissions"`
	Managed      bool    `json:"managed"`
	Mentionable  bool    `json:"mentionable"`
	Flags        int     `json:"flags"`
}

// guildRoles are a guild's roles: @everyone (whose ID is the guild's) first, then "role-<i>".
func guildRoles(g *Guild) []simRole {
	out := make([]simRole, len(g.RoleIDs))
	for i, id := range g.RoleIDs {
		out[i] = simRole{ID: FormatID(id), Name: "role-" + strconv.Itoa(i), Position: i, Permissions: "0"}
		if i == 0 {
			out[i].Name, out[i].Permissions = "@everyone", "1071698660929"
		}
	}
	return out
}

// ---- channels ----

type simOverwrite struct {
	ID    string `json:"id"`
	Type  int    `json:"type"`
	Allow string `json:"allow"`
	Deny  string `json:"deny"`
}

type simChannel struct {
	ID      string `json:"id"`
	Type    int    `json:"type"`
	GuildID string `json:"guild_id,omitempty"` // GUILD_CREATE's channels omit it
	// The fields of guild channels; a DM has none of them (nil).
	*simGuildChannel
	NSFW             bool      `json:"nsfw"`
	LastMessageID    *string   `json:"last_message_id"`
	RateLimitPerUser int       `json:"rate_limit_per_user"`
	ParentID         *string   `json:"parent_id"`
	Recipients       []simUser `json:"recipients,omitempty"` // DMs only
	Flags            int       `json:"flags"`
}

type simGuildChannel struct {
	Name                 string         `json:"name"`
	Position             int            `json:"position"`
	PermissionOverwrites []simOverwrite `json:"permission_overwrites"`
	Topic                *string        `json:"topic"`
}

// guildChannel is the text channel ch of a guild, at position pos of its channel list.
func guildChannel(g *Guild, ch uint64, pos int) simChannel {
	return simChannel{ID: FormatID(ch), Type: 0, GuildID: FormatID(g.ID), simGuildChannel: &simGuildChannel{
		Name: "channel-" + strconv.Itoa(pos), Position: pos, PermissionOverwrites: []simOverwrite{}}}
}

// channelPosition is where ch stands in the guild's channel list (0 if it is not there).
func channelPosition(g *Guild, ch uint64) int {
	pos := 0
	for i, c := range g.Channels {
		if c == ch {
			pos = i
		}
	}
	return pos
}

func dmChannel(ch, recipient uint64) simChannel {
	return simChannel{ID: FormatID(ch), Type: 1, Recipients: []simUser{plainUser(recipient)}}
}

// ---- guilds ----

// simEmoji is a partial emoji: a reaction's, or one of a guild's (the simulated guilds have none).
type simEmoji struct {
	ID   *string `json:"id"`
	Name string  `json:"name"`
}

// simGuild is the guild object of GET /guilds/{id}; GUILD_CREATE adds its own fields to it.
type simGuild struct {
	ID                          string     `json:"id"`
	Name                        string     `json:"name"`
	Icon                        *string    `json:"icon"`
	Splash                      *string    `json:"splash"`
	DiscoverySplash             *string    `json:"discovery_splash"`
	OwnerID                     string     `json:"owner_id"`
	AFKChannelID                *string    `json:"afk_channel_id"`
	AFKTimeout                  int        `json:"afk_timeout"`
	VerificationLevel           int        `json:"verification_level"`
	DefaultMessageNotifications int        `json:"default_message_notifications"`
	ExplicitContentFilter       int        `json:"explicit_content_filter"`
	Roles                       []simRole  `json:"roles"`
	Emojis                      []simEmoji `json:"emojis"`
	Features                    []string   `json:"features"`
	MFALevel                    int        `json:"mfa_level"`
	ApplicationID               *string    `json:"application_id"`
	SystemChannelID             *string    `json:"system_channel_id"`
	SystemChannelFlags          int        `json:"system_channel_flags"`
	RulesChannelID              *string    `json:"rules_channel_id"`
	MaxMembers                  int        `json:"max_members"`
	VanityURLCode               *string    `json:"vanity_url_code"`
	Description                 *string    `json:"description"`
	Banner                      *string    `json:"banner"`
	PremiumTier                 int        `json:"premium_tier"`
	PremiumSubscriptionCount    int        `json:"premium_subscription_count"`
	PreferredLocale             string     `json:"preferred_locale"`
	PublicUpdatesChannelID      *string    `json:"public_updates_channel_id"`
	NSFWLevel                   int        `json:"nsfw_level"`
	Stickers                    []struct{} `json:"stickers"` // the simulated guilds have none
	PremiumProgressBarEnabled   bool       `json:"premium_progress_bar_enabled"`
	SafetyAlertsChannelID       *string    `json:"safety_alerts_channel_id"`
	// GET /guilds/{id}?with_counts=true only.
	ApproximateMemberCount   *int `json:"approximate_member_count,omitempty"`
	ApproximatePresenceCount *int `json:"approximate_presence_count,omitempty"`
}

func newGuild(g *Guild) simGuild {
	return simGuild{ID: FormatID(g.ID), Name: g.Name, OwnerID: FormatID(g.OwnerID), AFKTimeout: 300,
		Roles: guildRoles(g), Emojis: []simEmoji{}, Features: []string{}, MaxMembers: 500000,
		PreferredLocale: "en-US", Stickers: []struct{}{}}
}

type simUnavailableGuild struct {
	ID          string `json:"id"`
	Unavailable bool   `json:"unavailable"`
}

// ---- messages ----

type simAttachment struct {
	ID          string `json:"id"`
	Filename    string `json:"filename"`
	Description string `json:"description,omitempty"`
	ContentType string `json:"content_type,omitempty"`
	Size        int64  `json:"size"`
	URL         string `json:"url"`
	ProxyURL    string `json:"proxy_url"`
}

// simEmbed is the embed of a link unfurl. Embeds a bot sends are kept as it sent them (raw JSON).
type simEmbed struct {
	Type        string `json:"type"`
	URL         string `json:"url"`
	Title       string `json:"title"`
	Description string `json:"description"`
}

type simMessage struct {
	ID        string `json:"id"`
	Type      int    `json:"type"`
	ChannelID string `json:"channel_id"`
	// GuildID and Member: in the gateway's message events of guild channels only.
	GuildID         string            `json:"guild_id,omitempty"`
	Author          simUser           `json:"author"`
	Member          *simMember        `json:"member,omitempty"`
	Content         string            `json:"content"`
	Timestamp       string            `json:"timestamp"`
	EditedTimestamp *string           `json:"edited_timestamp"`
	TTS             bool              `json:"tts"`
	MentionEveryone bool              `json:"mention_everyone"`
	Mentions        []simUser         `json:"mentions"`
	MentionRoles    []string          `json:"mention_roles"`
	Attachments     []simAttachment   `json:"attachments"`
	Embeds          []json.RawMessage `json:"embeds"`
	Components      []json.RawMessage `json:"components"`
	Pinned          bool              `json:"pinned"`
	Flags           int               `json:"flags"`
	Nonce           json.RawMessage   `json:"nonce,omitempty"`
	WebhookID       string            `json:"webhook_id,omitempty"`
	ApplicationID   string            `json:"application_id,omitempty"`
}

// newMessage is an empty message of a channel, sent when its ID says.
func newMessage(id, channel uint64, author simUser) simMessage {
	return simMessage{ID: FormatID(id), ChannelID: FormatID(channel), Author: author, Timestamp: snowflakeTimestamp(id),
		Mentions: []simUser{}, MentionRoles: []string{}, Attachments: []simAttachment{},
		Embeds: []json.RawMessage{}, Components: []json.RawMessage{}}
}

// ---- webhooks ----

type simWebhook struct {
	ID            string   `json:"id"`
	Type          int      `json:"type"`
	GuildID       string   `json:"guild_id"`
	ChannelID     string   `json:"channel_id"`
	Name          string   `json:"name"`
	Avatar        *string  `json:"avatar"`
	ApplicationID string   `json:"application_id"`
	Token         string   `json:"token,omitempty"`
	URL           string   `json:"url,omitempty"`
	User          *simUser `json:"user,omitempty"`
}

// ---- times ----

// discordTime renders a time as Discord does: ISO 8601 with microseconds and +00:00.
func discordTime(t time.Time) string {
	var buf [32]byte
	return string(appendDiscordTime(buf[:0], t)) // t.UTC().Format("2006-01-02T15:04:05.000000+00:00")
}

// snowflakeTime is the creation time encoded in a snowflake.
func snowflakeTime(id uint64) time.Time {
	return time.UnixMilli(int64(id>>22) + DiscordEpoch)
}

// snowflakeTimestamp is the creation time of a snowflake in Discord's timestamp format.
func snowflakeTimestamp(id uint64) string { return discordTime(snowflakeTime(id)) }

// snowflakeAge is how long ago a snowflake was minted (negative for one from the future).
func snowflakeAge(id uint64) time.Duration {
	return time.Duration(time.Now().UnixMilli()-(int64(id>>22)+DiscordEpoch)) * time.Millisecond
}
