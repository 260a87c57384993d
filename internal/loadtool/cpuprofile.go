package loadtool

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
)

// cpuProfile records dd's CPU profile while a run's load lasts. Go's /debug/pprof/profile only profiles
// for a number of seconds given up front, and a run does not know when its drain will end, so it asks
// for one second at a time, back to back (a few milliseconds lost between them), and merges the chunks
// into one profile with `go tool pprof -proto`.
type cpuProfile struct {
	dd     *ddProcess
	dir    string // where the chunks go
	cancel context.CancelFunc
	done   chan struct{}
	chunks []string // written by the fetching goroutine until done is closed
	err    error
}

// startCPUProfile starts fetching dd's CPU profile into chunks under dir.
func startCPUProfile(ctx context.Context, dd *ddProcess, dir string) *cpuProfile {
	ctx, cancel := context.WithCancel(ctx)
	p := &cpuProfile{dd: dd, dir: dir, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for i := 1; ctx.Err() == nil; i++ {
			path := filepath.Join(dir, fmt.Sprintf("dd.cpu.%03d.pb.gz", i))
			// Not tied to ctx: a chunk asked for is let finish, else dd's profile would be lost with it.
			if err := p.fetch(path); err != nil {
				p.err = err
				return
			}
			p.chunks = append(p.chunks, path)
		}
	}()
	return p
}

func (p *cpuProfile) fetch(path string) error {
	body, err := p.dd.pprof("profile?seconds=1")
	if err != nil {
		return err
	}
	defer body.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// finish stops after the chunk in flight and writes the merged profile to out.
func (p *cpuProfile) finish(ctx context.Context, out string) error {
	p.cancel()
	<-p.done
	if p.err != nil {
		return fmt.Errorf("dd's CPU profile: %w", p.err)
	}
	if len(p.chunks) == 0 {
		return fmt.Errorf("dd's CPU profile: no chunk fetched")
	}
	args := append([]string{"tool", "pprof", "-proto", "-output", out}, p.chunks...)
	if b, err := exec.CommandContext(ctx, "go", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("merging dd's CPU profile (go %s): %w\n%s", strings.Join(args, " "), err, b)
	}
	return nil
}

// profileSelf profiles this process (the receiver, mostly) into path until the returned stop; an error
// if it cannot (another profile running, the file not writable).
func profileSelf(path string) (stop func() error, err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}
