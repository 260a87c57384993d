package discord

import "fmt"

// Gateway opcodes.
const (
	OpDispatch            = 0
	OpHeartbeat           = 1
	OpIdentify            = 2
	OpPresenceUpdate      = 3
	OpVoiceStateUpdate    = 4
	OpResume              = 6
	OpReconnect           = 7
	OpRequestGuildMembers = 8
	OpInvalidSession      = 9
	OpHello               = 10
	OpHeartbeatAck        = 11
	OpRequestSoundboard   = 31
)

// CloseAction is what a client must do after the gateway closed with a code.
type CloseAction int

const (
	// CloseResume: reconnect and resume the session.
	CloseResume CloseAction = iota
	// CloseNewSession: reconnect and identify anew (the session is gone).
	CloseNewSession
	// CloseFatal: do not reconnect; the configuration (token, intents, shards, version) is wrong.
	CloseFatal
)

// CloseCode describes one gateway close code.
type CloseCode struct {
	Code   int
	Name   string
	Action CloseAction
	// Hint says what an operator should do about a fatal code.
	Hint string
}

// closeCodes is Discord's table of gateway close codes, with the action each requires.
var closeCodes = map[int]CloseCode{
	4000: {4000, "unknown error", CloseResume, ""},
	4001: {4001, "unknown opcode", CloseResume, ""},
	4002: {4002, "decode error", CloseResume, ""},
	4003: {4003, "not authenticated", CloseResume, ""},
	4004: {4004, "authentication failed", CloseFatal,
		"the bot token is wrong or was reset: set discord.token to the token from the developer portal"},
	4005: {4005, "already authenticated", CloseResume, ""},
	4007: {4007, "invalid seq", CloseNewSession, ""},
	4008: {4008, "rate limited", CloseResume, ""},
	4009: {4009, "session timed out", CloseNewSession, ""},
	4010: {4010, "invalid shard", CloseFatal,
		"the shard id is not below the shard count: check gateway.total_shards, first_shard and last_shard"},
	4011: {4011, "sharding required", CloseFatal,
		"a shard would hold more than 2500 guilds: raise gateway.total_shards (or set it to 0 for Discord's recommendation)"},
	4012: {4012, "invalid API version", CloseFatal, "set discord.api_version to 10"},
	4013: {4013, "invalid intents", CloseFatal, "gateway.intents holds a value Discord does not accept"},
	4014: {4014, "disallowed intents", CloseFatal,
		"gateway.intents asks for a privileged intent (GuildMembers, GuildPresences, MessageContent) that is not enabled for the application: enable it in the developer portal (Bot > Privileged Gateway Intents) or remove it"},
	// A server that closes with 1000 or 1001 has ended the session, as a client closing with them does.
	1000: {1000, "normal closure", CloseNewSession, ""},
	1001: {1001, "going away", CloseNewSession, ""},
}

// LookupCloseCode describes code. Codes Discord does not list (other websocket codes, and a dropped
// connection) mean: reconnect and resume.
func LookupCloseCode(code int) CloseCode {
	if c, ok := closeCodes[code]; ok {
		return c
	}
	return CloseCode{Code: code, Name: fmt.Sprintf("close %d", code), Action: CloseResume}
}

// ResumableCloseCode is what dd closes with when it wants to keep the session resumable (anything but
// 1000 and 1001 does; 4000 is what Discord's docs suggest for "reconnecting").
const ResumableCloseCode = 4000

// MaxSendBytes is the largest payload a client may send on the gateway.
const MaxSendBytes = 4096

// MaxGuildsPerShard is the most guilds Discord lets one shard hold (past it IDENTIFY closes with 4011).
const MaxGuildsPerShard = 2500

// ShardForGuild is the shard of a bot with total shards that receives a guild's events:
// (guild_id >> 22) % total. DMs go to shard 0.
func ShardForGuild(guildID uint64, total int) int {
	return int((guildID >> 22) % uint64(total))
}

// UserAgent is what dd sends on every REST call and websocket dial, in the form Discord requires.
const UserAgent = "DiscordBot (https://github.com/ddhq/dd, 0.1)"
