package natsproc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// middleEnv makes the test binary a parent that starts a NATS child, prints the child's PID once it
// listens, and exits without stopping it: the child must then go by itself.
const middleEnv = "DD_NATSPROC_TEST_MIDDLE"

func TestMain(m *testing.M) {
	if code, ok := RunChild(); ok {
		os.Exit(code)
	}
	if dir := os.Getenv(middleEnv); dir != "" {
		os.Exit(middle(dir))
	}
	os.Exit(m.Run())
}

func middle(dir string) int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cmd := start(self, dir)
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := WaitURL(ctx, filepath.Join(dir, "url"), nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		cmd.Process.Kill()
		return 1
	}
	fmt.Println(cmd.Process.Pid)
	return 0
}

// start is the command that runs self as a NATS child alone, its files in dir, its output in dir/log.
func start(self, dir string) *exec.Cmd {
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), Config{Name: "t", StoreDir: filepath.Join(dir, "store"), URLFile: filepath.Join(dir, "url")}.Env())
	if log, err := os.Create(filepath.Join(dir, "log")); err == nil {
		cmd.Stdout, cmd.Stderr = log, log // closed when this process exits
	}
	return cmd
}

func logOf(dir string) string {
	b, _ := os.ReadFile(filepath.Join(dir, "log"))
	return string(b)
}

// A child serves JetStream at the URL it wrote, and is gone, its port closed, after SIGKILL.
func TestChildServesJetStreamUntilKilled(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := start(self, dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url, err := WaitURL(ctx, filepath.Join(dir, "url"), exited)
	if err != nil {
		t.Fatalf("%v\n%s", err, logOf(dir))
	}
	nc, err := natsgo.Connect(url, natsgo.MaxReconnects(0))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t"}}); err != nil {
		t.Fatalf("JetStream: %v", err)
	}
	if _, err := js.Publish(ctx, "t", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "store", "jetstream")); err != nil {
		t.Errorf("no JetStream store in the child's store dir: %v", err)
	}

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatal("the child is still running 5s after SIGKILL")
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Errorf("the child ended with %v; want SIGKILL", cmd.ProcessState)
	}
	if c, err := net.DialTimeout("tcp", strings.TrimPrefix(url, "nats://"), time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after the child was killed", url)
	}
}

// A child whose parent exited without stopping it shuts down by itself.
func TestChildGoesWithItsParent(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	mid := exec.Command(self)
	mid.Env = append(os.Environ(), middleEnv+"="+dir)
	out, err := mid.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("middle process: %v\n%s\nchild's log:\n%s", err, ee.Stderr, logOf(dir))
		}
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("middle process printed %q", out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "url"))
	if err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimPrefix(strings.TrimSpace(string(b)), "nats://")
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if !running(pid) {
			break
		}
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the child (pid %d) still runs 5s after its parent exited; its log:\n%s", pid, logOf(dir))
		}
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after the child's parent exited", addr)
	}
	if log := logOf(dir); !strings.Contains(log, "is gone, shutting down") {
		t.Errorf("the child's log does not say it saw its parent go:\n%s", log)
	}
}

// running is whether pid is a live process: not gone, and not a zombie waiting for a (sub)reaper.
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses, which may itself hold ") ".
	s := string(b)
	i := strings.LastIndex(s, ") ")
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z'
}
