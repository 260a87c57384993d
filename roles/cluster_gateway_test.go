package roles

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ddhq/dd/cluster"
	"github.com/ddhq/dd/cluster/clustertest"
	"github.com/ddhq/dd/config"
	"github.com/ddhq/dd/internal/testkit"
	"github.com/ddhq/dd/sim/botsim"
	"github.com/ddhq/dd/sim/discordsim"
)

// runCluster runs roles.Run in-process in cluster mode, its config loaded from the environment.
func runCluster(t *testing.T, role config.Role, env ...string) (addrs map[config.Role]string, stop func() error) {
	t.Helper()
	return runClusterLog(t, role, zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)), env...)
}

func runClusterLog(t *testing.T, role config.Role, log *zap.Logger, env ...string) (addrs map[config.Role]string, stop func() error) {
	t.Helper()
	env = append([]string{"DD_REST__LISTEN=127.0.0.1:0", "DD_GATEWAY__LISTEN=127.0.0.1:0", "DD_CACHE__LISTEN=127.0.0.1:0",
		"DD_SHUTDOWN_TIMEOUT=10s"}, env...)
	cfg, err := config.Load(config.Source{Environ: env, Role: role})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan map[config.Role]string, 1)
	go func() {
		done <- Run(ctx, Options{Config: cfg, Role: role, Logger: log, Version: "test",
			Ready: func(a map[config.Role]string) { ready <- a }})
	}()
	select {
	case addrs = <-ready:
	case err := <-done:
		t.Fatalf("dd stopped at start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("dd did not start")
	}
	var stopped bool
	var stopErr error
	stop = func() error {
		if stopped {
			return stopErr
		}
		stopped = true
		cancel()
		select {
		case stopErr = <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("dd did not stop")
		}
		return stopErr
	}
	t.Cleanup(func() { _ = stop() })
	return addrs, stop
}

