package cache

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

const g1 = uint64(1 << 40) // a guild id; its objects' ids are derived from it

func TestEveryEventKindIsAppliedAndReadBack(t *testing.T) {
	c, st := newCache(t, Options{Presences: true, MessagesPerChannel: 10})
	bot := uint64(7)
	text, voice, th := g1+16, g1+17, g1+18
	u1, u2 := g1+1, g1+4097
	apply(t, c,
		"READY", map[string]any{"v": 10, "user": user(bot), "guilds": []any{map[string]any{"id": id(g1), "unavailable": true}},
			"session_id": "s", "shard": []int{0, 1}},
	)
	if g := decode(t, "guild after READY", r(c.Guild(g1))); g["unavailable"] != true {
		t.Fatalf("READY's guild is not a stub marked unavailable: %v", g)
	}
	decode(t, "bot user after READY", r(c.User(bot)))

	gc := guildCreate(g1, 2, map[string]any{
		"channels": []any{channel(text, "general", 0), channel(voice, "voice", 2)},
		"threads":  []any{thread(th, text, "a thread")},
		"roles":    []any{role(g1, "@everyone"), role(g1+1, "mods")},
		"emojis":   []any{emoji(g1+30, "smile")},
		"stickers": []any{sticker(g1+40, g1, "wave")},
		"voice_states": []any{map[string]any{"user_id": id(u1), "channel_id": id(voice), "session_id": "vs",
			"deaf": false, "mute": false, "self_deaf": false, "self_mute": true, "self_video": false, "suppress": false,
			"request_to_speak_timestamp": nil}},
		"presences": []any{map[string]any{"user": map[string]any{"id": id(u1)}, "status": "online",
			"activities": []any{}, "client_status": map[string]any{"desktop": "online"}}},
	})
	apply(t, c, "GUILD_CREATE", gc)

	g := decode(t, "guild", r(c.Guild(g1)))
	if g["id"] != id(g1) || g["name"] != "guild-"+id(g1) || g["unavailable"] != nil || g["member_count"] != 2.0 {
		t.Errorf("guild = %v", g)
	}
	if roles := g["roles"].([]any); len(roles) != 2 || len(g["emojis"].([]any)) != 1 || len(g["stickers"].([]any)) != 1 {
		t.Errorf("guild's roles, emojis, stickers = %v %v %v", g["roles"], g["emojis"], g["stickers"])
	}
	if _, ok := g["members"]; ok {
		t.Errorf("guild carries its members: %v", g)
	}
	chans := decodeList(t, "channels", r(c.GuildChannels(g1)))
	if len(chans) != 2 || chans[0]["id"] != id(text) || chans[0]["guild_id"] != id(g1) || chans[1]["type"] != 2.0 {
		t.Errorf("channels (threads excluded, guild_id added) = %v", chans)
	}
	tc := decode(t, "thread", r(c.Channel(th)))
	if tc["parent_id"] != id(text) || tc["guild_id"] != id(g1) || tc["type"] != 11.0 {
		t.Errorf("thread = %v", tc)
	}
	m := decode(t, "member", r(c.Member(g1, u1)))
	if mu := m["user"].(map[string]any); mu["id"] != id(u1) || mu["username"] != "user-"+id(u1) || m["joined_at"] == nil {
		t.Errorf("member = %v", m)
	}
	if _, ok := m["nick"]; ok {
		t.Errorf("member keeps an optional null field: %v", m)
	}
	if u := decode(t, "user", r(c.User(u1))); u["global_name"] != nil || !hasKey(u, "global_name") || !hasKey(u, "avatar") {
		t.Errorf("user lost Discord's nullable fields: %v", u)
	}
	if vs := decode(t, "voice state", r(c.VoiceState(g1, u1))); vs["channel_id"] != id(voice) || vs["self_mute"] != true || vs["guild_id"] != id(g1) {
		t.Errorf("voice state = %v", vs)
	}
	if p := decode(t, "presence", r(c.Presence(g1, u1))); p["status"] != "online" {
		t.Errorf("presence = %v", p)
	}
	checkCounters(t, c, st)

	// Updates.
	upd := map[string]any{"id": id(g1), "name": "renamed", "icon": "abc", "roles": []any{role(g1, "@everyone")},
		"emojis": []any{emoji(g1+30, "smile"), emoji(g1+31, "frown")}}
	newRole := role(g1+2, "new")
	ch2 := channel(g1+19, "second", 0)
	ch2["guild_id"] = id(g1)
	th2 := thread(g1+20, text, "thread 2")
	th2["guild_id"] = id(g1)
	renamed := channel(text, "renamed", 0)
	renamed["guild_id"] = id(g1)
	mu := member(u1)
	mu["guild_id"], mu["nick"] = id(g1), "nick-1"
	mu["user"].(map[string]any)["username"] = "new-name"
	delete(mu, "deaf")
	added := member(g1 + 3*4096 + 1)
	added["guild_id"] = id(g1)
	apply(t, c,
		"GUILD_UPDATE", upd,
		"GUILD_ROLE_CREATE", map[string]any{"guild_id": id(g1), "role": newRole},
		"GUILD_ROLE_UPDATE", map[string]any{"guild_id": id(g1), "role": role(g1+2, "newer")},
		"GUILD_ROLE_DELETE", map[string]any{"guild_id": id(g1), "role_id": id(g1 + 1)}, // gone already: GUILD_UPDATE listed roles
		"CHANNEL_CREATE", ch2,
		"CHANNEL_UPDATE", renamed,
		"THREAD_CREATE", th2,
		"GUILD_MEMBER_UPDATE", mu,
		"GUILD_MEMBER_ADD", added,
		"GUILD_MEMBERS_CHUNK", map[string]any{"guild_id": id(g1), "members": []any{member(g1 + 4*4096 + 1)},
			"chunk_index": 0, "chunk_count": 1, "presences": []any{map[string]any{"user": map[string]any{"id": id(g1 + 4*4096 + 1)},
				"status": "idle", "activities": []any{}, "client_status": map[string]any{}}}},
		"GUILD_STICKERS_UPDATE", map[string]any{"guild_id": id(g1), "stickers": []any{}},
		"USER_UPDATE", map[string]any{"id": id(bot), "username": "bot-renamed", "discriminator": "0", "global_name": nil, "avatar": nil, "bot": true},
		"VOICE_STATE_UPDATE", map[string]any{"guild_id": id(g1), "user_id": id(u2), "channel_id": id(voice), "session_id": "x",
			"deaf": false, "mute": false, "self_deaf": true, "self_mute": false, "self_video": false, "suppress": false, "member": member(u2)},
		"VOICE_STATE_UPDATE", map[string]any{"guild_id": id(g1), "user_id": id(u1), "channel_id": nil, "session_id": "vs"},
		"PRESENCE_UPDATE", map[string]any{"guild_id": id(g1), "user": map[string]any{"id": id(u2), "avatar": "newavatar"},
			"status": "dnd", "activities": []any{}, "client_status": map[string]any{"mobile": "dnd"}},
		"PRESENCE_UPDATE", map[string]any{"guild_id": id(g1), "user": map[string]any{"id": id(u1)}, "status": "offline",
			"activities": []any{}, "client_status": map[string]any{}},
	)
	g = decode(t, "guild after GUILD_UPDATE", r(c.Guild(g1)))
	if g["name"] != "renamed" || g["icon"] != "abc" || g["joined_at"] == nil || g["member_count"] != 3.0 {
		t.Errorf("GUILD_UPDATE must change name and icon, keep joined_at, and GUILD_MEMBER_ADD count one more: %v", g)
	}
	if names := names(g["roles"]); !reflect.DeepEqual(names, []string{"@everyone", "newer"}) {
		t.Errorf("roles = %v", names)
	}
	if names := names(g["emojis"]); !reflect.DeepEqual(names, []string{"smile", "frown"}) {
		t.Errorf("emojis = %v", names)
	}
	if len(g["stickers"].([]any)) != 0 {
		t.Errorf("GUILD_STICKERS_UPDATE with none left stickers: %v", g["stickers"])
	}
	if ch := decode(t, "channel", r(c.Channel(text))); ch["name"] != "renamed" {
		t.Errorf("CHANNEL_UPDATE: %v", ch)
	}
	decode(t, "created channel", r(c.Channel(g1+19)))
	if ts := decodeList(t, "threads", r(c.GuildThreads(g1))); len(ts) != 2 {
		t.Errorf("threads = %v", ts)
	}
	m = decode(t, "updated member", r(c.Member(g1, u1)))
	if m["nick"] != "nick-1" || m["user"].(map[string]any)["username"] != "new-name" || m["joined_at"] == nil {
		t.Errorf("GUILD_MEMBER_UPDATE: %v", m)
	}
	decode(t, "added member", r(c.Member(g1, g1+3*4096+1)))
	decode(t, "chunked member", r(c.Member(g1, g1+4*4096+1)))
	decode(t, "voice state's member", r(c.Member(g1, u2)))
	if u := decode(t, "bot user", r(c.User(bot))); u["username"] != "bot-renamed" || u["bot"] != true {
		t.Errorf("USER_UPDATE: %v", u)
	}
	if vs := decode(t, "voice state", r(c.VoiceState(g1, u2))); vs["self_deaf"] != true {
		t.Errorf("VOICE_STATE_UPDATE: %v", vs)
	}
	mustNotFound(t, "voice state after leaving", r(c.VoiceState(g1, u1)))
	if u := decode(t, "user patched by a presence", r(c.User(u2))); u["avatar"] != "newavatar" || u["username"] != "user-"+id(u2) {
		t.Errorf("PRESENCE_UPDATE's partial user: %v", u)
	}
	mustNotFound(t, "offline presence", r(c.Presence(g1, u1)))
	if p := decode(t, "chunk presence", r(c.Presence(g1, g1+4*4096+1))); p["status"] != "idle" {
		t.Errorf("GUILD_MEMBERS_CHUNK presence: %v", p)
	}
	checkCounters(t, c, st)

	// Messages, bounded per channel.
	for i := 1; i <= 12; i++ {
		apply(t, c, "MESSAGE_CREATE", message(uint64(1000+i), text, g1, u1, fmt.Sprint("hello ", i)))
	}
	mustNotFound(t, "message trimmed away", r(c.Message(text, 1001)))
	mustNotFound(t, "message trimmed away", r(c.Message(text, 1002)))
	if msg := decode(t, "message", r(c.Message(text, 1012))); msg["content"] != "hello 12" || msg["channel_id"] != id(text) ||
		msg["author"].(map[string]any)["id"] != id(u1) {
		t.Errorf("message = %v", msg)
	}
	apply(t, c,
		"MESSAGE_UPDATE", map[string]any{"id": "1012", "channel_id": id(text), "guild_id": id(g1), "content": "edited",
			"edited_timestamp": "2024-01-01T00:00:00.000000+00:00"},
		"MESSAGE_DELETE", map[string]any{"id": "1011", "channel_id": id(text), "guild_id": id(g1)},
		"MESSAGE_DELETE_BULK", map[string]any{"ids": []string{"1009", "1010"}, "channel_id": id(text), "guild_id": id(g1)},
	)
	if msg := decode(t, "edited message", r(c.Message(text, 1012))); msg["content"] != "edited" || msg["author"] == nil {
		t.Errorf("MESSAGE_UPDATE: %v", msg)
	}
	for _, gone := range []uint64{1009, 1010, 1011} {
		mustNotFound(t, "deleted message", r(c.Message(text, gone)))
	}
	if n := c.Stats().Messages; n != 7 {
		t.Errorf("messages = %d, want 7 (10 kept, 3 deleted)", n)
	}
	checkCounters(t, c, st)

	// Deletions.
	rm := map[string]any{"guild_id": id(g1), "user": user(g1 + 3*4096 + 1)}
	apply(t, c,
		"THREAD_LIST_SYNC", map[string]any{"guild_id": id(g1), "channel_ids": []string{id(text)}, "threads": []any{thread(g1+21, text, "synced")}, "members": []any{}},
		"THREAD_DELETE", map[string]any{"id": id(g1 + 21), "guild_id": id(g1), "parent_id": id(text), "type": 11},
		"GUILD_MEMBER_REMOVE", rm,
		"GUILD_EMOJIS_UPDATE", map[string]any{"guild_id": id(g1), "emojis": []any{emoji(g1+31, "frown")}},
	)
	for _, gone := range []uint64{th, g1 + 20, g1 + 21} {
		mustNotFound(t, "thread replaced by THREAD_LIST_SYNC or deleted", r(c.Channel(gone)))
	}
	mustNotFound(t, "removed member", r(c.Member(g1, g1+3*4096+1)))
	decode(t, "a removed member's user stays", r(c.User(g1+3*4096+1)))
	if g := decode(t, "guild", r(c.Guild(g1))); g["member_count"] != 2.0 || !reflect.DeepEqual(names(g["emojis"]), []string{"frown"}) {
		t.Errorf("after GUILD_MEMBER_REMOVE and GUILD_EMOJIS_UPDATE: %v", g)
	}
	apply(t, c, "CHANNEL_DELETE", map[string]any{"id": id(text), "guild_id": id(g1), "type": 0})
	mustNotFound(t, "deleted channel", r(c.Channel(text)))
	mustNotFound(t, "a deleted channel's messages", r(c.Message(text, 1012)))
	if n := c.Stats().Messages; n != 0 {
		t.Errorf("messages after their channel went: %d", n)
	}
	checkCounters(t, c, st)
}

