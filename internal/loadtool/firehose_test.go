package loadtool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildBinaries builds dd and the simulator for this package's tests.
func buildBinaries(t *testing.T) Binaries {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b, err := Build(ctx, "../..", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func gone(pid int) bool { return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) }

// scenarioTest runs a scenario through the real binaries (skipped under -short): they are built, ctx
// ends after the test's timeout, and what the scenario logs (logf) is shown when it fails.
type scenarioTest struct {
	bins Binaries
	ctx  context.Context
	logs strings.Builder
}

func newScenarioTest(t *testing.T, timeout time.Duration) *scenarioTest {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs dd and the simulator as processes")
	}
	s := &scenarioTest{bins: buildBinaries(t)}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	s.ctx = ctx
	return s
}

func (s *scenarioTest) logf(f string, _ ...any) { s.logs.WriteString(f + "\n") }

// A short firehose through the real binaries: every event generated reaches the receiver exactly once,
// the figures are filled in, and no process outlives the run, whether it ends normally or by its context.
func TestFirehoseFromSeparateProcessesDeliversEveryEventOnce(t *testing.T) {
	s := newScenarioTest(t, 90*time.Second)
	prof := filepath.Join(t.TempDir(), "dd.cpu")
	simProf := filepath.Join(t.TempDir(), "sim.cpu")
	res, err := RunFirehose(s.ctx, FirehoseOptions{Binaries: s.bins, Shards: 2, Rate: 500, Duration: 2 * time.Second,
		BatchMax: 10, Guilds: 8, Settle: 200 * time.Millisecond, DrainTimeout: time.Minute, Dir: t.TempDir(), Logf: s.logf,
		CPUProfile: prof, SimCPUProfile: simProf})
	if err != nil {
		t.Fatalf("%v\n%s", err, s.logs.String())
	}
	// dd's profile, merged from its one-second pieces, spans the firehose (2 s) and the drain, and is
	// dd's. The receiver's is beside it.
	out, err := exec.Command("go", "tool", "pprof", "-top", "-cum", prof).CombinedOutput()
	var secs float64
	if i := strings.Index(string(out), "Duration: "); i >= 0 {
		_, _ = fmt.Sscanf(string(out[i:]), "Duration: %fs", &secs)
	}
	if err != nil || !strings.Contains(string(out), "Type: cpu") || !strings.Contains(string(out), "github.com/ddhq/dd/") || secs < 2 {
		t.Errorf("go tool pprof -top %s (%.2fs, want at least the firehose's 2s): %v\n%.2000s", prof, secs, err, out)
	}
	if st, err := os.Stat(prof + ".ddload"); err != nil || st.Size() == 0 {
		t.Errorf("the receiver's profile: %v", err)
	}
	// The simulator's, written as it was stopped, covers its whole life (the firehose's 2 s at least) and
	// is the simulator's.
	out, err = exec.Command("go", "tool", "pprof", "-top", simProf).CombinedOutput()
	secs = 0
	if i := strings.Index(string(out), "Duration: "); i >= 0 {
		_, _ = fmt.Sscanf(string(out[i:]), "Duration: %fs", &secs)
	}
	if err != nil || !strings.Contains(string(out), "Type: cpu") || !strings.Contains(string(out), "discordsim") || secs < 2 {
		t.Errorf("go tool pprof -top %s (%.2fs, want at least the firehose's 2s): %v\n%.2000s", simProf, secs, err, out)
	}
	if res.Created != 1000 || res.Dispatched != 1000 || res.Received != 1000 || res.Delivered != 1000 {
		t.Errorf("created %d, dispatched %d, received by dd %d, delivered %d: want 1000 each",
			res.Created, res.Dispatched, res.Received, res.Delivered)
	}
	if res.Lost != 0 || res.Duplicates != 0 || res.DuplicateIDs != 0 || res.Unexpected != 0 || res.OutOfOrder != 0 ||
		res.BadAuth != 0 || res.Invalid != 0 {
		t.Errorf("not exactly once: %+v (first invalid %q)", res, res.Receipt.FirstInvalid)
	}
	if res.FirehoseRate <= 0 || res.IngestRate <= 0 || res.DeliveryRate <= 0 || len(res.Series) == 0 {
		t.Errorf("rates or series missing: %+v", res)
	}
	if res.Machine.Cores < 1 || res.Machine.BusyCores <= 0 || res.Machine.Seconds < 2 {
		t.Errorf("machine figures missing: %+v", res.Machine)
	}
	if res.DD.IdleRSS <= 0 || res.DD.PeakRSS < res.DD.IdleRSS || res.DD.CPUSeconds <= 0 || res.Sim.PeakRSS <= 0 {
		t.Errorf("process figures missing: dd %+v, simulator %+v", res.DD, res.Sim)
	}
	if _, err := json.Marshal(res); err != nil {
		t.Error(err)
	}
	if !gone(res.DDPID) || !gone(res.SimPID) {
		t.Errorf("dd (pid %d) or the simulator (pid %d) outlived the run", res.DDPID, res.SimPID)
	}

	// Ended by its context in the middle of a firehose: an error, and no process left.
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	started := make(chan struct{}, 1)
	go func() {
		select {
		case <-started:
			time.Sleep(300 * time.Millisecond)
			cancel2()
		case <-ctx2.Done():
		}
	}()
	res, err = RunFirehose(ctx2, FirehoseOptions{Binaries: s.bins, Shards: 1, Rate: 200, Duration: time.Minute, Guilds: 2,
		Settle: 100 * time.Millisecond, Dir: t.TempDir(), Logf: func(f string, a ...any) {
			if strings.Contains(f, "events at") {
				started <- struct{}{}
			}
		}})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("a cancelled run returned %v, want context.Canceled", err)
	}
	if res.DDPID == 0 || !gone(res.DDPID) || !gone(res.SimPID) {
		t.Errorf("after cancellation dd (pid %d) or the simulator (pid %d) is still there", res.DDPID, res.SimPID)
	}
}
