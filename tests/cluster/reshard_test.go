package clusterproc

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ddhq/dd/cluster/clustertest"
	"github.com/ddhq/dd/internal/testkit"
	"github.com/ddhq/dd/sim/discordsim"
)

// guildBot records the firehose's messages per guild in the order they reach the bot: each carries its
// simulator event key as nonce ("evt-<n>", n in the order the simulator sent them), and the event ids it
// came under.
type guildBot struct {
	mu      sync.Mutex
	byGuild map[string][]int64
	ids     map[int64]map[string]bool
}

func newGuildBot(t *testing.T) (*guildBot, string) {
	b := &guildBot{byGuild: map[string][]int64{}, ids: map[int64]map[string]bool{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var envs []struct {
			Payload struct {
				T string `json:"t"`
				D struct {
					GuildID string `json:"guild_id"`
					Nonce   string `json:"nonce"`
				} `json:"d"`
			} `json:"payload"`
		}
		if err := json.Unmarshal(body, &envs); err != nil || r.Header.Get("Authorization") != eventsSecret {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		ids := strings.Split(r.Header.Get("X-DD-Event-Ids"), ",")
		b.mu.Lock()
		defer b.mu.Unlock()
		for i, e := range envs {
			if e.Payload.T != "MESSAGE_CREATE" || !strings.HasPrefix(e.Payload.D.Nonce, "evt-") || i >= len(ids) {
				continue
			}
			n, _ := strconv.ParseInt(strings.TrimPrefix(e.Payload.D.Nonce, "evt-"), 10, 64)
			if b.ids[n] == nil {
				b.ids[n] = map[string]bool{}
				b.byGuild[e.Payload.D.GuildID] = append(b.byGuild[e.Payload.D.GuildID], n)
			}
			b.ids[n][ids[i]] = true
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	return b, srv.URL
}

func (b *guildBot) messages() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.ids)
}

// reshardStatus is what the test reads of GET /status during a reshard.
type reshardStatus struct {
	Total   int             `json:"total_shards"`
	Reshard json.RawMessage `json:"reshard"`
}

func post(t *testing.T, url, secret, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Authorization", secret)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out)
}

// TestReshardAcrossProcesses is the reshard of cluster mode with real processes: three `dd
// --role=gateway` share 6 shards under a firehose; POST /reshard on one moves the deployment to 12
// (202; a second request answers 409). Every message the simulator sent reaches the bot, none under two
// event ids (published twice), every guild's in the order sent across the switch, one identify per new
// shard, and /status on every process shows 12 shards and no reshard afterwards.
//
// Proportions: Discord's 5 s identify window (dd's and the simulator's), max_concurrency 6: the 12 new
// shards identify in two windows; lease_ttl 3 s.
func TestReshardAcrossProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("three dd processes resharding 6 -> 12 under a firehose: about 30 s")
	}
	const secret = "" // the helpers read /status without one
	nats := clustertest.Server(t)
	sim := startSim(t, 48, 6)
	b, botURL := newGuildBot(t)
	env := gatewayEnv(sim, 6, botURL, "DD_CLUSTER__NATS_URL="+nats.ClientURL(), "DD_CLUSTER__LEASE_TTL=3s",
		"DD_EVENTS__BATCH_MAX=20")
	ports := clustertest.FreePorts(t, 3)
	var ps []*ddProc
	for i, name := range []string{"gw-a", "gw-b", "gw-c"} {
		ps = append(ps, startDD(t, name, fmt.Sprintf("127.0.0.1:%d", ports[i]), env))
	}
	waitSplit(t, 60*time.Second, "6 shards ready, 2/2/2", ps, 6, 2)

	const total = 12000 // 20 s at 600 a second: past the switch
	done := make(chan struct{})
	stop := sim.StartFirehose(discordsim.FirehoseOptions{Rate: 600, Total: total, MessageCreate: 1, Done: done})
	t.Cleanup(stop)
	time.Sleep(2 * time.Second)
	ids0 := len(sim.GatewayStats().Identifies)
	start := time.Now()
	code, body := post(t, "http://"+ps[0].addr+"/reshard", secret, `{"total_shards":12}`)
	if code != http.StatusAccepted || !strings.Contains(body, `"to":12`) || !strings.Contains(body, `"from":6`) {
		t.Fatalf("POST /reshard: %d %s; want 202 from 6 to 12", code, body)
	}
	if code, body := post(t, "http://"+ps[2].addr+"/reshard", secret, `{"total_shards":18}`); code != http.StatusConflict {
		t.Errorf("a second POST /reshard while one runs: %d %s; want 409", code, body)
	}
	took := testkit.Eventually(t, 60*time.Second, "/status on every process: 12 shards, no reshard", func() bool {
		for _, p := range ps {
			resp, err := client.Get("http://" + p.addr + "/status")
			if err != nil {
				return false
			}
			var st reshardStatus
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			if err != nil || st.Total != 12 || string(st.Reshard) != "null" {
				return false
			}
		}
		return true
	})
	select {
	case <-done:
		t.Error("the firehose ended before the switch: the test does not cover a switch under load")
	default:
	}
	t.Logf("resharded 6 -> 12 in %s (every process on 12)", took.Round(time.Millisecond))
	waitSplit(t, 30*time.Second, "12 shards ready over the three processes", ps, 12, 0)
	<-done
	testkit.Eventually(t, 60*time.Second, "every message at the bot", func() bool { return b.messages() >= total })
	time.Sleep(time.Second) // a late copy
	b.mu.Lock()
	twice, disorder := 0, 0
	for n, ids := range b.ids {
		if len(ids) > 1 {
			if twice++; twice <= 5 {
				t.Errorf("message evt-%d reached the bot under ids %v: published twice", n, ids)
			}
		}
	}
	for g, ns := range b.byGuild {
		for i := 1; i < len(ns); i++ {
			if ns[i] < ns[i-1] {
				if disorder++; disorder <= 5 {
					t.Errorf("guild %s: evt-%d arrived after evt-%d", g, ns[i], ns[i-1])
				}
			}
		}
	}
	got := len(b.ids)
	b.mu.Unlock()
	if got != total {
		t.Errorf("%d distinct messages at the bot; the simulator sent %d", got, total)
	}
	if n := len(sim.GatewayStats().Identifies) - ids0; n != 12 {
		t.Errorf("%d identifies during the reshard; want 12 (one per new shard)", n)
	}
	t.Logf("%d messages at the bot, %d published twice, %d out of order per guild (all delivered %s after the request)",
		got, twice, disorder, time.Since(start).Round(time.Millisecond))
}