func message(mid, ch, g, author uint64, content string) map[string]any {
	return map[string]any{"id": id(mid), "type": 0, "channel_id": id(ch), "guild_id": id(g), "author": user(author),
		"member":  map[string]any{"roles": []string{}, "joined_at": "2020-09-13T12:26:40.000000+00:00"},
		"content": content, "timestamp": "2024-01-01T00:00:00.000000+00:00", "edited_timestamp": nil, "tts": false,
		"mention_everyone": false, "mentions": []any{}, "mention_roles": []any{}, "attachments": []any{}, "embeds": []any{},
		"pinned": false, "flags": 0, "components": []any{}}
}

func names(list any) []string {
	var out []string
	for _, o := range list.([]any) {
		out = append(out, o.(map[string]any)["name"].(string))
	}
	return out
}

func hasKey(m map[string]any, k string) bool { _, ok := m[k]; return ok }

func TestGuildDeleteRemovesEverythingUnderIt(t *testing.T) {
	c, st := newCache(t, Options{Presences: true, MessagesPerChannel: 5})
	g2 := g1 + 1<<22
	for _, g := range []uint64{g1, g2} {
		apply(t, c, "GUILD_CREATE", guildCreate(g, 20, map[string]any{
			"threads":  []any{thread(g+18, g+16, "t")},
			"emojis":   []any{emoji(g+30, "e")},
			"stickers": []any{sticker(g+40, g, "s")},
		}), "MESSAGE_CREATE", message(5, g+16, g, g+1, "hi"))
	}
	apply(t, c, "GUILD_DELETE", map[string]any{"id": id(g1)})
	mustNotFound(t, "removed guild", r(c.Guild(g1)))
	mustNotFound(t, "its channel", r(c.Channel(g1+16)))
	mustNotFound(t, "its thread", r(c.Channel(g1+18)))
	mustNotFound(t, "its member", r(c.Member(g1, g1+1)))
	mustNotFound(t, "its members list", r(c.GuildMembers(g1, 0, 10)))
	mustNotFound(t, "its message", r(c.Message(g1+16, 5)))
	decode(t, "the other guild", r(c.Guild(g2)))
	decode(t, "the other guild's member", r(c.Member(g2, g2+1)))
	if s := c.Stats(); s.Guilds != 1 || s.Members != 20 || s.Channels != 1 || s.Threads != 1 || s.Emojis != 1 || s.Messages != 1 {
		t.Errorf("stats after removing one of two guilds: %+v", s)
	}
	checkCounters(t, c, st)
	n := 0
	_ = st.Scan(guildKey(g1), nil, func(k, v []byte) error { n++; return nil })
	if n != 0 {
		t.Errorf("%d keys left in the removed guild's range", n)
	}
}

