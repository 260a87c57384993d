package process

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ddhq/dd/internal/testkit"
	"github.com/ddhq/dd/sim/discordsim"
)

var ddBinary string

func TestMain(m *testing.M) { testkit.MainWithDD(m, "dd-bin-", &ddBinary) }

// ddProcess is a running dd whose JSON log lines are collected.
type ddProcess struct{ *testkit.DD }

func startDD(t *testing.T, dir string, env []string, args ...string) *ddProcess {
	t.Helper()
	return &ddProcess{testkit.StartDD(t, ddBinary, dir, env, args...)}
}

// sessionsConnected is whether n of sim's Gateway sessions are connected.
func sessionsConnected(sim *discordsim.Server, n int) func() bool {
	return func() bool {
		c := 0
		for _, s := range sim.Sessions() {
			if s.Connected {
				c++
			}
		}
		return c == n
	}
}

// waitListening returns role -> address from the "listening" log lines.
func (p *ddProcess) waitListening(t *testing.T, n int) map[string]string {
	t.Helper()
	addrs := map[string]string{}
	deadline := time.After(20 * time.Second)
	for len(addrs) < n {
		select {
		case m := <-p.Lines:
			if m["msg"] == "listening" {
				addrs[m["role"].(string)] = m["addr"].(string)
			}
		case <-deadline:
			t.Fatalf("dd did not report %d listeners in time; log:\n%s", n, p.Log())
		}
	}
	return addrs
}

func (p *ddProcess) wait(t *testing.T) int {
	t.Helper()
	// The log is read to its end first: Wait closes the pipe, and what dd wrote last (the clean-stop
	// line) could still be in it.
	select {
	case <-p.Done:
	case <-time.After(30 * time.Second):
		t.Fatal("dd did not exit in time")
	}
	_ = p.Cmd.Wait()
	return p.Cmd.ProcessState.ExitCode()
}

func runDD(t *testing.T, dir string, env []string, args ...string) (int, string, string) {
	t.Helper()
	// A dd that should exit by itself gets a minute; a hang fails the test instead of the whole run.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, ddBinary, args...)
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	_ = cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("dd %v did not exit within a minute; stderr:\n%s", args, stderr.String())
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

func TestFlagsAndExitStatuses(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		args       []string
		env        []string
		code       int
		stdout     string
		stderrHint string
	}{
		{[]string{"--version"}, nil, 0, "dd ", ""},
		{[]string{"--help"}, nil, 0, "--check-config", ""},
		{[]string{"-h"}, nil, 0, "--role", ""},
		{[]string{"--role=nope"}, nil, 2, "", `"nope"`},
		{[]string{"--bogus"}, nil, 2, "", "bogus"},
		{[]string{"--config", "missing.toml", "--check-config"}, nil, 2, "", "missing.toml"},
		{[]string{"--role=rest", "--check-config"}, nil, 2, "", "discord.token"},
		{[]string{"--role=cache", "--check-config"}, nil, 0, "[cache]", ""},
		{[]string{"--role=all", "--check-config"}, []string{"DD_DISCORD__TOKEN=tok-1234567890abcdef"}, 0, "token = '********'", ""},
	}
	for _, c := range cases {
		code, stdout, stderr := runDD(t, dir, c.env, c.args...)
		if code != c.code || !strings.Contains(stdout, c.stdout) || !strings.Contains(stderr, c.stderrHint) {
			t.Errorf("dd %v: exit %d (want %d)\nstdout %q (want %q)\nstderr %q (want %q)", c.args, code, c.code, stdout, c.stdout, stderr, c.stderrHint)
		}
	}
}

func TestCheckConfigNeverPrintsSecrets(t *testing.T) {
	dir := t.TempDir()
	cfg := "secret = \"top-secret-value\"\n[discord]\ntoken = \"MTA.token-value.xyz\"\n" +
		"api_url = \"https://bot:api-url-password@discord.internal/api\"\n" +
		"[events]\nsecret = \"bot-secret-value\"\nurls = [\"http://bot:events-url-password@127.0.0.1:9000/\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "dd.toml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runDD(t, dir, nil, "--check-config")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, s := range []string{"top-secret-value", "MTA.token-value.xyz", "bot-secret-value", "api-url-password", "events-url-password"} {
		if strings.Contains(stdout+stderr, s) {
			t.Errorf("--check-config printed secret %q", s)
		}
	}
	for _, want := range []string{"https://bot:xxxxx@discord.internal/api", "http://bot:xxxxx@127.0.0.1:9000/"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("--check-config does not show %q:\n%s", want, stdout)
		}
	}
}

