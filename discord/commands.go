package discord

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// CheckCommand says why {op, d} is not a gateway command a bot may send, or returns nil. A bot may send
// Presence Update (3), Voice State Update (4), Request Guild Members (8) and Request Soundboard Sounds
// (31), each with d of the shape Discord documents (gateway-events, "Send Events"): anything else makes
// Discord close the connection (4001 unknown opcode, 4002 decode error), which would cost every bot of the
// shard its connection. Identify, Resume and Heartbeat are the connection's own and never the bot's.
// Fields Discord does not document are let through (Discord ignores them); d itself is not rewritten.
func CheckCommand(op int, d json.RawMessage) error {
	switch op {
	case OpPresenceUpdate:
		return checkFields(d, "presence update (op 3)", []field{
			{"since", true, isNullOr(isUint)}, {"activities", true, isActivities},
			{"status", true, isOneOf("online", "dnd", "idle", "invisible", "offline")}, {"afk", true, isBool}})
	case OpVoiceStateUpdate:
		return checkFields(d, "voice state update (op 4)", []field{
			{"guild_id", true, isSnowflake}, {"channel_id", true, isNullOr(isSnowflake)},
			{"self_mute", true, isBool}, {"self_deaf", true, isBool}})
	case OpRequestGuildMembers:
		what := "request guild members (op 8)"
		if err := checkFields(d, what, []field{
			{"guild_id", true, isSnowflake}, {"query", false, isString}, {"limit", false, isUint},
			{"presences", false, isBool}, {"user_ids", false, isSnowflakeOrList}, {"nonce", false, isString}}); err != nil {
			return err
		}
		var m map[string]json.RawMessage
		_ = json.Unmarshal(d, &m)
		_, query := m["query"]
		_, users := m["user_ids"]
		_, limit := m["limit"]
		switch {
		case !query && !users:
			return fmt.Errorf("%s: d needs query (with limit) or user_ids", what)
		case query && !limit:
			return fmt.Errorf("%s: d.limit is required with d.query (0 with an empty query for every member)", what)
		}
		return nil
	case OpRequestSoundboard:
		return checkFields(d, "request soundboard sounds (op 31)", []field{{"guild_ids", true, isSnowflakeList}})
	case OpIdentify, OpResume, OpHeartbeat:
		return fmt.Errorf("op %d is dd's to send, not the bot's", op)
	}
	return fmt.Errorf("op %d is not a gateway command a bot may send (3 presence update, 4 voice state update, 8 request guild members, 31 request soundboard sounds)", op)
}

type field struct {
	name     string
	required bool
	ok       func(json.RawMessage) string // "" when the value fits, else what it must be
}

func checkFields(d json.RawMessage, what string, fields []field) error {
	var m map[string]json.RawMessage
	if len(bytes.TrimSpace(d)) == 0 || bytes.TrimSpace(d)[0] != '{' || json.Unmarshal(d, &m) != nil {
		return fmt.Errorf("%s: d must be an object", what)
	}
	for _, f := range fields {
		v, ok := m[f.name]
		if !ok {
			if f.required {
				return fmt.Errorf("%s: d.%s is required", what, f.name)
			}
			continue
		}
		if want := f.ok(v); want != "" {
			return fmt.Errorf("%s: d.%s must be %s, got %s", what, f.name, want, short(v))
		}
	}
	return nil
}

func short(v json.RawMessage) string {
	if len(v) > 40 {
		return string(v[:40]) + "..."
	}
	return string(v)
}

func isBool(v json.RawMessage) string {
	if s := string(v); s == "true" || s == "false" {
		return ""
	}
	return "true or false"
}

func isString(v json.RawMessage) string {
	var s string
	if json.Unmarshal(v, &s) != nil {
		return "a string"
	}
	return ""
}

func isUint(v json.RawMessage) string {
	if _, err := strconv.ParseUint(string(v), 10, 64); err != nil {
		return "a non-negative integer"
	}
	return ""
}

func isNullOr(ok func(json.RawMessage) string) func(json.RawMessage) string {
	return func(v json.RawMessage) string {
		if string(v) == "null" {
			return ""
		}
		if want := ok(v); want != "" {
			return want + " or null"
		}
		return ""
	}
}

func isOneOf(vals ...string) func(json.RawMessage) string {
	return func(v json.RawMessage) string {
		var s string
		if json.Unmarshal(v, &s) == nil {
			for _, x := range vals {
				if s == x {
					return ""
				}
			}
		}
		return fmt.Sprintf("one of %q", vals)
	}
}

// isSnowflake accepts an id as Discord sends it (a string of digits) or as a JSON number.
func isSnowflake(v json.RawMessage) string {
	var s string
	if json.Unmarshal(v, &s) != nil {
		s = string(v)
	}
	if _, err := strconv.ParseUint(s, 10, 64); err != nil {
		return "a snowflake"
	}
	return ""
}

func isSnowflakeList(v json.RawMessage) string {
	var list []json.RawMessage
	if json.Unmarshal(v, &list) != nil {
		return "an array of snowflakes"
	}
	for _, x := range list {
		if isSnowflake(x) != "" {
			return "an array of snowflakes"
		}
	}
	return ""
}

func isSnowflakeOrList(v json.RawMessage) string {
	if isSnowflake(v) == "" || isSnowflakeList(v) == "" {
		return ""
	}
	return "a snowflake or an array of snowflakes"
}

// isActivities checks a presence's activities: objects with a name and an integer type at least.
func isActivities(v json.RawMessage) string {
	const want = `an array of activities ({"name": string, "type": integer, ...})`
	var list []map[string]json.RawMessage
	if json.Unmarshal(v, &list) != nil {
		return want
	}
	for _, a := range list {
		if a == nil || isString(a["name"]) != "" || isUint(a["type"]) != "" {
			return want
		}
	}
	return ""
}
