package process

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ddhq/dd/internal/diskspace"
	"github.com/ddhq/dd/internal/testkit"
	"github.com/ddhq/dd/internal/tmpfstest"
	"github.com/ddhq/dd/sim/botsim"
	"github.com/ddhq/dd/sim/discordsim"
)

// logWatch keeps the messages of a dd process's log lines (after waitListening), for tests that look
// for one.
type logWatch struct {
	mu   sync.Mutex
	msgs []string
}

func watchLog(p *ddProcess) *logWatch {
	w := &logWatch{}
	go func() {
		for {
			select {
			case m := <-p.Lines:
				msg, _ := m["msg"].(string)
				w.mu.Lock()
				w.msgs = append(w.msgs, msg)
				w.mu.Unlock()
			case <-p.Done:
				return
			}
		}
	}()
	return w
}

func (w *logWatch) saw(prefix string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, m := range w.msgs {
		if strings.HasPrefix(m, prefix) {
			return true
		}
	}
	return false
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The full disk, for real: the store on a 20 MB tmpfs, the bot down, a firehose. dd does not
// crash: it stops taking events before Badger could fault, says so in its log, in /readyz (503, naming
// store.path) and in dd_disk_full, and its shards keep their sessions (no identify). Once the bot is
// back and has emptied the queue, dd resumes by itself (the deleted events' space comes back), and the
// bot gets every event exactly once. Then dd killed and restarted
// on a disk filled to the last byte exits 1 saying what to free (no SIGBUS); on a disk short of space but
// not full it starts, not ready, and resumes by itself when space is freed, still without an identify.
func TestFullDiskStopsEventsWithoutCrashAndResumesBySelf(t *testing.T) {
	mnt := tmpfstest.Mount(t, 20<<20)
	filler := filepath.Join(mnt, "filler")
	tmpfstest.Fill(t, filler, 5<<20)
	sim := discordsim.New(discordsim.Config{Guilds: 20, MaxConcurrency: 16, Tokens: []string{"tok-diskfull-0123456789"}})
	if err := sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	bot := botsim.New("bot-secret-0123456789")
	defer bot.Close()
	bot.SetDown(true)
	dir := t.TempDir()
	data := filepath.Join(mnt, "data")
	env := []string{"DD_DISCORD__TOKEN=tok-diskfull-0123456789", "DD_DISCORD__API_URL=" + sim.APIURL(),
		"DD_STORE__PATH=" + data, "DD_EVENTS__URLS=" + bot.URL(), "DD_EVENTS__SECRET=bot-secret-0123456789",
		"DD_GATEWAY__LISTEN=127.0.0.1:0", "DD_GATEWAY__TOTAL_SHARDS=2", "DD_GATEWAY__DEDUP_MESSAGE_UPDATES=false"}
	connected := sessionsConnected(sim, 2)
	p := startDD(t, dir, env, "--role=gateway")
	base := "http://" + p.waitListening(t, 1)["gateway"]
	logs := watchLog(p)
	testkit.Eventually(t, 15*time.Second, "2 shards connected", connected)
	ready := func() bool { code, _ := get(t, base+"/readyz"); return code == 200 }
	testkit.Eventually(t, 10*time.Second, "/readyz 200", ready)
	diskFull := func(v string) func() bool {
		return func() bool {
			_, body := get(t, base+"/metrics")
			return strings.Contains(body, `dd_disk_full{key="store.path"} `+v)
		}
	}

	resumes := func() int { return len(sim.GatewayStats().Resumes) }
	// 1. The firehose fills the disk while the bot is down.
	resumesBefore := resumes()
	stop := sim.StartFirehose(discordsim.FirehoseOptions{Rate: 1000})
	start := time.Now()
	testkit.Eventually(t, 90*time.Second, "dd_disk_full 1", diskFull("1"))
	full := time.Since(start)
	code, body := get(t, base+"/readyz")
	if code != 503 || !strings.Contains(body, "store.path") || !strings.Contains(body, "free") {
		t.Errorf("/readyz while the disk is full: %d %s; want 503 naming store.path and what to free", code, body)
	}
	testkit.Eventually(t, 5*time.Second, `the log line "disk space low"`, func() bool { return logs.saw("disk space low") })
	resumesAtFull := resumes()
	time.Sleep(5 * time.Second) // the firehose goes on; dd must hold, its shards waiting for space
	stop()
	if n := resumes() - resumesAtFull; n > 2 {
		t.Errorf("%d resumes in 5 s of full disk: the shards reconnect in a loop instead of waiting for space", n)
	}
	if p.Cmd.ProcessState != nil {
		t.Fatalf("dd exited while the disk was full; log:\n%s", p.Log())
	}
	free, _, _ := diskspace.Stat(data)
	t.Logf("disk full after %v of firehose (%d events sent); %s free; %d resumes until full, %d after",
		full.Round(time.Millisecond), sim.GatewayStats().EventsDispatched, diskspace.MB(free),
		resumesAtFull-resumesBefore, resumes()-resumesAtFull)

	// 2. The bot comes back: it empties the queue, and that frees the space. Nobody frees a file, yet
	// dd resumes by itself, and the bot gets everything once.
	bot.SetDown(false)
	testkit.Eventually(t, 30*time.Second, "dd_disk_full 0 once the bot emptied the queue", diskFull("0"))
	testkit.Eventually(t, 10*time.Second, `the log line "disk space back"`, func() bool { return logs.saw("disk space back") })
	testkit.Eventually(t, 60*time.Second, "every event at the bot", func() bool {
		for _, s := range sim.Sessions() {
			if all, _ := bot.Complete(s.Shard, s.Seq); !all {
				return false
			}
		}
		return len(sim.Sessions()) == 2
	})
	testkit.Eventually(t, 30*time.Second, "/readyz 200 again", ready)
	bs := bot.Stats()
	t.Logf("bot received %d events, %d duplicates", bs.Events, bs.Duplicates)
	if bs.Duplicates != 0 {
		t.Errorf("%d events delivered twice; want exactly once", bs.Duplicates)
	}
	for _, s := range sim.Sessions() {
		if _, ordered := bot.Complete(s.Shard, s.Seq); !ordered {
			t.Errorf("shard %d: events out of order", s.Shard)
		}
	}

	// 3. Killed, and the disk filled to the last byte: dd exits 1 and says what to free.
	_ = p.Cmd.Process.Signal(syscall.SIGKILL)
	p.wait(t)
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	tmpfstest.Fill(t, filler, 1<<30)
	code2, _, stderr := runDD(t, dir, env, "--role=gateway")
	if code2 != 1 || !strings.Contains(stderr, "free at least") || !strings.Contains(stderr, "store.path") {
		t.Fatalf("start on a full disk: exit %d, want 1 saying what to free on store.path; stderr:\n%s", code2, stderr)
	}
	if strings.Contains(stderr, "SIGBUS") {
		t.Fatalf("start on a full disk faulted:\n%s", stderr)
	}

	// 4. Space short but enough to open: dd starts, not ready, and resumes once space is freed.
	if err := os.Truncate(filler, 0); err != nil {
		t.Fatal(err)
	}
	free, _, _ = diskspace.Stat(data)
	tmpfstest.Fill(t, filler, free-4<<20)
	p = startDD(t, dir, env, "--role=gateway")
	base = "http://" + p.waitListening(t, 1)["gateway"]
	logs = watchLog(p)
	testkit.Eventually(t, 10*time.Second, "dd_disk_full 1 on a disk with 4 MB free", diskFull("1"))
	if code, body := get(t, base+"/readyz"); code != 503 || !strings.Contains(body, "store.path") {
		t.Errorf("/readyz after starting on a low disk: %d %s; want 503 naming store.path", code, body)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "dd_disk_full 0", diskFull("0"))
	testkit.Eventually(t, 20*time.Second, "2 shards resumed", connected)
	testkit.Eventually(t, 20*time.Second, "/readyz 200", ready)
	if n := len(sim.GatewayStats().Identifies); n != 2 {
		t.Errorf("%d identifies; want the first 2 only (a full disk must not cost sessions)", n)
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit %d after SIGTERM; log:\n%s", code, p.Log())
	}
}
