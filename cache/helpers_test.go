package cache

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"testing"

	"github.com/ddhq/dd/store"
)

func openStore(t testing.TB, dir string) *store.Store {
	t.Helper()
	st, err := store.Open(store.Options{Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// newCache opens a cache on a fresh store in a temporary directory.
func newCache(t testing.TB, o Options) (*Cache, *store.Store) {
	t.Helper()
	st := openStore(t, t.TempDir())
	t.Cleanup(func() { st.Close() })
	c, err := Open(st, o)
	if err != nil {
		t.Fatal(err)
	}
	return c, st
}

// payload builds a gateway dispatch payload.
func payload(name string, seq int, d any) []byte {
	b, err := json.Marshal(map[string]any{"op": 0, "t": name, "s": seq, "d": d})
	if err != nil {
		panic(err)
	}
	return b
}

// apply applies events given as name, d pairs.
func apply(t testing.TB, c *Cache, evs ...any) {
	t.Helper()
	var ps [][]byte
	for i := 0; i < len(evs); i += 2 {
		ps = append(ps, payload(evs[i].(string), i, evs[i+1]))
	}
	if err := c.Apply(ps...); err != nil {
		t.Fatal(err)
	}
}

func id(n uint64) string { return strconv.FormatUint(n, 10) }

// Discord-shaped objects, as the gateway sends them (the simulator's shapes, with the fields a real
// guild has that the simulator leaves empty).

func user(uid uint64) map[string]any {
	return map[string]any{"id": id(uid), "username": "user-" + id(uid), "discriminator": "0", "global_name": nil,
		"avatar": nil, "public_flags": 0}
}

func member(uid uint64) map[string]any {
	return map[string]any{"user": user(uid), "nick": nil, "avatar": nil, "roles": []string{},
		"joined_at": "2020-09-13T12:26:40.000000+00:00", "premium_since": nil, "deaf": false, "mute": false,
		"flags": 0, "pending": false, "communication_disabled_until": nil}
}

func channel(cid uint64, name string, typ int) map[string]any {
	return map[string]any{"id": id(cid), "type": typ, "name": name, "position": 0, "permission_overwrites": []any{},
		"topic": nil, "nsfw": false, "last_message_id": nil, "rate_limit_per_user": 0, "parent_id": nil, "flags": 0}
}

func thread(tid, parent uint64, name string) map[string]any {
	c := channel(tid, name, 11)
	c["parent_id"] = id(parent)
	c["owner_id"] = "1"
	c["thread_metadata"] = map[string]any{"archived": false, "auto_archive_duration": 1440, "locked": false}
	return c
}

func role(rid uint64, name string) map[string]any {
	return map[string]any{"id": id(rid), "name": name, "color": 0, "hoist": false, "icon": nil, "unicode_emoji": nil,
		"position": 0, "permissions": "0", "managed": false, "mentionable": false, "flags": 0}
}

func emoji(eid uint64, name string) map[string]any {
	return map[string]any{"id": id(eid), "name": name, "roles": []string{}, "require_colons": true, "managed": false,
		"animated": false, "available": true, "user": user(99)}
}

func sticker(sid, g uint64, name string) map[string]any {
	return map[string]any{"id": id(sid), "name": name, "description": nil, "tags": "x", "type": 2, "format_type": 1,
		"available": true, "guild_id": id(g)}
}

// guildCreate builds a GUILD_CREATE d with members users base+0..n-1.
func guildCreate(g uint64, members int, extra map[string]any) map[string]any {
	ms := make([]any, members)
	for i := range ms {
		ms[i] = member(g + uint64(i)*4096 + 1)
	}
	d := map[string]any{"id": id(g), "name": "guild-" + id(g), "icon": nil, "splash": nil, "discovery_splash": nil,
		"owner_id": id(g + 1), "afk_channel_id": nil, "afk_timeout": 300, "verification_level": 0,
		"default_message_notifications": 0, "explicit_content_filter": 0, "roles": []any{role(g, "@everyone")},
		"emojis": []any{}, "features": []string{}, "mfa_level": 0, "application_id": nil, "system_channel_id": nil,
		"system_channel_flags": 0, "rules_channel_id": nil, "max_members": 500000, "vanity_url_code": nil,
		"description": nil, "banner": nil, "premium_tier": 0, "premium_subscription_count": 0,
		"preferred_locale": "en-US", "public_updates_channel_id": nil, "nsfw_level": 0, "stickers": []any{},
		"premium_progress_bar_enabled": false, "safety_alerts_channel_id": nil,
		"joined_at": "2020-09-13T12:26:40.000000+00:00", "large": members > 50, "unavailable": false,
		"member_count": members, "voice_states": []any{}, "members": ms,
		"channels": []any{channel(g+16, "general", 0)}, "threads": []any{}, "presences": []any{},
		"stage_instances": []any{}, "guild_scheduled_events": []any{}, "soundboard_sounds": []any{}, "lazy": true}
	for k, v := range extra {
		d[k] = v
	}
	return d
}

// result is a read's two results, so that one call can hand them on: decode(t, "guild", r(c.Guild(id))).
type result struct {
	b   []byte
	err error
}

func r(b []byte, err error) result { return result{b, err} }

// decode unmarshals a read's JSON, failing the test on an error.
func decode(t testing.TB, what string, res result) map[string]any {
	t.Helper()
	b, err := res.b, res.err
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: not a JSON object: %v: %s", what, err, b)
	}
	return m
}

func decodeList(t testing.TB, what string, res result) []map[string]any {
	t.Helper()
	b, err := res.b, res.err
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	var m []map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: not a JSON array of objects: %v: %s", what, err, b)
	}
	return m
}

func mustNotFound(t testing.TB, what string, res result) {
	t.Helper()
	if !errors.Is(res.err, ErrNotFound) {
		t.Fatalf("%s: want ErrNotFound, got %v (%s)", what, res.err, res.b)
	}
}

// countAll counts the cache's keys by kind by scanning, to check the counters against.
func countAll(t testing.TB, st *store.Store) Stats {
	t.Helper()
	var s Stats
	err := st.Scan([]byte("c/"), nil, func(k, v []byte) error {
		switch {
		case len(k) == guildKeyLen && bytes.HasPrefix(k, []byte(guildPrefix)):
			s.Guilds++
			if v[0] == stateUnavailable {
				s.UnavailableGuilds++
			}
		case len(k) >= subKeyLen && bytes.HasPrefix(k, []byte(guildPrefix)):
			switch k[guildKeyLen] {
			case kindChannel:
				s.Channels++
			case kindThread:
				s.Threads++
			case kindRole:
				s.Roles++
			case kindMember:
				s.Members++
			case kindEmoji:
				s.Emojis++
			case kindSticker:
				s.Stickers++
			case kindVoiceState:
				s.VoiceStates++
			case kindPresence:
				s.Presences++
			case kindMessage:
				s.Messages++
			default:
				return fmt.Errorf("unknown kind in key %q", k)
			}
		case bytes.HasPrefix(k, []byte(userPrefix)):
			s.Users++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func checkCounters(t testing.TB, c *Cache, st *store.Store) {
	t.Helper()
	if got, want := c.Stats(), countAll(t, st); got != want {
		t.Fatalf("counters drifted from the store:\n got %+v\nwant %+v", got, want)
	}
}