func clusterCall(t *testing.T, method, url, secret, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Authorization", secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestClusterModeAllRole runs dd --role=all in cluster mode on an in-process NATS server: the shards run
// through the cluster (leases, the stream, sessions in the KV), the bot gets every event from the
// stream, the in-process cache follows the stream (and so does a --role=cache process, with its own
// consumer), the command endpoints reach the shards this process
// runs, /status names the process and each shard's owner, and a restart resumes every shard from the
// KV's sessions: no identify.
func TestClusterModeAllRole(t *testing.T) {
	const gwSecret, cacheSecret = "gw-secret-0123456789", "cache-secret-0123456789"
	nats := clustertest.Server(t)
	sim := discordsim.New(discordsim.Config{Guilds: 8, MaxConcurrency: 16, Tokens: []string{"tok-cluster-0123456789"}})
	if err := sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	bot := botsim.New("bot-secret-0123456789")
	t.Cleanup(bot.Close)
	store := filepath.Join(t.TempDir(), "data")
	env := []string{"DD_DISCORD__TOKEN=tok-cluster-0123456789", "DD_DISCORD__API_URL=" + sim.APIURL(), "DD_STORE__PATH=" + store,
		"DD_EVENTS__URLS=" + bot.URL(), "DD_EVENTS__SECRET=bot-secret-0123456789", "DD_GATEWAY__SECRET=" + gwSecret,
		"DD_CACHE__SECRET=" + cacheSecret, "DD_REST__SECRET=rest-secret-0123456789", "DD_GATEWAY__TOTAL_SHARDS=2",
		"DD_GATEWAY__DEDUP_MESSAGE_UPDATES=false", "DD_CLUSTER__NATS_URL=" + nats.ClientURL(), "DD_CLUSTER__INSTANCE=all-1",
		"DD_CLUSTER__LEASE_TTL=2s", "DD_CLUSTER__ADVERTISE_URL=http://127.0.0.1:8000"}
	addrs, stop := runCluster(t, config.RoleAll, env...)
	gw, cache := "http://"+addrs[config.RoleGateway], "http://"+addrs[config.RoleCache]
	testkit.Eventually(t, 30*time.Second, "the gateway ready", func() bool {
		code, _ := clusterCall(t, "GET", gw+"/readyz", "", "")
		return code == http.StatusOK
	})
	code, body := clusterCall(t, "GET", gw+"/status", gwSecret, "")
	var st struct {
		Instance  string            `json:"instance"`
		Total     int               `json:"total_shards"`
		Owners    []string          `json:"owners"`
		Processes []cluster.Process `json:"processes"`
		Shards    []cluster.ShardStatus
	}
	if err := json.Unmarshal([]byte(body), &st); code != http.StatusOK || err != nil {
		t.Fatalf("/status: %d %s", code, body)
	}
	if st.Instance != "all-1" || st.Total != 2 || fmt.Sprint(st.Owners) != "[all-1 all-1]" || len(st.Processes) != 1 ||
		fmt.Sprint(st.Processes[0].Shards) != "[0 1]" || len(st.Shards) != 2 {
		t.Errorf("/status: %s", body)
	}

	done := make(chan struct{})
	sim.StartFirehose(discordsim.FirehoseOptions{Rate: 2000, Total: 500, Done: done})
	<-done
	testkit.Eventually(t, 30*time.Second, "every event at the bot", func() bool {
		for _, s := range sim.Sessions() {
			if all, _ := bot.Complete(s.Shard, s.Seq); !all {
				return false
			}
		}
		return true
	})
	for _, s := range sim.Sessions() {
		if _, ordered := bot.Complete(s.Shard, s.Seq); !ordered {
			t.Errorf("shard %d: events out of order at the bot", s.Shard)
		}
	}
	testkit.Eventually(t, 10*time.Second, "/status: nothing waits for the bot", func() bool {
		_, body := clusterCall(t, "GET", gw+"/status", gwSecret, "")
		var st struct {
			Depth  *int `json:"queue_depth"`
			Shards []struct {
				Queued *int `json:"queued_events"`
			} `json:"shards"`
		}
		return json.Unmarshal([]byte(body), &st) == nil && st.Depth != nil && *st.Depth == 0 && len(st.Shards) == 2 && st.Shards[0].Queued != nil
	})
	g := sim.Guilds()[3]
	testkit.Eventually(t, 20*time.Second, "the cache holds the guilds (fed from the stream)", func() bool {
		code, _ := clusterCall(t, "GET", cache+"/guilds/"+discordsim.FormatID(g.ID), cacheSecret, "")
		return code == http.StatusOK
	})

	// A cache process of its own follows the stream with its own consumer: it holds the guilds too.
	cacheAddrs, _ := runCluster(t, config.RoleCache, "DD_STORE__PATH="+filepath.Join(t.TempDir(), "cache2"), "DD_CACHE__SECRET="+cacheSecret,
		"DD_CLUSTER__NATS_URL="+nats.ClientURL(), "DD_CLUSTER__INSTANCE=cache-2")
	tookCache := testkit.Eventually(t, 20*time.Second, "a --role=cache process holds the guilds (its own consumer of the stream)", func() bool {
		code, _ := clusterCall(t, "GET", "http://"+cacheAddrs[config.RoleCache]+"/guilds/"+discordsim.FormatID(g.ID), cacheSecret, "")
		return code == http.StatusOK
	})
	t.Logf("a --role=cache process held the guilds %s after its start", tookCache.Round(time.Millisecond))

	presence := `{"op":3,"d":{"since":null,"activities":[],"status":"idle","afk":false}}`
	if code, body := clusterCall(t, "POST", gw+"/shards/1/send", gwSecret, presence); code != http.StatusNoContent {
		t.Errorf("POST /shards/1/send: %d %s", code, body)
	}
	if code, body := clusterCall(t, "POST", gw+"/shards/7/send", gwSecret, presence); code != http.StatusNotFound {
		t.Errorf("POST /shards/7/send (no such shard here): %d %s", code, body)
	}
	if code, _ := clusterCall(t, "GET", gw+"/status", "wrong-secret-0123456789", ""); code != http.StatusUnauthorized {
		t.Errorf("/status with a wrong secret: %d", code)
	}

	ids0 := len(sim.GatewayStats().Identifies)
	if err := stop(); err != nil {
		t.Fatalf("clean stop: %v", err)
	}
	addrs, _ = runCluster(t, config.RoleAll, env...)
	gw = "http://" + addrs[config.RoleGateway]
	took := testkit.Eventually(t, 30*time.Second, "the gateway ready again", func() bool {
		code, _ := clusterCall(t, "GET", gw+"/readyz", "", "")
		return code == http.StatusOK
	})
	if n := len(sim.GatewayStats().Identifies); n != ids0 {
		t.Errorf("%d identifies after a restart; want 0 (sessions resumed from the KV)", n-ids0)
	}
	t.Logf("restarted: ready %s later, resumed from the KV's sessions, 0 identifies", took.Round(time.Millisecond))
}

// TestClusterModeWithoutEventsURLs: with events.urls empty in cluster mode dd delivers nothing and says
// so at start; the events stay in the stream for the bot to read, and no delivery consumer is made.
func TestClusterModeWithoutEventsURLs(t *testing.T) {
	nats := clustertest.Server(t)
	sim := discordsim.New(discordsim.Config{Guilds: 4, Tokens: []string{"tok-cluster-0123456789"}})
	if err := sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	core, logs := observer.New(zap.InfoLevel)
	log := zap.New(zapcore.NewTee(core, zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)).Core()))
	addrs, _ := runClusterLog(t, config.RoleGateway, log, "DD_DISCORD__TOKEN=tok-cluster-0123456789", "DD_DISCORD__API_URL="+sim.APIURL(),
		"DD_STORE__PATH="+filepath.Join(t.TempDir(), "data"), "DD_EVENTS__URLS=", "DD_GATEWAY__TOTAL_SHARDS=2",
		"DD_CLUSTER__NATS_URL="+nats.ClientURL(), "DD_CLUSTER__INSTANCE=gw-1", "DD_CLUSTER__LEASE_TTL=2s")
	if n := logs.FilterMessage("events.urls is empty: events stay in the stream DD_EVENTS for the bot to read").Len(); n != 1 {
		t.Errorf("%d log lines saying events.urls is empty; want 1", n)
	}
	gw := "http://" + addrs[config.RoleGateway]
	testkit.Eventually(t, 30*time.Second, "the gateway ready", func() bool {
		code, _ := clusterCall(t, "GET", gw+"/readyz", "", "")
		return code == http.StatusOK
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := cluster.Connect(ctx, cluster.Options{URL: nats.ClientURL(), Instance: "reader"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := conn.JetStream().Stream(ctx, cluster.StreamName(conn.Name()))
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "every guild's GUILD_CREATE in the stream", func() bool {
		info, err := stream.Info(ctx)
		return err == nil && info.State.Msgs >= 2+4 // READY of each shard and the guilds
	})
	for name := range stream.ConsumerNames(ctx).Name() {
		t.Errorf("consumer %s on the stream; want none without events.urls", name)
	}
}