// A secret too short to be one, or a token of the wrong type, is a config error (exit 2) that names the
// key and never shows the value.
func TestBadSecretsExitTwoWithoutShowingThem(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		env  []string
		file string
		key  string
		val  string
	}{
		{[]string{"DD_SECRET=hunter2"}, "", "config: secret: too short", "hunter2"},
		{[]string{"DD_EVENTS__SECRET=s"}, "", "config: events.secret: too short", ""},
		{[]string{"DD_DISCORD__TOKEN=tok-123"}, "", "config: discord.token: too short", "tok-123"},
		{nil, "[discord]\ntoken = 987654321987654321\n", "discord.token", "987654321"},
	}
	for _, c := range cases {
		args := []string{"--role=all", "--check-config"}
		if c.file != "" {
			p := filepath.Join(dir, "bad.toml")
			if err := os.WriteFile(p, []byte(c.file), 0o600); err != nil {
				t.Fatal(err)
			}
			args = append(args, "--config", p)
		}
		code, stdout, stderr := runDD(t, dir, c.env, args...)
		if code != 2 || !strings.Contains(stderr, c.key) || (c.val != "" && strings.Contains(stdout+stderr, c.val)) {
			t.Errorf("%v %q: exit %d, stderr %q; want 2 naming %q without %q", c.env, c.file, code, stderr, c.key, c.val)
		}
	}
}

// A running dd serves health, readiness and metrics on every role's listener, keeps secrets out of its
// logs, and exits 0 on SIGTERM after closing its store.
func TestServesHealthAndShutsDownCleanly(t *testing.T) {
	dir := t.TempDir()
	token := "MTA1.secret-token-for-logs.x"
	env := []string{
		"DD_DISCORD__TOKEN=" + token, "DD_SECRET=role-secret-abc-0123456789",
		"DD_REST__LISTEN=127.0.0.1:0", "DD_GATEWAY__LISTEN=127.0.0.1:0", "DD_CACHE__LISTEN=127.0.0.1:0",
		"DD_STORE__PATH=" + filepath.Join(dir, "data"), "DD_LOG__LEVEL=debug",
	}
	p := startDD(t, dir, env, "--role=all")
	addrs := p.waitListening(t, 3)
	for role, addr := range addrs {
		for path, want := range map[string]string{"/healthz": "ok", "/readyz": "ready", "/metrics": `dd_build_info{role="all"`} {
			status := 200
			if path == "/readyz" && role == "gateway" {
				// Discord (the default api_url) is out of reach here: the gateway has no shard running.
				status, want = http.StatusServiceUnavailable, "shards are not started"
			}
			resp, err := http.Get("http://" + addr + path)
			if err != nil {
				t.Fatalf("%s %s: %v", role, path, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != status || !strings.Contains(string(body), want) {
				t.Errorf("%s %s: %d %q, want %d containing %q", role, path, resp.StatusCode, body, status, want)
			}
		}
		// Anything else needs the role's secret.
		resp, err := http.Get("http://" + addr + "/status")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s /status without a secret: %d", role, resp.StatusCode)
		}
	}

	// A second dd on the same store is refused with a clear error and exit 1.
	code, _, stderr := runDD(t, dir, append(env, "DD_LOG__FORMAT=console"), "--role=gateway")
	if code != 1 || !strings.Contains(stderr, "another dd") {
		t.Errorf("second dd on the same store: exit %d, stderr %q; want 1 and a message about another dd", code, stderr)
	}

	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit %d after SIGTERM, want 0; log:\n%s", code, p.Log())
	}
	logs := p.Log()
	if !strings.Contains(logs, "stopped cleanly") {
		t.Errorf("no clean-stop line in log:\n%s", logs)
	}
	if strings.Contains(logs, token) || strings.Contains(logs, "role-secret-abc-0123456789") {
		t.Errorf("log shows a secret:\n%s", logs)
	}
	// The store was closed: a new process can open it at once.
	p2 := startDD(t, dir, env, "--role=cache")
	p2.waitListening(t, 1)
	_ = p2.Cmd.Process.Signal(syscall.SIGINT)
	if code := p2.wait(t); code != 0 {
		t.Fatalf("restart on the same store: exit %d; log:\n%s", code, p2.Log())
	}
}

func TestListenConflictExitsOne(t *testing.T) {
	dir := t.TempDir()
	env := []string{"DD_CACHE__LISTEN=127.0.0.1:0", "DD_STORE__PATH=" + filepath.Join(dir, "d1")}
	p := startDD(t, dir, env, "--role=cache")
	addr := p.waitListening(t, 1)["cache"]
	code, _, stderr := runDD(t, dir, []string{"DD_CACHE__LISTEN=" + addr, "DD_STORE__PATH=" + filepath.Join(dir, "d2")}, "--role=cache")
	if code != 1 || !strings.Contains(stderr, "cache.listen") {
		t.Fatalf("port in use: exit %d stderr %q; want 1 naming cache.listen", code, stderr)
	}
}
