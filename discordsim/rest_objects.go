package discordsim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// Discord-shaped JSON objects that the REST routes return. Only the fields a bot's infrastructure
// reads are modelled, but every ID is a string and empty lists are [] (not null), as on Discord.

type restUser struct {
	ID            string  `json:"id"`
	Username      string  `json:"username"`
	Discriminator string  `json:"discriminator"`
	GlobalName    *string `json:"global_name"`
	Avatar        *string `json:"avatar"`
	Bot           bool    `json:"bot,omitempty"`
	PublicFlags   int     `json:"public_flags"`
}

func restBotUser(tok int) restUser {
	return restUser{ID: FormatID(BotUserID(tok)), Username: fmt.Sprintf("sim-bot-%d", tok), Discriminator: "0", Bot: true}
}

func restPlainUser(id uint64) restUser {
	return restUser{ID: FormatID(id), Username: "user-" + FormatID(id), Discriminator: "0"}
}

type restMember struct {
	User                       restUser `json:"user"`
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

func restMemberObj(u restUser, joined uint64) restMember {
	return restMember{User: u, Roles: []string{}, JoinedAt: restTimestamp(joined)}
}

type restRole struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Color       int    `json:"color"`
	Hoist       bool   `json:"hoist"`
	Position    int    `json:"position"`
	Permissions string `json:"permissions"`
	Managed     bool   `json:"managed"`
	Mentionable bool   `json:"mentionable"`
	Flags       int    `json:"flags"`
}

func restGuildRoles(g Guild) []restRole {
	out := make([]restRole, len(g.RoleIDs))
	for i, id := range g.RoleIDs {
		out[i] = restRole{ID: FormatID(id), Name: fmt.Sprintf("role-%d", i), Position: i, Permissions: "0"}
		if i == 0 {
			out[i].Name, out[i].Permissions = "@everyone", "1071698660929"
		}
	}
	return out
}

type restOverwrite struct {
	ID    string `json:"id"`
	Type  int    `json:"type"`
	Allow string `json:"allow"`
	Deny  string `json:"deny"`
}

type restChannel struct {
	ID                   string          `json:"id"`
	Type                 int             `json:"type"`
	GuildID              string          `json:"guild_id,omitempty"`
	Name                 string          `json:"name,omitempty"`
	Position             *int            `json:"position,omitempty"`
	PermissionOverwrites []restOverwrite `json:"permission_overwrites,omitempty"`
	Topic                *string         `json:"topic,omitempty"`
	NSFW                 bool            `json:"nsfw"`
	LastMessageID        *string         `json:"last_message_id"`
	RateLimitPerUser     int             `json:"rate_limit_per_user"`
	ParentID             *string         `json:"parent_id"`
	Recipients           []restUser      `json:"recipients,omitempty"`
	Flags                int             `json:"flags"`
}

func restGuildChannel(g Guild, ch uint64) restChannel {
	pos := 0
	for i, c := range g.Channels {
		if c == ch {
			pos = i
		}
	}
	return restChannel{ID: FormatID(ch), Type: 0, GuildID: FormatID(g.ID), Name: fmt.Sprintf("channel-%d", pos),
		Position: &pos, PermissionOverwrites: []restOverwrite{}}
}

func restDMChannel(ch, recipient uint64) restChannel {
	return restChannel{ID: FormatID(ch), Type: 1, Recipients: []restUser{restPlainUser(recipient)}}
}

