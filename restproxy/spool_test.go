package restproxy_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ddhq/dd/restproxy"
	"github.com/ddhq/dd/sim/discordsim"
)

// fullSpoolDir returns a directory whose writes fail for lack of space: a 64 KiB tmpfs where the test may
// mount one (root, as in CI), else a directory removed after the proxy was configured with it (the
// proxy then cannot create its spool file: still dd's trouble, not the caller's).
func fullSpoolDir(t *testing.T) (dir string, remove bool) {
	dir = filepath.Join(t.TempDir(), "spool")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Logf("no tmpfs (%v: %s); the spool directory is removed instead", err, bytes.TrimSpace(out))
		return dir, true
	}
	t.Cleanup(func() { _ = exec.Command("umount", dir).Run() })
	return dir, false
}

// A spool directory that cannot take a large body is dd's fault: 507, logged at Error, counted as
// "spool", never the caller's 400.
func TestFullSpoolDirIsDdsFaultNotTheCallers(t *testing.T) {
	dir, remove := fullSpoolDir(t)
	core, logs := observer.New(zapcore.InfoLevel)
	e := newEnv(t, discordsim.Config{}, func(o *restproxy.Options) {
		o.SpoolDir = dir
		o.MemoryBody = 16 << 10
		o.Logger = zap.New(core)
	})
	if remove {
		if err := os.Remove(dir); err != nil {
			t.Fatal(err)
		}
	}
	// 256 KiB: over the 16 KiB kept in memory, over the 64 KiB tmpfs.
	body := `{"content":"` + strings.Repeat("x", 256<<10) + `"}`
	r := e.do(t, "POST", "/api/v10/channels/"+e.channel(0, 0)+"/messages", body,
		"Authorization", testSecret, "Content-Type", "application/json")
	msg := r.ddError(t, 507)
	if !strings.Contains(msg, "spool_dir") {
		t.Errorf("507 says %q; want it to name rest.spool_dir", msg)
	}
	if n := e.metric(t, "dd_rest_refused_total", "reason", "spool"); n != 1 {
		t.Errorf(`dd_rest_refused_total{reason="spool"} = %v, want 1`, n)
	}
	if n := e.metric(t, "dd_rest_refused_total", "reason", "bad_request"); n != 0 {
		t.Errorf(`dd_rest_refused_total{reason="bad_request"} = %v, want 0: the caller did nothing wrong`, n)
	}
	errs := logs.FilterLevelExact(zapcore.ErrorLevel).FilterMessageSnippet("spool").All()
	if len(errs) != 1 {
		t.Errorf("want one Error line about the spool, got %d (all: %v)", len(errs), logs.All())
	}
	if n := len(e.sim.RESTRequests()); n != 0 {
		t.Errorf("%d requests reached Discord; a body dd could not store must not be forwarded", n)
	}
}
