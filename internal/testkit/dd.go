package testkit

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// MainWithDD is the TestMain of tests that run dd processes: it builds dd from this module into a new
// temporary directory (named after prefix), sets *bin to the binary, runs the tests, removes the
// directory and exits with the tests' code.
func MainWithDD(m *testing.M, prefix string, bin *string) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		panic(err)
	}
	*bin = filepath.Join(dir, "dd")
	if err := BuildDD(*bin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// BuildDD builds dd from this module into the file bin.
func BuildDD(bin string) error {
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/ddhq/dd").CombinedOutput(); err != nil {
		return fmt.Errorf("building dd: %v\n%s", err, out)
	}
	return nil
}

// DD is a running dd process whose log (its stderr) is collected: all of it as text (Log), and the
// lines that are JSON also on Lines, for a test that waits for one.
type DD struct {
	Cmd   *exec.Cmd
	Lines chan map[string]any // JSON log lines; a line is dropped while 1000 wait unread
	Done  chan struct{}       // closed once the log ended (the process exited)

	mu  sync.Mutex
	log strings.Builder
}

// StartDD runs bin with args in dir, with PATH and env as its environment. The process is killed when
// the test ends.
func StartDD(t testing.TB, bin, dir string, env []string, args ...string) *DD {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &DD{Cmd: cmd, Lines: make(chan map[string]any, 1000), Done: make(chan struct{})}
	go func() {
		defer close(p.Done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.log.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				select {
				case p.Lines <- m:
				default:
				}
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.Done
		_ = cmd.Wait()
	})
	return p
}

// Log is what the process logged so far.
func (p *DD) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// Exited says whether the process has exited (its log ended).
func (p *DD) Exited() bool {
	select {
	case <-p.Done:
		return true
	default:
		return false
	}
}

// Kill kills the process with SIGKILL (nothing of its runs after) and waits for its end.
func (p *DD) Kill() {
	_ = p.Cmd.Process.Signal(syscall.SIGKILL)
	<-p.Done
	_ = p.Cmd.Wait()
}
