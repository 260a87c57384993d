package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/ddhq/dd/discord"
	"github.com/ddhq/dd/identify"
	"github.com/ddhq/dd/internal/testkit"
	"github.com/ddhq/dd/shard"
	"github.com/ddhq/dd/sim/discordsim"
)

// runGateway runs a Gateway as an embedder would, without a role; stop ends it and returns Run's error.
func runGateway(t *testing.T, sim *discordsim.Server, url, name string, cfg GatewayConfig) (g *Gateway, stop func() error) {
	t.Helper()
	level := zap.WarnLevel
	if os.Getenv("DD_TEST_LOG") == "info" {
		level = zap.InfoLevel
	}
	log := zaptest.NewLogger(t, zaptest.Level(level)).With(zap.String("process", name))
	simCfg := sim.Config()
	cfg.Conn = connect(t, url, name, 1)
	if cfg.GatewayBot == nil {
		cfg.GatewayBot = func(context.Context) (*shard.GatewayBot, error) {
			return &shard.GatewayBot{URL: sim.GatewayURL(), Shards: 4, SessionStartLimit: identify.SessionStartLimit{
				Total: 1000, Remaining: 1000, ResetAfter: time.Hour, MaxConcurrency: simCfg.MaxConcurrency}}, nil
		}
	}
	cfg.Shard = shard.Config{Token: simCfg.Tokens[0], Intents: discord.IntentGuilds | discord.IntentGuildMessages,
		ReconnectMin: 100 * time.Millisecond, ReconnectMax: time.Second}
	cfg.IdentifyWindow, cfg.Logger = simCfg.IdentifyWindow, log
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = 2 * time.Second
	}
	g, err := NewGateway(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	stopped, result := false, error(nil)
	stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			select {
			case result = <-done:
			case <-time.After(30 * time.Second):
				t.Errorf("%s: Run did not return 30 s after its context ended", name)
			}
		}
		return result
	}
	t.Cleanup(func() { _ = stop() })
	return g, stop
}

// TestGatewayProcessesShareTheShardsAndReportThem: two Gateways of one deployment, built from their
// config alone, share the shards evenly; each is ready, its Status names both processes, each shard's
// owner and the guilds of the shards it runs, and its runner answers for the command endpoints.
func TestGatewayProcessesShareTheShardsAndReportThem(t *testing.T) {
	sim := startGatewaySim(t, 16)
	url := clustertestServer(t)
	g1, _ := runGateway(t, sim, url, "gw-1", GatewayConfig{})
	g2, _ := runGateway(t, sim, url, "gw-2", GatewayConfig{})
	if err := g1.Ready(); err == nil {
		t.Error("Ready before the shards connected: nil; want the reason")
	}
	testkit.Eventually(t, 30*time.Second, "both processes ready with 2 shards each", func() bool {
		return g1.Ready() == nil && g2.Ready() == nil && len(g1.Running().Running()) == 2 && len(g2.Running().Running()) == 2
	})
	var st GatewayStatus
	testkit.Eventually(t, 10*time.Second, "every guild counted on the shards that hold it", func() bool {
		st = g1.Status()
		return st.Guilds+g2.Status().Guilds == 16
	})
	if !st.Started || st.TotalShards != 4 || st.Instance != "gw-1" || !st.NATSConnected || len(st.Processes) != 2 ||
		len(st.Free) != 0 || len(st.Owners) != 4 || len(st.Shards) != 2 || st.States["ready"] != 2 {
		t.Errorf("Status of gw-1: %+v; want 4 shards, 2 processes, 2 ready shards here, none free", st)
	}
	for _, p := range st.Processes {
		if len(p.Shards) != 2 {
			t.Errorf("process %s holds %v; want 2 shards each", p.Instance, p.Shards)
		}
	}
	r := g1.Running()
	for _, id := range r.Running() {
		if r.Shard(id) == nil || st.Owners[id] != "gw-1" {
			t.Errorf("shard %d runs in gw-1 but Shard(%d) = %v, owner %q", id, id, r.Shard(id), st.Owners[id])
		}
	}
	if got, want := r.ShardForGuild(1<<22*7), discord.ShardForGuild(1<<22*7, 4); got != want {
		t.Errorf("ShardForGuild: %d; want %d", got, want)
	}
}

// TestGatewayRefusesWhatCannotRun: a shard count the check refuses, and a fixed set empty at the count,
// end Run with a *FatalError and a hint; a Gateway needs its connection and /gateway/bot.
func TestGatewayRefusesWhatCannotRun(t *testing.T) {
	if _, err := NewGateway(GatewayConfig{}); err == nil {
		t.Error("NewGateway without Conn: nil error")
	}
	sim := startGatewaySim(t, 2)
	url := clustertestServer(t)
	for name, cfg := range map[string]GatewayConfig{
		"count refused":  {TotalShards: 3, CheckCount: func(total int) error { return fmt.Errorf("not %d", total) }},
		"no fixed shard": {TotalShards: 2, Shards: func(int) []int { return nil }},
	} {
		g, stop := runGateway(t, sim, url, "gw-"+name[:2], cfg)
		testkit.Eventually(t, 10*time.Second, name+": Run returned", func() bool {
			return g.conn.NATS().IsClosed()
		})
		err := stop()
		var fe *FatalError
		if !errors.As(err, &fe) || fe.Hint == "" {
			t.Errorf("%s: Run returned %v; want a *FatalError with a hint", name, err)
		}
		if st := g.Status(); st.Started || len(st.Processes) != 0 {
			t.Errorf("%s: Status %+v; want nothing started", name, st)
		}
	}
}

// TestTakenOverShardKeepsItsGuilds: a shard's guild ids are stored beside its session, and the process
// that takes the shard over (it resumes: no READY, no GUILD_CREATE burst) counts them at once.
func TestTakenOverShardKeepsItsGuilds(t *testing.T) {
	sim := startGatewaySim(t, 8)
	url := clustertestServer(t)
	g1, stop1 := runGateway(t, sim, url, "gw-1", GatewayConfig{TotalShards: 2})
	testkit.Eventually(t, 30*time.Second, "gw-1 ready with its 8 guilds", func() bool {
		return g1.Ready() == nil && g1.Status().Guilds == 8
	})
	store := NewSessionStore(connect(t, url, "reader", 1))
	testkit.Eventually(t, 10*time.Second, "the guild ids stored beside the sessions", func() bool {
		n := 0
		for id := range 2 {
			ids, err := store.LoadGuilds(ctxFor(t, 5*time.Second), id, 2)
			if err != nil {
				t.Fatal(err)
			}
			n += len(ids)
		}
		return n == 8
	})
	before := identifies(sim)
	if err := stop1(); err != nil {
		t.Fatalf("gw-1 stopped with %v", err)
	}
	g2, _ := runGateway(t, sim, url, "gw-2", GatewayConfig{TotalShards: 2})
	testkit.Eventually(t, 30*time.Second, "gw-2 ready with both shards", func() bool {
		return g2.Ready() == nil && len(g2.Running().Running()) == 2
	})
	if st := g2.Status(); st.Guilds != 8 {
		t.Errorf("gw-2 counts %d guilds on the shards it took over (%+v); want the 8 stored beside their sessions", st.Guilds, st.Shards)
	}
	if n := identifies(sim) - before; n != 0 {
		t.Errorf("%d identifies on the takeover; want 0 (the shards resume)", n)
	}
}
