package filter

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func payload(t string, d string) []byte {
	return []byte(fmt.Sprintf(`{"op":0,"t":"%s","s":1,"d":%s}`, t, d))
}

func TestLoadingBurstIsRenamedAndKnownGuildCreatesDropped(t *testing.T) {
	f := New(Options{Rules: Rules{DropKnownGuildCreates: true, LoadingGuildEvent: "GUILD_LOADED_DD"}})
	f.Keep(0, "READY", payload("READY", `{"guilds":[{"id":"10","unavailable":true},{"id":"20","unavailable":true}]}`))
	if f.GuildCount(0) != 2 || f.Loading(0) != 2 {
		t.Fatalf("after READY: %d guilds, %d loading", f.GuildCount(0), f.Loading(0))
	}
	keep, out := f.Keep(0, "GUILD_CREATE", payload("GUILD_CREATE", `{"id":"10","name":"a"}`))
	if !keep || !strings.Contains(string(out), `"t":"GUILD_LOADED_DD"`) || !strings.Contains(string(out), `"name":"a"`) {
		t.Fatalf("loading GUILD_CREATE: keep %v, %s", keep, out)
	}
	// A guild joined later is a plain GUILD_CREATE.
	keep, out = f.Keep(0, "GUILD_CREATE", payload("GUILD_CREATE", `{"id":"30"}`))
	if !keep || !strings.Contains(string(out), `"t":"GUILD_CREATE"`) {
		t.Fatalf("joined guild: keep %v, %s", keep, out)
	}
	// Seen again while available (a duplicate after a resume): dropped.
	if keep, _ := f.Keep(0, "GUILD_CREATE", payload("GUILD_CREATE", `{"id":"30"}`)); keep {
		t.Fatal("a duplicate GUILD_CREATE of an available guild was kept")
	}
	// The end of an outage: kept, the bot and the cache learn the guild is back.
	f.Keep(0, "GUILD_DELETE", payload("GUILD_DELETE", `{"id":"30","unavailable":true}`))
	if keep, _ := f.Keep(0, "GUILD_CREATE", payload("GUILD_CREATE", `{"id":"30"}`)); !keep {
		t.Fatal("the GUILD_CREATE ending an outage was dropped")
	}
	// Removed, then invited again: a new join, kept.
	f.Keep(0, "GUILD_DELETE", payload("GUILD_DELETE", `{"id":"30"}`))
	if f.GuildCount(0) != 2 {
		t.Fatalf("after removal: %d guilds, want 2", f.GuildCount(0))
	}
	if keep, _ := f.Keep(0, "GUILD_CREATE", payload("GUILD_CREATE", `{"id":"30"}`)); !keep {
		t.Fatal("GUILD_CREATE after removal was dropped")
	}
	if f.TotalGuilds() != 3 || f.Dropped() != 1 {
		t.Fatalf("total %d dropped %d", f.TotalGuilds(), f.Dropped())
	}
}

func TestEmbedUnfurlUpdatesAreDroppedAndEditsKept(t *testing.T) {
	f := New(Options{Rules: Rules{DedupMessageUpdates: true}})
	f.Keep(0, "MESSAGE_CREATE", payload("MESSAGE_CREATE", `{"id":"5","content":"see https://x","edited_timestamp":null}`))
	if keep, _ := f.Keep(0, "MESSAGE_UPDATE", payload("MESSAGE_UPDATE", `{"id":"5","content":"see https://x","edited_timestamp":null,"embeds":[{"url":"https://x"}]}`)); keep {
		t.Fatal("unfurl update kept")
	}
	if keep, _ := f.Keep(0, "MESSAGE_UPDATE", payload("MESSAGE_UPDATE", `{"id":"5","content":"edited","edited_timestamp":"2026-01-01T00:00:00+00:00"}`)); !keep {
		t.Fatal("real edit dropped")
	}
	// An update for a message dd never saw is kept.
	if keep, _ := f.Keep(0, "MESSAGE_UPDATE", payload("MESSAGE_UPDATE", `{"id":"6","content":"x","edited_timestamp":null}`)); !keep {
		t.Fatal("update of unknown message dropped")
	}
	off := New(Options{})
	off.Keep(0, "MESSAGE_CREATE", payload("MESSAGE_CREATE", `{"id":"5","content":"a"}`))
	if keep, _ := off.Keep(0, "MESSAGE_UPDATE", payload("MESSAGE_UPDATE", `{"id":"5","content":"a"}`)); !keep {
		t.Fatal("with dedup off an update was dropped")
	}
}

