// Package discord holds the vocabulary of Discord's protocol that several dd packages share: gateway
// intents, opcodes and close codes, and the shapes of the gateway commands a bot may send (CheckCommand).
// It connects to nothing.
package discord

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Intent bits, as listed in Discord's gateway documentation.
const (
	IntentGuilds                      = 1 << 0
	IntentGuildMembers                = 1 << 1
	IntentGuildModeration             = 1 << 2
	IntentGuildExpressions            = 1 << 3
	IntentGuildIntegrations           = 1 << 4
	IntentGuildWebhooks               = 1 << 5
	IntentGuildInvites                = 1 << 6
	IntentGuildVoiceStates            = 1 << 7
	IntentGuildPresences              = 1 << 8
	IntentGuildMessages               = 1 << 9
	IntentGuildMessageReactions       = 1 << 10
	IntentGuildMessageTyping          = 1 << 11
	IntentDirectMessages              = 1 << 12
	IntentDirectMessageReactions      = 1 << 13
	IntentDirectMessageTyping         = 1 << 14
	IntentMessageContent              = 1 << 15
	IntentGuildScheduledEvents        = 1 << 16
	IntentAutoModerationConfiguration = 1 << 20
	IntentAutoModerationExecution     = 1 << 21
	IntentGuildMessagePolls           = 1 << 24
	IntentDirectMessagePolls          = 1 << 25

	// IntentsPrivileged must be enabled for the application in the developer portal.
	IntentsPrivileged = IntentGuildMembers | IntentGuildPresences | IntentMessageContent
)

// intentNames maps a normalised name (lower case, no underscores) to its bit. Old names that libraries
// still use are aliases.
var intentNames = map[string]int{
	"guilds":                      IntentGuilds,
	"guildmembers":                IntentGuildMembers,
	"guildmoderation":             IntentGuildModeration,
	"guildbans":                   IntentGuildModeration,
	"guildexpressions":            IntentGuildExpressions,
	"guildemojisandstickers":      IntentGuildExpressions,
	"guildemojis":                 IntentGuildExpressions,
	"guildintegrations":           IntentGuildIntegrations,
	"guildwebhooks":               IntentGuildWebhooks,
	"guildinvites":                IntentGuildInvites,
	"guildvoicestates":            IntentGuildVoiceStates,
	"guildpresences":              IntentGuildPresences,
	"guildmessages":               IntentGuildMessages,
	"guildmessagereactions":       IntentGuildMessageReactions,
	"guildmessagetyping":          IntentGuildMessageTyping,
	"directmessages":              IntentDirectMessages,
	"directmessagereactions":      IntentDirectMessageReactions,
	"directmessagetyping":         IntentDirectMessageTyping,
	"messagecontent":              IntentMessageContent,
	"guildscheduledevents":        IntentGuildScheduledEvents,
	"automoderationconfiguration": IntentAutoModerationConfiguration,
	"automoderationexecution":     IntentAutoModerationExecution,
	"guildmessagepolls":           IntentGuildMessagePolls,
	"directmessagepolls":          IntentDirectMessagePolls,
}

// IntentsAll is every defined intent bit.
var IntentsAll = func() int {
	all := 0
	for _, b := range intentNames {
		all |= b
	}
	return all
}()

// ParseIntent returns the bit of one intent name. Names are matched as in Discord's docs, in either
// spelling: "GuildMessages" or "GUILD_MESSAGES".
func ParseIntent(name string) (int, error) {
	key := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(name), "_", ""))
	if b, ok := intentNames[key]; ok {
		return b, nil
	}
	return 0, fmt.Errorf("unknown intent %q (known: %s)", name, strings.Join(IntentNames(), ", "))
}

// ParseIntents accepts a list of names, or a single decimal integer written as one string.
func ParseIntents(names []string) (int, error) {
	if len(names) == 1 {
		if n, err := strconv.Atoi(strings.TrimSpace(names[0])); err == nil {
			if n < 0 || n&^IntentsAll != 0 {
				return 0, fmt.Errorf("intents %d has bits Discord does not define", n)
			}
			return n, nil
		}
	}
	total := 0
	for _, n := range names {
		b, err := ParseIntent(n)
		if err != nil {
			return 0, err
		}
		total |= b
	}
	return total, nil
}

// IntentNames lists the canonical names in Discord's PascalCase spelling.
func IntentNames() []string {
	canon := []string{"Guilds", "GuildMembers", "GuildModeration", "GuildExpressions", "GuildIntegrations",
		"GuildWebhooks", "GuildInvites", "GuildVoiceStates", "GuildPresences", "GuildMessages",
		"GuildMessageReactions", "GuildMessageTyping", "DirectMessages", "DirectMessageReactions",
		"DirectMessageTyping", "MessageContent", "GuildScheduledEvents", "AutoModerationConfiguration",
		"AutoModerationExecution", "GuildMessagePolls", "DirectMessagePolls"}
	sort.Strings(canon)
	return canon
}