type restGuild struct {
	ID                       string     `json:"id"`
	Name                     string     `json:"name"`
	Icon                     *string    `json:"icon"`
	OwnerID                  string     `json:"owner_id"`
	Region                   *string    `json:"region"`
	AFKChannelID             *string    `json:"afk_channel_id"`
	AFKTimeout               int        `json:"afk_timeout"`
	VerificationLevel        int        `json:"verification_level"`
	DefaultNotifications     int        `json:"default_message_notifications"`
	ExplicitContentFilter    int        `json:"explicit_content_filter"`
	Roles                    []restRole `json:"roles"`
	Emojis                   []struct{} `json:"emojis"`
	Features                 []string   `json:"features"`
	MFALevel                 int        `json:"mfa_level"`
	SystemChannelID          *string    `json:"system_channel_id"`
	PreferredLocale          string     `json:"preferred_locale"`
	PremiumTier              int        `json:"premium_tier"`
	NSFWLevel                int        `json:"nsfw_level"`
	ApproximateMemberCount   *int       `json:"approximate_member_count,omitempty"`
	ApproximatePresenceCount *int       `json:"approximate_presence_count,omitempty"`
}

type restAttachment struct {
	ID          string `json:"id"`
	Filename    string `json:"filename"`
	Description string `json:"description,omitempty"`
	ContentType string `json:"content_type,omitempty"`
	Size        int64  `json:"size"`
	URL         string `json:"url"`
	ProxyURL    string `json:"proxy_url"`
}

type restMessage struct {
	ID              string            `json:"id"`
	ChannelID       string            `json:"channel_id"`
	Author          restUser          `json:"author"`
	Content         string            `json:"content"`
	Timestamp       string            `json:"timestamp"`
	EditedTimestamp *string           `json:"edited_timestamp"`
	TTS             bool              `json:"tts"`
	MentionEveryone bool              `json:"mention_everyone"`
	Mentions        []restUser        `json:"mentions"`
	MentionRoles    []string          `json:"mention_roles"`
	Attachments     []restAttachment  `json:"attachments"`
	Embeds          []json.RawMessage `json:"embeds"`
	Components      []json.RawMessage `json:"components"`
	Pinned          bool              `json:"pinned"`
	Type            int               `json:"type"`
	Flags           int               `json:"flags"`
	Nonce           json.RawMessage   `json:"nonce,omitempty"`
	WebhookID       string            `json:"webhook_id,omitempty"`
	ApplicationID   string            `json:"application_id,omitempty"`
}

func newRESTMessage(id, channel uint64, author restUser) restMessage {
	return restMessage{ID: FormatID(id), ChannelID: FormatID(channel), Author: author, Timestamp: restTimestamp(id),
		Mentions: []restUser{}, MentionRoles: []string{}, Attachments: []restAttachment{},
		Embeds: []json.RawMessage{}, Components: []json.RawMessage{}}
}

type restWebhookObj struct {
	ID            string    `json:"id"`
	Type          int       `json:"type"`
	GuildID       string    `json:"guild_id"`
	ChannelID     string    `json:"channel_id"`
	Name          string    `json:"name"`
	Avatar        *string   `json:"avatar"`
	ApplicationID string    `json:"application_id"`
	Token         string    `json:"token,omitempty"`
	URL           string    `json:"url,omitempty"`
	User          *restUser `json:"user,omitempty"`
}

type restApplication struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	Icon        *string  `json:"icon"`
	Description string   `json:"description"`
	BotPublic   bool     `json:"bot_public"`
	Bot         restUser `json:"bot"`
	Flags       int      `json:"flags"`
}

// restTimestamp is the creation time of a snowflake in Discord's timestamp format.
func restTimestamp(id uint64) string {
	ms := int64(id>>22) + DiscordEpoch
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000000+00:00")
}

// snowflakeAge is how long ago a snowflake was minted (negative for one from the future).
func snowflakeAge(id uint64) time.Duration {
	return time.Duration(time.Now().UnixMilli()-(int64(id>>22)+DiscordEpoch)) * time.Millisecond
}

// formError is Discord's 50035 "Invalid Form Body" with one field error.
func writeFormError(w http.ResponseWriter, field, code, msg string) {
	writeJSON(w, http.StatusBadRequest, map[string]any{
		"code": 50035, "message": "Invalid Form Body",
		"errors": map[string]any{field: map[string]any{"_errors": []map[string]string{{"code": code, "message": msg}}}},
	})
}
