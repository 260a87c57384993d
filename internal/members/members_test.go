package members

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ddhq/dd/shard"
)

// fakeShard records what is sent and answers through the requester, as Discord and dd's dispatch hook
// would: every chunk of a request, unless drop says to ignore it.
type fakeShard struct {
	id, total int
	r         *Requester
	drop      func(guild uint64, n int) bool // n: the how-manieth request of the guild

	mu    sync.Mutex
	sends []sent
}

type sent struct {
	at    time.Time
	guild uint64
}

func (f *fakeShard) ID() int            { return f.id }
func (f *fakeShard) NumShards() int     { return f.total }
func (f *fakeShard) State() shard.State { return shard.StateReady }
func (f *fakeShard) SendRaw(_ context.Context, payload []byte) error {
	var p struct {
		D struct {
			GuildID string `json:"guild_id"`
			Nonce   string `json:"nonce"`
		} `json:"d"`
	}
	if err := json.Unmarshal(payload, &p); err != nil {
		return err
	}
	var g uint64
	fmt.Sscan(p.D.GuildID, &g)
	f.mu.Lock()
	f.sends = append(f.sends, sent{time.Now(), g})
	n := 0
	for _, s := range f.sends {
		if s.guild == g {
			n++
		}
	}
	f.mu.Unlock()
	if f.drop != nil && f.drop(g, n) {
		return nil
	}
	go func() {
		for i := range 2 {
			f.r.Observe(f.id, f.total, true, "GUILD_MEMBERS_CHUNK", fmt.Appendf(nil,
				`{"op":0,"t":"GUILD_MEMBERS_CHUNK","s":1,"d":{"guild_id":"%d","members":[],"chunk_index":%d,"chunk_count":2,"nonce":%q}}`,
				g, i, p.D.Nonce))
		}
	}()
	return nil
}

func guildCreate(id uint64, count int) []byte {
	return fmt.Appendf(nil, `{"op":0,"t":"GUILD_CREATE","s":1,"d":{"id":"%d","member_count":%d,"members":[{"user":{"id":"1"}}]}}`, id, count)
}

// TestRequestsKeepEachShardsPaceAndOrder: 40 guilds on one shard, at most 5 requests per 200 ms sliding
// window, smallest guilds first; every guild completes; a guild that lists all its members is not asked.
func TestRequestsKeepEachShardsPaceAndOrder(t *testing.T) {
	r, err := New(Options{Order: OrderSmallFirst, PerWindow: 5, SendWindow: 200 * time.Millisecond, Window: 100 * time.Millisecond,
		Tick: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	sh := &fakeShard{id: 0, total: 1, r: r}
	for i := range 40 {
		r.Observe(0, 1, true, "GUILD_CREATE", guildCreate(uint64(1000+i)<<22, 5000-i*10))
	}
	r.Observe(0, 1, true, "GUILD_CREATE", guildCreate(uint64(99)<<22, 1)) // lists its only member
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx, func() []Sender { return []Sender{sh} })
	deadline := time.Now().Add(10 * time.Second)
	for r.Stats().Complete < 40 {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v after 10 s; want 40 complete", r.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if len(sh.sends) != 40 {
		t.Fatalf("%d requests sent, want 40 (one per guild missing members)", len(sh.sends))
	}
	for i, s := range sh.sends {
		if want := uint64(1000+39-i) << 22; s.guild != want {
			t.Fatalf("request %d asked for guild %d, want %d (smallest first)", i, s.guild, want)
		}
		if i >= 5 && s.at.Sub(sh.sends[i-5].at) < 200*time.Millisecond {
			t.Fatalf("requests %d and %d within %v: more than 5 per 200 ms", i-5, i, s.at.Sub(sh.sends[i-5].at))
		}
	}
	if d := sh.sends[39].at.Sub(sh.sends[0].at); d > 7*200*time.Millisecond+100*time.Millisecond {
		t.Errorf("40 requests at 5 per 200 ms took %v; the minimum is 1.4 s", d)
	}
}

// TestUnansweredRequestIsAskedAgainPastTheWindow: a request never answered is sent again after the
// timeout, never within the per-guild window of the first; RATE_LIMITED is waited out.
func TestUnansweredRequestIsAskedAgainPastTheWindow(t *testing.T) {
	const window = 150 * time.Millisecond
	r, _ := New(Options{Window: window, Tick: 5 * time.Millisecond})
	sh := &fakeShard{id: 0, total: 1, r: r, drop: func(_ uint64, n int) bool { return n == 1 }}
	r.Observe(0, 1, true, "GUILD_CREATE", guildCreate(7<<22, 3000))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx, func() []Sender { return []Sender{sh} })
	deadline := time.Now().Add(5 * time.Second)
	for !r.Complete(7 << 22) {
		if time.Now().After(deadline) {
			t.Fatalf("not complete after 5 s: %+v", r.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	sh.mu.Lock()
	sends := append([]sent(nil), sh.sends...)
	sh.mu.Unlock()
	if len(sends) != 2 || sends[1].at.Sub(sends[0].at) < window {
		t.Fatalf("sends %v; want two, the second at least %v after the first", sends, window)
	}

	// RATE_LIMITED: asked again only after retry_after.
	r2, _ := New(Options{Window: window, Tick: 5 * time.Millisecond})
	var once sync.Once
	sh2 := &fakeShard{id: 0, total: 1, r: r2}
	sh2.drop = func(g uint64, n int) bool {
		if n > 1 {
			return false
		}
		once.Do(func() {
			go func() {
				r2.mu.Lock()
				var nonce string
				for k := range r2.inflight {
					nonce = k
				}
				r2.mu.Unlock()
				r2.Observe(0, 1, true, "RATE_LIMITED", fmt.Appendf(nil,
					`{"op":0,"t":"RATE_LIMITED","s":2,"d":{"opcode":8,"retry_after":0.3,"meta":{"guild_id":"%d","nonce":%q}}}`, g, nonce))
			}()
		})
		return true
	}
	r2.Observe(0, 1, true, "GUILD_CREATE", guildCreate(7<<22, 3000))
	go r2.Run(ctx, func() []Sender { return []Sender{sh2} })
	deadline = time.Now().Add(5 * time.Second)
	for !r2.Complete(7 << 22) {
		if time.Now().After(deadline) {
			t.Fatalf("not complete after 5 s: %+v", r2.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	sh2.mu.Lock()
	defer sh2.mu.Unlock()
	if len(sh2.sends) != 2 || sh2.sends[1].at.Sub(sh2.sends[0].at) < 300*time.Millisecond {
		t.Fatalf("sends %v; want two, the second at least retry_after (300 ms) after the first", sh2.sends)
	}
}
