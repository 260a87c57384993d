package roles

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/ddhq/dd/cluster/clustertest"
	"github.com/ddhq/dd/config"
	"github.com/ddhq/dd/internal/testkit"
	"github.com/ddhq/dd/sim/botsim"
	"github.com/ddhq/dd/sim/discordsim"
)

// runClusterWindow runs a --role=gateway process of cluster mode in-process, with Discord's identify
// window scaled to the simulator's; it stops when the test ends.
func runClusterWindow(t *testing.T, window time.Duration, env ...string) map[config.Role]string {
	t.Helper()
	env = append([]string{"DD_GATEWAY__LISTEN=127.0.0.1:0", "DD_SHUTDOWN_TIMEOUT=10s"}, env...)
	cfg, err := config.Load(config.Source{Environ: env, Role: config.RoleGateway})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan map[config.Role]string, 1)
	go func() {
		done <- Run(ctx, Options{Config: cfg, Role: config.RoleGateway, Logger: zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)),
			Version: "test", IdentifyWindow: window, Ready: func(a map[config.Role]string) { ready <- a }})
	}()
	var addrs map[config.Role]string
	select {
	case addrs = <-ready:
	case err := <-done:
		t.Fatalf("dd stopped at start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("dd did not start")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("dd did not stop")
		}
	})
	return addrs
}

// TestClusterReshardOverHTTP: in cluster mode POST /reshard on one gateway process reshards the whole
// deployment: 202 with from and to, 409 while it runs (on any process), and afterwards /status on every
// process shows the new count and no reshard. A process whose first_shard/last_shard fix its shards
// refuses with 400 naming the keys; a count dd cannot run is a 400 too.
func TestClusterReshardOverHTTP(t *testing.T) {
	const secret = "gw-secret-0123456789"
	nats := clustertest.Server(t)
	// The simulator's identify window scaled to 200 ms, and dd's with it (Options.IdentifyWindow).
	const window = 200 * time.Millisecond
	sim := discordsim.New(discordsim.Config{Guilds: 12, Tokens: []string{"tok-cluster-0123456789"}, IdentifyWindow: window,
		HeartbeatInterval: window * 33 / 4})
	if err := sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	bot := botsim.New("bot-secret-0123456789")
	t.Cleanup(bot.Close)
	env := func(instance, natsURL string, extra ...string) []string {
		return append([]string{"DD_DISCORD__TOKEN=tok-cluster-0123456789", "DD_DISCORD__API_URL=" + sim.APIURL(),
			"DD_STORE__PATH=" + t.TempDir(), "DD_EVENTS__URLS=" + bot.URL(), "DD_EVENTS__SECRET=bot-secret-0123456789",
			"DD_GATEWAY__SECRET=" + secret, "DD_GATEWAY__TOTAL_SHARDS=2", "DD_CLUSTER__NATS_URL=" + natsURL,
			"DD_CLUSTER__INSTANCE=" + instance, "DD_CLUSTER__LEASE_TTL=2s"}, extra...)
	}
	a := runClusterWindow(t, window, env("gw-a", nats.ClientURL())...)
	b := runClusterWindow(t, window, env("gw-b", nats.ClientURL())...)
	urls := []string{"http://" + a[config.RoleGateway], "http://" + b[config.RoleGateway]}
	type status struct {
		Total   int             `json:"total_shards"`
		Reshard json.RawMessage `json:"reshard"`
		Summary struct {
			States map[string]int `json:"states"`
		} `json:"summary"`
	}
	get := func(u string) status {
		var st status
		_, body := clusterCall(t, "GET", u+"/status", secret, "")
		_ = json.Unmarshal([]byte(body), &st)
		return st
	}
	testkit.Eventually(t, 30*time.Second, "2 shards ready over both processes", func() bool {
		return get(urls[0]).Summary.States["ready"]+get(urls[1]).Summary.States["ready"] == 2
	})
	if code, body := clusterCall(t, "POST", urls[0]+"/reshard", secret, `{"total_shards":0.5}`); code != http.StatusBadRequest {
		t.Errorf("POST /reshard with a bad body: %d %s; want 400", code, body)
	}
	if code, body := clusterCall(t, "POST", urls[0]+"/reshard", secret, `{"total_shards":100000}`); code != http.StatusBadRequest {
		t.Errorf("POST /reshard to 100000: %d %s; want 400", code, body)
	}
	if code, body := clusterCall(t, "POST", urls[0]+"/reshard", secret, `{"total_shards":2}`); code != http.StatusUnprocessableEntity {
		t.Errorf("POST /reshard to the current count: %d %s; want 422", code, body)
	}
	code, body := clusterCall(t, "POST", urls[0]+"/reshard", secret, `{"total_shards":4}`)
	var started struct {
		Status   string `json:"status"`
		From, To int
	}
	if err := json.Unmarshal([]byte(body), &started); code != http.StatusAccepted || err != nil || started.From != 2 || started.To != 4 {
		t.Fatalf("POST /reshard to 4: %d %s; want 202 from 2 to 4", code, body)
	}
	if code, body := clusterCall(t, "POST", urls[1]+"/reshard", secret, `{"total_shards":8}`); code != http.StatusConflict {
		t.Errorf("POST /reshard on the other process while one runs: %d %s; want 409", code, body)
	}
	testkit.Eventually(t, 60*time.Second, "/status on every process: 4 shards, no reshard", func() bool {
		for _, u := range urls {
			if st := get(u); st.Total != 4 || string(st.Reshard) != "null" || st.Summary.States["ready"] != 2 {
				return false
			}
		}
		return true
	})

	// A process with a fixed range refuses, naming the keys (a deployment of its own).
	other := clustertest.Server(t)
	f := runClusterWindow(t, window, env("fixed", other.ClientURL(), "DD_GATEWAY__FIRST_SHARD=0", "DD_GATEWAY__LAST_SHARD=1")...)
	testkit.Eventually(t, 30*time.Second, "the fixed process started", func() bool { return get("http://"+f[config.RoleGateway]).Total == 2 })
	code, body = clusterCall(t, "POST", "http://"+f[config.RoleGateway]+"/reshard", secret, `{"total_shards":4}`)
	if code != http.StatusBadRequest || !strings.Contains(body, "first_shard") || !strings.Contains(body, "last_shard") {
		t.Errorf("POST /reshard with first_shard/last_shard set: %d %s; want 400 naming the keys", code, body)
	}
}
