package cache

import (
	"encoding/json"
	"strings"
	"testing"
)

// Ids that are not snowflakes (too long for 64 bits, zero, signed, not decimal) are refused, never
// stored as something else: a 29-digit guild id used to be stored as 18446744073709551615.
func TestIDsThatAreNotSnowflakesAreRefused(t *testing.T) {
	c, st := newCache(t, Options{})
	for _, bad := range []any{"12345678901234567890123456789", "18446744073709551616", "0", "-5", "+5", "1e5",
		"0123", "12a", "", 12345678901234567890123456789.0, 0, -1, true, map[string]any{}} {
		d := guildCreate(g1, 2, nil)
		d["id"] = bad
		apply(t, c, "GUILD_CREATE", d)
		// The same id in a member's user, a channel and a role: the guild they are in is not stored either.
		for _, where := range []string{"members", "channels", "roles"} {
			d := guildCreate(g1+1, 2, nil)
			switch where {
			case "members":
				m := member(5)
				m["user"].(map[string]any)["id"] = bad
				d["members"] = []any{member(g1 + 1), m}
			case "channels":
				ch := channel(g1+16, "x", 0)
				ch["id"] = bad
				d["channels"] = []any{ch}
			case "roles":
				ro := role(g1+1, "x")
				ro["id"] = bad
				d["roles"] = []any{ro}
			}
			apply(t, c, "GUILD_CREATE", d)
		}
		apply(t, c, "GUILD_MEMBER_ADD", map[string]any{"guild_id": bad, "user": user(9)})
		apply(t, c, "USER_UPDATE", map[string]any{"id": bad, "username": "x"})
	}
	if s := c.Stats(); s != (Stats{}) {
		t.Fatalf("events with ids that are not snowflakes were stored: %+v", s)
	}
	mustNotFound(t, "the largest uint64 as a guild", r(c.Guild(1<<64-1)))
	checkCounters(t, c, st)

	// The largest snowflake there is is still one.
	d := guildCreate(1<<64-1, 0, nil)
	apply(t, c, "GUILD_CREATE", d)
	decode(t, "guild 18446744073709551615", r(c.Guild(1<<64-1)))
}

// A GUILD_CREATE (or any event) that cannot be read whole is applied not at all: neither the guild's
// own record nor the lists read before the bad one change.
func TestMalformedEventIsAppliedWholeOrNotAtAll(t *testing.T) {
	c, st := newCache(t, Options{Presences: true})
	apply(t, c, "GUILD_CREATE", guildCreate(g1, 3, map[string]any{"name": "before",
		"channels": []any{channel(g1+16, "general", 0)}, "roles": []any{role(g1, "@everyone"), role(g1+1, "mods")}}))
	before := c.Stats()
	snapshot := func() string {
		var b strings.Builder
		for _, res := range []result{r(c.Guild(g1)), r(c.GuildChannels(g1)), r(c.GuildRoles(g1)), r(c.GuildMembers(g1, 0, 100))} {
			b.Write(res.b)
		}
		return b.String()
	}
	was := snapshot()

	withMembers := func(ms ...any) map[string]any { return map[string]any{"members": ms} }
	badMember := member(g1 + 9)
	delete(badMember, "user")
	for name, extra := range map[string]map[string]any{
		"channels is a number":          {"channels": 5},
		"a channel is a string":         {"channels": []any{channel(g1+20, "new", 0), "oops"}},
		"threads is an object":          {"threads": map[string]any{"id": "1"}},
		"a member without a user":       withMembers(member(g1+7), badMember),
		"a voice state without user_id": {"voice_states": []any{map[string]any{"channel_id": id(g1 + 16)}}},
		"a presence without user":       {"presences": []any{map[string]any{"status": "online"}}},
		"an emoji with a bad id":        {"emojis": []any{map[string]any{"id": "x1", "name": "e"}}},
	} {
		extra["name"] = "after"
		extra["roles"] = []any{role(g1, "@everyone")} // would remove "mods", before the bad list is reached
		apply(t, c, "GUILD_CREATE", guildCreate(g1, 5, extra))
		if now := snapshot(); now != was {
			t.Errorf("%s: the bad GUILD_CREATE changed the cache:\nbefore %s\nafter  %s", name, was, now)
		}
		if s := c.Stats(); s != before {
			t.Errorf("%s: stats %+v, want %+v", name, s, before)
		}
	}
	// Nor is a new guild stored in part.
	apply(t, c, "GUILD_CREATE", guildCreate(g1+1, 5, map[string]any{"channels": 5}))
	mustNotFound(t, "a guild whose GUILD_CREATE was malformed", r(c.Guild(g1+1)))
	if s := c.Stats(); s != before {
		t.Errorf("stats %+v after a malformed new guild, want %+v", s, before)
	}
	checkCounters(t, c, st)

	// Other events, too: a chunk with one bad member adds none of them.
	chunk := map[string]any{"guild_id": id(g1), "members": []any{member(g1 + 100), map[string]any{"user": user(0)}}}
	apply(t, c, "GUILD_MEMBERS_CHUNK", chunk)
	mustNotFound(t, "the good member of a bad chunk", r(c.Member(g1, g1+100)))
	// And a well-formed one after them is applied.
	apply(t, c, "GUILD_CREATE", guildCreate(g1, 5, map[string]any{"name": "after"}))
	if g := decode(t, "guild", r(c.Guild(g1))); g["name"] != "after" {
		t.Fatalf("the good GUILD_CREATE after bad ones: %v", g)
	}
	checkCounters(t, c, st)
}

// Every event the cache applies has a shape to be checked against, and the shapes accept what Discord
// (here the tests' Discord-shaped objects) sends.
func TestEveryHandledEventHasAShape(t *testing.T) {
	shapes := eventShapes(Options{Presences: true, MessagesPerChannel: 1})
	for name := range handlers {
		if shapes[name] == nil {
			t.Errorf("%s has a handler but no shape: it would be applied unchecked", name)
		}
	}
	d, _ := json.Marshal(guildCreate(g1, 3, map[string]any{"threads": []any{thread(g1+18, g1+16, "t")},
		"voice_states": []any{map[string]any{"user_id": id(g1 + 1), "channel_id": id(g1 + 17), "member": member(g1 + 1)}}}))
	if err := shapes["GUILD_CREATE"].check(d, "d"); err != nil {
		t.Fatalf("a well-formed GUILD_CREATE refused: %v", err)
	}
}