func TestOutageKeepsTheGuildMarkedUnavailable(t *testing.T) {
	c, st := newCache(t, Options{})
	apply(t, c, "GUILD_CREATE", guildCreate(g1, 5, nil))
	apply(t, c, "GUILD_DELETE", map[string]any{"id": id(g1), "unavailable": true})
	g := decode(t, "guild in an outage", r(c.Guild(g1)))
	if g["unavailable"] != true || g["name"] != "guild-"+id(g1) {
		t.Errorf("guild in an outage must keep its data and say unavailable: %v", g)
	}
	if ms := decodeList(t, "members in an outage", r(c.GuildMembers(g1, 0, 10))); len(ms) != 5 {
		t.Errorf("members kept through an outage: %d, want 5", len(ms))
	}
	if s := c.Stats(); s.UnavailableGuilds != 1 || s.Guilds != 1 {
		t.Errorf("stats in an outage: %+v", s)
	}
	apply(t, c, "GUILD_CREATE", guildCreate(g1, 5, nil))
	if g := decode(t, "guild back", r(c.Guild(g1))); g["unavailable"] != nil {
		t.Errorf("guild back from the outage still unavailable: %v", g)
	}
	if s := c.Stats(); s.UnavailableGuilds != 0 || s.Guilds != 1 || s.Members != 5 {
		t.Errorf("stats after the outage: %+v", s)
	}
	checkCounters(t, c, st)
}

