package loadtool

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The credentials a load run gives the processes it starts (all on 127.0.0.1, for the run only).
const (
	simToken     = "tok-ddload-0123456789abcdef"
	ddSecret     = "ddload-role-secret-0123456789"
	eventsSecret = "ddload-bot-secret-0123456789"
)

// Binaries are the programs a run starts.
type Binaries struct {
	DD  string // dd (`go build -o bin/dd .`)
	Sim string // the simulator (`go build -o bin/discordsim ./cmd/discordsim`)
}

// Build compiles dd and the simulator from the module at repoDir into outDir.
func Build(ctx context.Context, repoDir, outDir string) (Binaries, error) {
	b := Binaries{DD: filepath.Join(outDir, "dd"), Sim: filepath.Join(outDir, "discordsim")}
	for _, c := range [][2]string{{b.DD, "."}, {b.Sim, "./cmd/discordsim"}} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", c[0], c[1])
		cmd.Dir = repoDir
		if out, err := cmd.CombinedOutput(); err != nil {
			return b, fmt.Errorf("go build -o %s %s in %s: %w\n%s", c[0], c[1], repoDir, err, out)
		}
	}
	return b, nil
}

// resolve makes the paths absolute (the processes run in their own directories) and checks them.
func (b *Binaries) resolve() error {
	for _, p := range []*string{&b.DD, &b.Sim} {
		if *p == "" {
			return fmt.Errorf("binaries: a path is empty (want dd and discordsim, e.g. bin/dd and bin/discordsim from `make build`)")
		}
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		if _, err := os.Stat(abs); err != nil {
			return fmt.Errorf("binaries: %w (run `make build`, or give -dd and -sim)", err)
		}
		*p = abs
	}
	return nil
}

// localClient talks to the processes of the run; keep-alive, no proxy.
var localClient = &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 4}, Timeout: 30 * time.Second}

// ---- the simulator ----

type simOptions struct {
	Guilds, MaxConcurrency, SessionStartTotal, PrivilegedIntents int
	IdentifyWindow, Heartbeat                                    time.Duration
	MembersPerGuild                                              int    // -members when above 0
	GuildsFile                                                   bool   // -guilds-file discordsim.guilds.json
	CPUProfile                                                   string // -cpuprofile (an absolute path)
}

type simProcess struct {
	*process
	url string // base URL; the API is url + "/api", the admin API url + "/_sim/"
	dir string
}

// simGuild is one entry of the simulator's -guilds-file; MemberCount leaves out the bot.
type simGuild struct {
	ID          uint64 `json:"id,string"`
	MemberCount int    `json:"member_count"`
}

// guilds reads the -guilds-file (written before the URL file, so there once startSim returns).
func (s *simProcess) guilds() ([]simGuild, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, "discordsim.guilds.json"))
	if err != nil {
		return nil, err
	}
	var list []simGuild
	return list, json.Unmarshal(b, &list)
}

// setGuildMembers sets a guild's member count, the bot left out (no event is sent).
func (s *simProcess) setGuildMembers(id uint64, n int) error {
	return postJSON(fmt.Sprintf("%s/_sim/gateway/guilds/%d/members?count=%d", s.url, id, n), nil)
}

func startSim(ctx context.Context, dir, bin string, o simOptions) (*simProcess, error) {
	urlFile := filepath.Join(dir, "discordsim.url")
	args := []string{"-addr", "127.0.0.1:0", "-url-file", urlFile, "-tokens", simToken,
		"-guilds", strconv.Itoa(o.Guilds), "-max-concurrency", strconv.Itoa(o.MaxConcurrency),
		"-identify-window", o.IdentifyWindow.String(), "-session-start-total", strconv.Itoa(o.SessionStartTotal),
		"-privileged-intents", strconv.Itoa(o.PrivilegedIntents)}
	if o.Heartbeat > 0 {
		args = append(args, "-heartbeat-interval", o.Heartbeat.String())
	}
	if o.MembersPerGuild > 0 {
		args = append(args, "-members", strconv.Itoa(o.MembersPerGuild))
	}
	if o.GuildsFile {
		args = append(args, "-guilds-file", filepath.Join(dir, "discordsim.guilds.json"))
	}
	if o.CPUProfile != "" {
		args = append(args, "-cpuprofile", o.CPUProfile)
	}
	return runSim(ctx, dir, bin, urlFile, args)
}

