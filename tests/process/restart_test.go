package process

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ddhq/dd/internal/testkit"
	"github.com/ddhq/dd/sim/botsim"
	"github.com/ddhq/dd/sim/discordsim"
)

// A dd restarted after SIGTERM, and after SIGKILL in the middle of a firehose, resumes its sessions:
// zero identifies spent, and the bot gets every event.
func TestRestartsCostNoIdentifyAndLoseNothing(t *testing.T) {
	sim := discordsim.New(discordsim.Config{Guilds: 20, MaxConcurrency: 16, Tokens: []string{"tok-restart-0123456789"}})
	if err := sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	bot := botsim.New("bot-secret-0123456789")
	defer bot.Close()
	dir := t.TempDir()
	env := []string{"DD_DISCORD__TOKEN=tok-restart-0123456789", "DD_DISCORD__API_URL=" + sim.APIURL(),
		"DD_STORE__PATH=" + filepath.Join(dir, "data"), "DD_EVENTS__URLS=" + bot.URL(), "DD_EVENTS__SECRET=bot-secret-0123456789",
		"DD_GATEWAY__LISTEN=127.0.0.1:0", "DD_GATEWAY__TOTAL_SHARDS=4", "DD_GATEWAY__DEDUP_MESSAGE_UPDATES=false"}

	shardsReady := sessionsConnected(sim, 4)
	p := startDD(t, dir, env, "--role=gateway")
	p.waitListening(t, 1)
	testkit.Eventually(t, 15*time.Second, "4 shards connected", shardsReady)

	// 1. Clean restart.
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit %d after SIGTERM; log:\n%s", code, p.Log())
	}
	p = startDD(t, dir, env, "--role=gateway")
	testkit.Eventually(t, 15*time.Second, "4 shards resumed", shardsReady)

	// 2. SIGKILL while events pour in, then restart.
	done := make(chan struct{})
	stop := sim.StartFirehose(discordsim.FirehoseOptions{Rate: 4000, Total: 8000, Done: done})
	defer stop()
	time.Sleep(700 * time.Millisecond)
	if err := p.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.wait(t)
	time.Sleep(300 * time.Millisecond) // events keep coming for the dropped sessions
	p = startDD(t, dir, env, "--role=gateway")
	<-done
	testkit.Eventually(t, 30*time.Second, "every event at the bot", func() bool {
		sessions := sim.Sessions()
		if len(sessions) != 4 {
			return false
		}
		for _, s := range sessions {
			if all, _ := bot.Complete(s.Shard, s.Seq); !all {
				return false
			}
		}
		return true
	})
	st := sim.GatewayStats()
	if len(st.Identifies) != 4 {
		t.Errorf("identifies = %d over two restarts, want the first 4 only", len(st.Identifies))
	}
	okResumes := 0
	for _, r := range st.Resumes {
		if r.OK {
			okResumes++
		}
	}
	if okResumes != 8 {
		t.Errorf("successful resumes = %d, want 8 (4 shards × 2 restarts): %+v", okResumes, st.Resumes)
	}
	for _, s := range sim.Sessions() {
		if _, ordered := bot.Complete(s.Shard, s.Seq); !ordered {
			t.Errorf("shard %d: events out of order", s.Shard)
		}
	}
	bs := bot.Stats()
	t.Logf("bot received %d events (%d duplicates after SIGKILL) in %d requests", bs.Events, bs.Duplicates, bs.Requests)
	if bs.BadAuth != 0 || len(bs.Invalid) != 0 {
		t.Errorf("bad deliveries: auth %d, invalid %v", bs.BadAuth, bs.Invalid)
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit %d; log:\n%s", code, p.Log())
	}
}

// Discord refusing the token or the intents stops dd with exit status 1 and a message that says what
// to do, without retrying (a retried identify burns the daily budget).
func TestFatalDiscordRefusalsExitOneWithAHint(t *testing.T) {
	cases := []struct {
		name, token, intents string
		want                 []string
	}{
		{"bad token", "not-the-token-0123456789", "Guilds", []string{"discord.token", "developer portal"}},
		{"disallowed intents", "tok-fatal-0123456789", "Guilds,MessageContent", []string{"4014", "Privileged Gateway Intents"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sim := discordsim.New(discordsim.Config{Guilds: 4, MaxConcurrency: 16, Tokens: []string{"tok-fatal-0123456789"}})
			if err := sim.Start("127.0.0.1:0"); err != nil {
				t.Fatal(err)
			}
			defer sim.Close()
			dir := t.TempDir()
			code, _, stderr := runDD(t, dir, []string{"DD_DISCORD__TOKEN=" + c.token, "DD_DISCORD__API_URL=" + sim.APIURL(),
				"DD_STORE__PATH=" + filepath.Join(dir, "data"), "DD_GATEWAY__LISTEN=127.0.0.1:0", "DD_GATEWAY__TOTAL_SHARDS=2",
				"DD_GATEWAY__INTENTS=" + c.intents}, "--role=gateway")
			if code != 1 {
				t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr)
			}
			for _, w := range c.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not say %q:\n%s", w, stderr)
				}
			}
			if n := len(sim.GatewayStats().Identifies); n > 2 {
				t.Errorf("%d identifies: a refused shard must not retry", n)
			}
			if strings.Contains(stderr, "tok-fatal-0123456789") {
				t.Errorf("the token appears in the log")
			}
		})
	}
}