func TestGuildCreateReplacesCompleteListsAndKeepsMembers(t *testing.T) {
	c, st := newCache(t, Options{})
	apply(t, c, "GUILD_CREATE", guildCreate(g1, 10, map[string]any{
		"channels": []any{channel(g1+16, "a", 0), channel(g1+17, "b", 0)},
	}))
	// After an outage the guild comes back with a channel deleted meanwhile and only some members.
	apply(t, c, "GUILD_CREATE", guildCreate(g1, 3, map[string]any{"channels": []any{channel(g1+16, "a", 0)}}))
	mustNotFound(t, "channel deleted during the outage", r(c.Channel(g1+17)))
	if ms := decodeList(t, "members", r(c.GuildMembers(g1, 0, 100))); len(ms) != 10 {
		t.Errorf("members after a partial member list: %d, want the 10 known", len(ms))
	}
	checkCounters(t, c, st)
}

func TestDesiredFieldsAreHonoured(t *testing.T) {
	c, _ := newCache(t, Options{Fields: Fields{
		Guild:   []string{"name"},
		Member:  []string{"roles"},
		User:    []string{"username"},
		Channel: []string{},
		Role:    []string{"*"},
	}})
	apply(t, c, "GUILD_CREATE", guildCreate(g1, 1, nil))
	g := decode(t, "guild", r(c.Guild(g1)))
	delete(g, "roles")
	delete(g, "emojis")
	delete(g, "stickers")
	if !reflect.DeepEqual(g, map[string]any{"id": id(g1), "name": "guild-" + id(g1)}) {
		t.Errorf("guild with guild_fields [name] = %v", g)
	}
	m := decode(t, "member", r(c.Member(g1, g1+1)))
	want := map[string]any{"roles": []any{}, "user": map[string]any{"id": id(g1 + 1), "username": "user-" + id(g1+1)}}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("member with member_fields [roles], user_fields [username] =\n %v\nwant %v", m, want)
	}
	ch := decode(t, "channel", r(c.Channel(g1+16)))
	if !reflect.DeepEqual(ch, map[string]any{"id": id(g1 + 16), "guild_id": id(g1), "type": 0.0}) {
		t.Errorf("channel with channel_fields [] keeps its ids and type only: %v", ch)
	}
	r := decodeList(t, "roles", r(c.GuildRoles(g1)))
	if len(r) != 1 || len(r[0]) != 9 { // every field of the role ("*") but its optional null icon and unicode_emoji
		t.Errorf("role with role_fields [*] = %v", r)
	}
	if _, err := Open(nil, Options{Fields: Fields{Guild: []string{"Name"}}}); err == nil || !strings.Contains(err.Error(), "Name") {
		t.Errorf("a field name that is not Discord's: %v", err)
	}
}