// runSim starts the simulator with args (which name urlFile as its -url-file) and waits until it says
// where it listens.
func runSim(ctx context.Context, dir, bin, urlFile string, args []string) (*simProcess, error) {
	p, err := startProcess(ctx, "discordsim", dir, bin, args, nil, nil)
	if err != nil {
		return nil, err
	}
	s := &simProcess{process: p, dir: dir}
	err = waitFor(ctx, "the simulator's URL file", 20*time.Second, 20*time.Millisecond, []*process{p}, func() (bool, error) {
		b, err := os.ReadFile(urlFile)
		s.url = strings.TrimSpace(string(b))
		return err == nil && strings.HasPrefix(s.url, "http://"), nil
	})
	if err != nil {
		p.stop(5 * time.Second)
		return nil, err
	}
	return s, nil
}

// simStats is the part of the simulator's GatewayStats (GET /_sim/gateway/stats) a run reads.
type simStats struct {
	Connections int64 `json:"connections"`
	Identifies  []struct {
		At      time.Time `json:"at"`
		Shard   int       `json:"shard"`
		Outcome string    `json:"outcome"`
	} `json:"identifies"`
	Resumes []struct {
		OK bool `json:"ok"`
	} `json:"resumes"`
	IdentifyViolations int         `json:"identify_violations"`
	BudgetExhaustions  int         `json:"budget_exhaustions"`
	CloseCodesSent     map[int]int `json:"close_codes_sent"`
	HeartbeatTimeouts  int         `json:"heartbeat_timeouts"`
	Heartbeats         int64       `json:"heartbeats"`
	SlowConsumerDrops  int         `json:"slow_consumer_drops"`
	EventsCreated      int64       `json:"events_created"`
	EventsDispatched   int64       `json:"events_dispatched"`
	MemberRequests     int64       `json:"member_requests"`
	MemberIgnored      int64       `json:"member_requests_ignored"`
	MemberRateLimited  int64       `json:"member_rate_limited"`
	MemberChunks       int64       `json:"member_chunks"`
}

type simSession struct {
	Shard     int   `json:"shard"`
	NumShards int   `json:"num_shards"`
	Connected bool  `json:"connected"`
	Seq       int64 `json:"seq"`
	SentSeq   int64 `json:"sent_seq"`
}

func (s *simProcess) stats() (simStats, error) {
	var st simStats
	return st, getJSON(s.url+"/_sim/gateway/stats", "", &st)
}

func (s *simProcess) sessions() ([]simSession, error) {
	var list []simSession
	return list, getJSON(s.url+"/_sim/gateway/sessions", "", &list)
}

func (s *simProcess) startFirehose(rate float64, total int64) error {
	body, _ := json.Marshal(map[string]any{"rate": rate, "total": total})
	return postJSON(s.url+"/_sim/gateway/firehose", body)
}

func (s *simProcess) stopFirehoses() error {
	return postJSON(s.url+"/_sim/gateway/firehose/stop", nil)
}

// ---- dd ----

type ddProcess struct {
	*process
	mu    sync.Mutex
	addrs map[string]string // role -> listening address, from the log
}