func TestMessageMemoryIsBounded(t *testing.T) {
	f := New(Options{Rules: Rules{DedupMessageUpdates: true}, MessageMemory: 100, MessageTTL: 50 * time.Millisecond})
	for i := 1; i <= 1000; i++ {
		f.Keep(0, "MESSAGE_CREATE", payload("MESSAGE_CREATE", fmt.Sprintf(`{"id":"%d","content":"c"}`, i)))
	}
	if n := f.MessagesRemembered(); n > 100 {
		t.Fatalf("remembers %d messages, bound is 100", n)
	}
	time.Sleep(60 * time.Millisecond)
	f.Keep(0, "MESSAGE_CREATE", payload("MESSAGE_CREATE", `{"id":"2000","content":"c"}`))
	if n := f.MessagesRemembered(); n != 1 {
		t.Fatalf("after the TTL %d messages remembered, want 1", n)
	}
}

func TestDropList(t *testing.T) {
	f := New(Options{Rules: Rules{Drop: []string{"TYPING_START", "PRESENCE_UPDATE"}}})
	if keep, _ := f.Keep(0, "TYPING_START", payload("TYPING_START", `{}`)); keep {
		t.Fatal("dropped event kept")
	}
	if keep, _ := f.Keep(0, "MESSAGE_CREATE", payload("MESSAGE_CREATE", `{"id":"1"}`)); !keep {
		t.Fatal("other event dropped")
	}
}

func BenchmarkKeepMessageCreate(b *testing.B) {
	f := New(Options{Rules: Rules{DedupMessageUpdates: true}})
	p := payload("MESSAGE_CREATE", `{"id":"123456789012345678","channel_id":"1","guild_id":"2","content":"hello there, this is a message of typical length","author":{"id":"3","username":"u"},"embeds":[],"attachments":[],"edited_timestamp":null}`)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		f.Keep(0, "MESSAGE_CREATE", p)
	}
}

func TestLoadingBurstOfATakeoverSetIsDropped(t *testing.T) {
	f := New(Options{DropLoadingBurst: true})
	if keep, _ := f.Keep(0, "READY", payload("READY", `{"guilds":[{"id":"10","unavailable":true}]}`)); keep {
		t.Fatal("READY kept")
	}
	if keep, _ := f.Keep(0, "GUILD_CREATE", payload("GUILD_CREATE", `{"id":"10"}`)); keep {
		t.Fatal("loading GUILD_CREATE kept")
	}
	if f.Loading(0) != 0 || f.GuildCount(0) != 1 {
		t.Fatalf("loading %d guilds %d", f.Loading(0), f.GuildCount(0))
	}
	if keep, _ := f.Keep(0, "GUILD_CREATE", payload("GUILD_CREATE", `{"id":"11"}`)); !keep {
		t.Fatal("a guild joined later was dropped")
	}
	// A new session later (an invalid session, long after the switch): its burst carries what the bot
	// and the cache missed, and is kept.
	if keep, _ := f.Keep(0, "READY", payload("READY", `{"guilds":[{"id":"10","unavailable":true},{"id":"11","unavailable":true}]}`)); !keep {
		t.Fatal("a later READY dropped")
	}
	for _, id := range []string{"10", "11"} {
		if keep, _ := f.Keep(0, "GUILD_CREATE", payload("GUILD_CREATE", `{"id":"`+id+`"}`)); !keep {
			t.Fatalf("guild %s's GUILD_CREATE after a later READY dropped", id)
		}
	}
	// Another shard's first READY is still its takeover burst.
	if keep, _ := f.Keep(1, "READY", payload("READY", `{"guilds":[{"id":"12","unavailable":true}]}`)); keep {
		t.Fatal("shard 1's first READY kept")
	}
	if keep, _ := f.Keep(1, "GUILD_CREATE", payload("GUILD_CREATE", `{"id":"12"}`)); keep {
		t.Fatal("shard 1's loading GUILD_CREATE kept")
	}
}