func TestMembersArePagedInUserIDOrder(t *testing.T) {
	c, _ := newCache(t, Options{})
	apply(t, c, "GUILD_CREATE", guildCreate(g1, 25, nil))
	var got []string
	after := uint64(0)
	for {
		page := decodeList(t, "page", r(c.GuildMembers(g1, after, 10)))
		if len(page) == 0 {
			break
		}
		if len(page) > 10 {
			t.Fatalf("page of %d with limit 10", len(page))
		}
		for _, m := range page {
			uid := m["user"].(map[string]any)["id"].(string)
			got = append(got, uid)
			after, _ = parseID([]byte(uid))
		}
	}
	if len(got) != 25 {
		t.Fatalf("paged through %d members, want 25", len(got))
	}
	for i := range got {
		if want := id(g1 + uint64(i)*4096 + 1); got[i] != want {
			t.Fatalf("member %d = %s, want %s (user id order)", i, got[i], want)
		}
	}
	if one := decodeList(t, "limit 1", r(c.GuildMembers(g1, 0, 1))); len(one) != 1 {
		t.Errorf("limit 1: %d members", len(one))
	}
	// After the largest id nobody comes: an empty list, still JSON.
	if last := decodeList(t, "after the largest id", r(c.GuildMembers(g1, 1<<64-1, 10))); len(last) != 0 {
		t.Errorf("after the largest id: %d members", len(last))
	}
	for _, bad := range []int{0, 1001} {
		if _, err := c.GuildMembers(g1, 0, bad); err == nil {
			t.Errorf("limit %d accepted", bad)
		}
	}
}

