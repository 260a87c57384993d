package loadtool

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// process is a child started in its own process group, so that it and anything it starts can be
// ended together; its output goes to a log file in the run's directory, and the last lines are kept
// for error messages.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has exited and its output is read
	err     error         // Wait's answer, set before done is closed

	mu   sync.Mutex
	tail []string
}

// startProcess runs path with args and env (nothing inherited but PATH and HOME) in dir. onLine, if
// set, sees each line of its output (stdout and stderr together) from one goroutine. The process is
// killed when ctx ends; stop ends it earlier.
func startProcess(ctx context.Context, name, dir, path string, args, env []string, onLine func(string)) (*process, error) {
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	// Own process group, so that a kill reaches everything it started; and killed if this process dies
	// without cleaning up (Pdeathsig is per thread in Linux, which is good enough for a load tool).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s (%s): %w", name, path, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	read := make(chan struct{})
	go func() {
		defer close(read)
		defer logFile.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 4<<20)
		w := bufio.NewWriterSize(logFile, 64*1024)
		defer w.Flush()
		for sc.Scan() {
			line := sc.Text()
			w.WriteString(line)
			w.WriteByte('\n')
			p.mu.Lock()
			p.tail = append(p.tail, line)
			if len(p.tail) > 40 {
				p.tail = p.tail[len(p.tail)-20:]
			}
			p.mu.Unlock()
			if onLine != nil {
				onLine(line)
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		p.err = cmd.Wait()
		pw.Close()
		<-read
		close(p.done)
	}()
	go func() {
		select {
		case <-ctx.Done():
			p.kill()
		case <-p.done:
		}
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL to the process group.
func (p *process) kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
}

// stop asks the process group to end (SIGTERM), and kills it after grace.
func (p *process) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.kill()
		<-p.done
	}
	// Anything the process started and left behind in its group goes too.
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
}

// lastLines is the end of the process's output, for error messages.
func (p *process) lastLines() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	tail := p.tail
	if len(tail) > 12 {
		tail = tail[len(tail)-12:]
	}
	return strings.Join(tail, "\n")
}

// exitError describes an unexpected exit.
func (p *process) exitError() error {
	return fmt.Errorf("%s exited (%v); its log is %s, ending:\n%s", p.name, p.err, p.logPath, p.lastLines())
}

// errStopped is returned by waitFor when a watched process exits.
var errStopped = errors.New("process exited")

// waitFor polls cond every interval until it holds, ctx ends, timeout passes, or one of procs exits.
func waitFor(ctx context.Context, what string, timeout, interval time.Duration, procs []*process, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		for _, p := range procs {
			if p.exited() {
				return fmt.Errorf("waiting for %s: %w: %w", what, errStopped, p.exitError())
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-tick.C:
		}
	}
}