// startDD runs dd with role and env (DD_* variables) and waits until it has logged the listener of
// every role in wantRoles.
func startDD(ctx context.Context, dir, bin, role string, env []string, wantRoles ...string) (*ddProcess, error) {
	d := &ddProcess{addrs: map[string]string{}}
	p, err := startProcess(ctx, "dd", dir, bin, []string{"--role=" + role}, env, func(line string) {
		if !strings.Contains(line, `"listening"`) {
			return
		}
		var m struct{ Msg, Role, Addr string }
		if json.Unmarshal([]byte(line), &m) == nil && m.Msg == "listening" {
			d.mu.Lock()
			d.addrs[m.Role] = m.Addr
			d.mu.Unlock()
		}
	})
	if err != nil {
		return nil, err
	}
	d.process = p
	err = waitFor(ctx, "dd's listeners", 30*time.Second, 20*time.Millisecond, []*process{p}, func() (bool, error) {
		d.mu.Lock()
		defer d.mu.Unlock()
		for _, r := range wantRoles {
			if d.addrs[r] == "" {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		p.stop(5 * time.Second)
		return nil, err
	}
	return d, nil
}

func (d *ddProcess) url(role string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return "http://" + d.addrs[role]
}

func (d *ddProcess) metrics() (Metrics, error) {
	resp, err := localClient.Get(d.url("gateway") + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return ParseMetrics(string(b))
}

// ddStatus is the part of GET /status a run reads.
type ddStatus struct {
	TotalShards int `json:"total_shards"`
	QueueDepth  int `json:"queue_depth"`
	Shards      []struct {
		ID     int    `json:"id"`
		State  string `json:"state"`
		Guilds int    `json:"guilds"`
	} `json:"shards"`
}

// status fetches GET /status and says how long it took and how big it was.
func (d *ddProcess) status() (st ddStatus, took time.Duration, size int, err error) {
	req, _ := http.NewRequest(http.MethodGet, d.url("gateway")+"/status", nil)
	req.Header.Set("Authorization", ddSecret)
	start := time.Now()
	resp, err := localClient.Do(req)
	if err != nil {
		return st, 0, 0, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	took = time.Since(start)
	if err != nil {
		return st, took, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return st, took, len(b), fmt.Errorf("GET /status: %s: %.200s", resp.Status, b)
	}
	return st, took, len(b), json.Unmarshal(b, &st)
}

// collect makes dd collect its heap now (GET /debug/pprof/heap?gc=1).
func (d *ddProcess) collect() error {
	body, err := d.pprof("heap?gc=1")
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, body)
	return body.Close()
}

// pprof gets /debug/pprof/<what> from dd's gateway listener, behind the gateway secret; the caller
// closes the body.
func (d *ddProcess) pprof(what string) (io.ReadCloser, error) {
	req, _ := http.NewRequest(http.MethodGet, d.url("gateway")+"/debug/pprof/"+what, nil)
	req.Header.Set("Authorization", ddSecret)
	resp, err := localClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		resp.Body.Close()
		return nil, fmt.Errorf("GET /debug/pprof/%s: %s: %s", what, resp.Status, b)
	}
	return resp.Body, nil
}

// ddEnv is the environment of a dd run against sim delivering to recv.
func ddEnv(sim *simProcess, recv *Receiver, storeDir string, shards int, intents string, extra []string) []string {
	env := []string{
		"DD_DISCORD__TOKEN=" + simToken, "DD_DISCORD__API_URL=" + sim.url + "/api",
		"DD_SECRET=" + ddSecret, "DD_STORE__PATH=" + storeDir,
		"DD_REST__LISTEN=127.0.0.1:0", "DD_GATEWAY__LISTEN=127.0.0.1:0", "DD_CACHE__LISTEN=127.0.0.1:0",
		"DD_EVENTS__URLS=" + recv.URL(), "DD_EVENTS__SECRET=" + eventsSecret,
		"DD_GATEWAY__TOTAL_SHARDS=" + strconv.Itoa(shards), "DD_GATEWAY__INTENTS=" + intents,
		"DD_LOG__LEVEL=info", "DD_LOG__FORMAT=json",
	}
	return append(env, extra...)
}

// ---- HTTP helpers ----

func getJSON(url, auth string, v any) error {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := localClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func postJSON(url string, body []byte) error {
	resp, err := localClient.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: %s: %s", url, resp.Status, b)
	}
	return nil
}

// beginRun resolves a run's binaries, makes its folder (runDir) and returns, to defer with the run's error, what ends it:
// when ctx ended from outside, ctx's error replaces the run's (the processes were killed, and whatever
// failed next says less); a failed run's error names the folder, whose logs are kept.
func beginRun(ctx context.Context, b *Binaries, parent, name string, keep bool) (dir string, end func(err *error), err error) {
	if err := b.resolve(); err != nil {
		return "", nil, err
	}
	dir, cleanup, err := runDir(parent, name)
	if err != nil {
		return "", nil, err
	}
	return dir, func(err *error) {
		if *err != nil && ctx.Err() != nil {
			*err = ctx.Err()
		}
		if *err != nil {
			*err = fmt.Errorf("%w (logs in %s)", *err, dir)
		}
		cleanup(keep || *err != nil)
	}, nil
}

// runDir makes the directory of one run's logs and store: under parent if set, else a new temporary
// directory. The returned cleanup removes it unless keep.
func runDir(parent, name string) (string, func(keep bool), error) {
	if parent != "" {
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return "", nil, err
		}
	}
	dir, err := os.MkdirTemp(parent, "ddload-"+name+"-")
	if err != nil {
		return "", nil, err
	}
	return dir, func(keep bool) {
		if !keep {
			_ = os.RemoveAll(dir)
		}
	}, nil
}