func TestCountersSurviveReopenAndMatchTheStore(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	c, err := Open(st, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		apply(t, c, "GUILD_CREATE", guildCreate(g1+uint64(i)<<22, 30, nil))
	}
	apply(t, c, "GUILD_DELETE", map[string]any{"id": id(g1)})
	want := c.Stats()
	st.Close()
	st = openStore(t, dir)
	defer st.Close()
	c, err = Open(st, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Stats(); got != want || got.Guilds != 4 || got.Members != 120 {
		t.Fatalf("stats after reopen = %+v, want %+v", got, want)
	}
	checkCounters(t, c, st)
	decode(t, "guild after reopen", r(c.Guild(g1+1<<22)))
}

func TestApplyingEventsAgainChangesNothing(t *testing.T) {
	c, st := newCache(t, Options{})
	evs := []any{
		"GUILD_CREATE", guildCreate(g1, 10, nil),
		"GUILD_MEMBER_REMOVE", map[string]any{"guild_id": id(g1), "user": user(g1 + 1)},
		"CHANNEL_DELETE", map[string]any{"id": id(g1 + 16), "guild_id": id(g1)},
	}
	apply(t, c, evs...)
	first, _ := c.Guild(g1)
	stats := c.Stats()
	apply(t, c, evs[:2]...) // a crash replays what was not acknowledged yet
	apply(t, c, evs[2:]...)
	if got := c.Stats(); got != stats {
		t.Errorf("stats after applying again: %+v, want %+v", got, stats)
	}
	if again, _ := c.Guild(g1); string(again) != string(first) {
		t.Errorf("guild after applying again:\n%s\nwant\n%s", again, first)
	}
	checkCounters(t, c, st)
}

func TestLargeGuildSpansSeveralCommits(t *testing.T) {
	c, st := newCache(t, Options{})
	apply(t, c, "GUILD_CREATE", guildCreate(g1, 15000, nil)) // 30,000 writes: more than one transaction
	if s := c.Stats(); s.Members != 15000 || s.Users != 15000 {
		t.Fatalf("stats = %+v", s)
	}
	apply(t, c, "GUILD_DELETE", map[string]any{"id": id(g1)})
	if s := c.Stats(); s.Members != 0 || s.Guilds != 0 {
		t.Fatalf("stats after removing a large guild = %+v", s)
	}
	checkCounters(t, c, st)
}

func TestMalformedEventsAreSkipped(t *testing.T) {
	c, _ := newCache(t, Options{})
	err := c.Apply([]byte(`{"op":0,"t":"GUILD_CREATE","d":{"id":`), payload("GUILD_MEMBER_ADD", 1, map[string]any{"user": user(1)}),
		payload("GUILD_CREATE", 2, guildCreate(g1, 1, nil)), payload("TYPING_START", 3, map[string]any{}))
	if err != nil {
		t.Fatal(err)
	}
	decode(t, "the good event after bad ones", r(c.Guild(g1)))
}

func TestAnEventOfAGuildInAnOutageEndsIt(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	c, err := Open(st, Options{})
	if err != nil {
		t.Fatal(err)
	}
	g2 := g1 + 1<<22
	apply(t, c, "GUILD_CREATE", guildCreate(g1, 3, nil),
		"GUILD_DELETE", map[string]any{"id": id(g1), "unavailable": true},
		"READY", map[string]any{"user": user(7), "guilds": []any{map[string]any{"id": id(g2), "unavailable": true}}})
	// A restart in between: which guilds are in an outage is on disk too.
	st.Close()
	st = openStore(t, dir)
	defer st.Close()
	if c, err = Open(st, Options{}); err != nil {
		t.Fatal(err)
	}
	// The gateway dropped the GUILD_CREATE that ended the outage (drop_known_guild_creates); the next event
	// of the guild says it is back.
	add := member(5)
	add["guild_id"] = id(g1)
	apply(t, c, "GUILD_MEMBER_ADD", add)
	if g := decode(t, "guild after its outage", r(c.Guild(g1))); g["unavailable"] != nil || g["name"] != "guild-"+id(g1) {
		t.Errorf("an event of a guild in an outage must end it: %v", g)
	}
	// A guild known only from READY has nothing to serve: it waits for its GUILD_CREATE.
	add["guild_id"] = id(g2)
	apply(t, c, "GUILD_MEMBER_ADD", add)
	if g := decode(t, "guild known from READY", r(c.Guild(g2))); g["unavailable"] != true {
		t.Errorf("a READY stub became available without its GUILD_CREATE: %v", g)
	}
	if s := c.Stats(); s.UnavailableGuilds != 1 || s.Guilds != 2 {
		t.Errorf("stats = %+v", s)
	}
	apply(t, c, "GUILD_DELETE", map[string]any{"id": id(g2)})
	if n := len(c.outages); n != 0 {
		t.Errorf("%d outages remembered after the guild went", n)
	}
	n := 0
	_ = st.Scan([]byte(outagePrefix), nil, func(_, _ []byte) error { n++; return nil })
	if n != 0 {
		t.Errorf("%d outage index entries left", n)
	}
	checkCounters(t, c, st)
}

func TestRenamedLoadingGuildCreatesAreApplied(t *testing.T) {
	c, _ := newCache(t, Options{LoadingGuildEvent: "GUILD_LOADED_DD"})
	apply(t, c, "GUILD_LOADED_DD", guildCreate(g1, 2, nil))
	decode(t, "guild from the renamed loading event", r(c.Guild(g1)))
}

func TestPresencesAndMessagesOnlyWhenEnabled(t *testing.T) {
	c, _ := newCache(t, Options{})
	apply(t, c, "GUILD_CREATE", guildCreate(g1, 1, map[string]any{"presences": []any{map[string]any{
		"user": map[string]any{"id": id(g1 + 1)}, "status": "online", "activities": []any{}}}}),
		"PRESENCE_UPDATE", map[string]any{"guild_id": id(g1), "user": map[string]any{"id": id(g1 + 1)}, "status": "idle"},
		"MESSAGE_CREATE", message(9, g1+16, g1, g1+1, "hi"))
	mustNotFound(t, "presence while presences are off", r(c.Presence(g1, g1+1)))
	mustNotFound(t, "message while messages are off", r(c.Message(g1+16, 9)))
	if s := c.Stats(); s.Presences != 0 || s.Messages != 0 {
		t.Errorf("stats = %+v", s)
	}
}

// In Discord's order (t before d) an event the cache does not keep is skipped at its t, the rest unread; one it
// keeps is applied whole, and a payload without a name is malformed, as in any order.
func TestEventsNotKeptAreSkippedAtTheirName(t *testing.T) {
	discordOrder := func(name string, d string) []byte {
		return []byte(`{"t":` + name + `,"s":1,"op":0,"d":` + d + `}`)
	}
	count := func(c *Cache, reason string) float64 {
		var m dto.Metric
		if err := c.m.skipped.WithLabelValues(reason).Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}
	gc, err := json.Marshal(guildCreate(g1, 2, nil))
	if err != nil {
		t.Fatal(err)
	}
	m, err := json.Marshal(message(77, g1+16, g1, g1+1, "hi"))
	if err != nil {
		t.Fatal(err)
	}
	msg := string(m)

	c, _ := newCache(t, Options{})
	if err := c.Apply(discordOrder(`"GUILD_CREATE"`, string(gc)), discordOrder(`"MESSAGE_CREATE"`, msg),
		discordOrder(`"TYPING_START"`, `{},"broken"`), discordOrder(`null`, `{}`)); err != nil {
		t.Fatal(err)
	}
	decode(t, "the guild applied in Discord's order", r(c.Guild(g1)))
	if n := count(c, "not_cached"); n != 2 {
		t.Errorf("not_cached = %v, want 2 (the message, and the typing whose broken rest was not read)", n)
	}
	if n := count(c, "malformed"); n != 1 {
		t.Errorf("malformed = %v, want 1 (the payload without t)", n)
	}
	// With messages kept, the same MESSAGE_CREATE is applied.
	c, _ = newCache(t, Options{MessagesPerChannel: 10})
	if err := c.Apply(discordOrder(`"GUILD_CREATE"`, string(gc)), discordOrder(`"MESSAGE_CREATE"`, msg)); err != nil {
		t.Fatal(err)
	}
	decode(t, "the message kept", r(c.Message(g1+16, 77)))
}
