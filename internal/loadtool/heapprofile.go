package loadtool

import (
	"fmt"
	"io"
	"os"
	"time"
)

// heapProfile keeps dd's memory as it was when a run's queue was deepest: the heap profile (for `go tool
// pprof`), the same in text with the runtime's MemStats at its end (<path>.txt: live heap, GC goal, what
// the runtime holds from the OS), and /proc/<pid>/smaps_rollup (<path>.smaps: anonymous against
// file-mapped memory). It fetches them again at each new depth maximum, at most once a second, and at
// the first sample after the maximum, so that the files left are from the deepest sample or the one
// just after it. The heap profile is of the last collection: it is what was live, not the garbage.
type heapProfile struct {
	dd      *ddProcess
	path    string
	logf    func(string, ...any)
	max     int64     // deepest queue seen
	fetched int64     // the deepest queue seen when the files were written
	last    time.Time // when they were written
}

// newHeapProfile returns nil when path is empty; a nil heapProfile's sample does nothing.
func newHeapProfile(dd *ddProcess, path string, logf func(string, ...any)) *heapProfile {
	if path == "" {
		return nil
	}
	return &heapProfile{dd: dd, path: path, logf: logf}
}

// sample is given the queue's depth at each reading.
func (h *heapProfile) sample(depth int64) error {
	if h == nil {
		return nil
	}
	deeper := depth > h.max
	h.max = max(h.max, depth)
	switch {
	case deeper && time.Since(h.last) < time.Second: // fetched at the next maximum or just after it
		return nil
	case !deeper && h.fetched == h.max: // this maximum's files are written
		return nil
	}
	// A new maximum, or the sample just past one that was not fetched: the closest to it there will be.
	h.last, h.fetched = time.Now(), h.max
	if err := h.fetch("", h.path); err != nil {
		return err
	}
	if err := h.fetch("debug=1", h.path+".txt"); err != nil {
		return err
	}
	smaps, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", h.dd.pid()))
	if err != nil {
		return err
	}
	h.logf("firehose: dd's heap at queue depth %d in %s (.txt, .smaps)", depth, h.path)
	return os.WriteFile(h.path+".smaps", smaps, 0o644)
}

func (h *heapProfile) fetch(query, path string) error {
	body, err := h.dd.pprof("heap?" + query)
	if err != nil {
		return err
	}
	defer body.Close()
	b, err := io.ReadAll(body)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
