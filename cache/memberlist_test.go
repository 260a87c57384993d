package cache

import "testing"

// TestMemberListIsCompleteOnlyWithEveryChunkOfDDsRequest: a GUILD_CREATE listing every member makes a
// guild's list complete, one listing fewer makes it incomplete (even after it was complete); the chunks
// of a bot's own request count for nothing; every chunk of one dd request (in any order, repeats
// allowed, a newer request starting afresh) completes it; the guild's removal removes the mark.
func TestMemberListIsCompleteOnlyWithEveryChunkOfDDsRequest(t *testing.T) {
	c, _ := newCache(t, Options{})
	const g = 5 << 22
	complete := func(want bool) {
		t.Helper()
		got, err := c.MembersComplete(g)
		if err != nil || got != want {
			t.Fatalf("MembersComplete = %v, %v; want %v", got, err, want)
		}
	}
	create := func(count int, listed ...uint64) map[string]any {
		ms := []any{}
		for _, u := range listed {
			ms = append(ms, member(u))
		}
		return map[string]any{"id": id(g), "name": "g", "member_count": count, "members": ms}
	}
	chunk := func(nonce string, index, count int, users ...uint64) map[string]any {
		ms := []any{}
		for _, u := range users {
			ms = append(ms, member(u))
		}
		return map[string]any{"guild_id": id(g), "members": ms, "chunk_index": index, "chunk_count": count, "nonce": nonce}
	}
	apply(t, c, "GUILD_CREATE", create(2, 10, 11))
	complete(true)
	apply(t, c, "GUILD_CREATE", create(4, 10))
	complete(false)
	apply(t, c, "GUILD_MEMBERS_CHUNK", chunk("bot-1", 0, 1, 10, 11, 12, 13))
	complete(false)
	apply(t, c, "GUILD_MEMBERS_CHUNK", chunk("dd:a", 2, 3, 13), "GUILD_MEMBERS_CHUNK", chunk("dd:a", 2, 3, 13))
	complete(false)
	apply(t, c, "GUILD_MEMBERS_CHUNK", chunk("dd:b", 0, 3, 10), "GUILD_MEMBERS_CHUNK", chunk("dd:b", 1, 3, 11))
	complete(false) // dd:b started afresh: its index 2 is still missing
	apply(t, c, "GUILD_MEMBERS_CHUNK", chunk("dd:b", 2, 3, 12, 13))
	complete(true)
	if s := c.Stats(); s.Members != 4 {
		t.Fatalf("members %d, want 4", s.Members)
	}
	apply(t, c, "GUILD_MEMBER_ADD", map[string]any{"guild_id": id(g), "user": user(14), "roles": []string{}, "joined_at": "2020-09-13T12:26:40.000000+00:00"})
	complete(true)
	apply(t, c, "GUILD_DELETE", map[string]any{"id": id(g)})
	if _, err := c.MembersComplete(g); err != ErrNotFound {
		t.Fatalf("MembersComplete of a guild the bot left: %v, want ErrNotFound", err)
	}
}
