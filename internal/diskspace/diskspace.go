// Package diskspace watches the free space of the filesystem that holds a directory, so that dd refuses
// new writes while space is short instead of running out: Badger maps its files into memory, and a write
// into a mapped file on a full filesystem kills the process with SIGBUS, which Go cannot recover from.
//
// A Watcher is low while the free space is under its reserve, and stays low until the free space is back
// over a higher mark (so it does not flap). It says so once in the log on each change, in its Err (for
// /readyz), and in the metrics dd_disk_free_bytes, dd_disk_reserve_bytes and dd_disk_full, labelled with
// the config key that names the directory. It does not refuse anything itself: its users do.
package diskspace

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// ErrUnsupported is returned by Stat where the platform cannot tell free space.
var ErrUnsupported = errors.New("diskspace: free space cannot be measured on this platform")

// Options configure Start.
type Options struct {
	// Dir is a directory on the filesystem to watch.
	Dir string
	// Key is the config key that names Dir ("store.path"), for messages and the metrics' label.
	Key string
	// Reserve: below this many free bytes the filesystem is low.
	Reserve int64
	// Resume: a low filesystem is back once this many bytes are free. Default Reserve + Reserve/8 (at
	// least 1 MiB more).
	Resume int64
	// Interval between checks besides those users ask for. Default 1s.
	Interval time.Duration
	// Refused says what is refused while low, for the log ("new events are refused").
	Refused    string
	Logger     *zap.Logger
	Registerer prometheus.Registerer
}

// Watcher watches one filesystem. Its methods are safe for concurrent use.
type Watcher struct {
	o    Options
	log  *zap.Logger
	free atomic.Int64

	mu      sync.Mutex // guards low's changes and changed
	low     atomic.Bool
	changed chan struct{} // closed and replaced when low changes

	stop chan struct{}
	done chan struct{}
}

// Stat returns the bytes available to dd and the size of the filesystem holding dir.
func Stat(dir string) (free, total int64, err error) { return stat(dir) }

// Start measures the filesystem once (an error if it cannot) and then every Interval until Close.
func Start(o Options) (*Watcher, error) {
	if o.Resume < o.Reserve {
		o.Resume = o.Reserve + max(o.Reserve/8, 1<<20)
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Refused == "" {
		o.Refused = "new writes are refused"
	}
	w := &Watcher{o: o, log: o.Logger, changed: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	if _, err := w.Check(); err != nil {
		return nil, err
	}
	if o.Registerer != nil {
		labels := prometheus.Labels{"key": o.Key}
		err := errors.Join(
			o.Registerer.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "dd_disk_free_bytes", ConstLabels: labels,
				Help: "Bytes free on the filesystem of a directory dd writes to (key: the config key naming it)."},
				func() float64 { return float64(w.free.Load()) })),
			o.Registerer.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "dd_disk_reserve_bytes", ConstLabels: labels,
				Help: "Free bytes dd keeps on that filesystem: below them it refuses new writes."},
				func() float64 { return float64(o.Reserve) })),
			o.Registerer.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "dd_disk_full", ConstLabels: labels,
				Help: "1 while free space is under the reserve and dd refuses new writes there, else 0."},
				func() float64 {
					if w.low.Load() {
						return 1
					}
					return 0
				})))
		if err != nil {
			return nil, fmt.Errorf("diskspace: metrics for %s: %w", o.Key, err)
		}
	}
	go w.run()
	return w, nil
}

func (w *Watcher) run() {
	defer close(w.done)
	t := time.NewTicker(w.o.Interval)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
			if _, err := w.Check(); err != nil {
				w.log.Warn("cannot measure free disk space", zap.String("key", w.o.Key), zap.Error(err))
			}
		}
	}
}

// Close stops the periodic checks.
func (w *Watcher) Close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// Check measures the free space now (one statfs, about a microsecond) and updates the state. It
// returns the free bytes.
func (w *Watcher) Check() (int64, error) {
	free, _, err := stat(w.o.Dir)
	if err != nil {
		if errors.Is(err, ErrUnsupported) {
			w.free.Store(-1)
			return -1, nil
		}
		return 0, fmt.Errorf("diskspace: %s (%s): %w", w.o.Dir, w.o.Key, err)
	}
	w.free.Store(free)
	low := w.low.Load()
	switch {
	case !low && free < w.o.Reserve:
		w.set(true, free)
	case low && free >= w.o.Resume:
		w.set(false, free)
	}
	return free, nil
}

func (w *Watcher) set(low bool, free int64) {
	w.mu.Lock()
	if w.low.Load() == low {
		w.mu.Unlock()
		return
	}
	w.low.Store(low)
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
	if low {
		w.log.Error("disk space low: "+w.o.Refused+" until space is freed", zap.String("key", w.o.Key),
			zap.String("path", w.o.Dir), zap.Int64("free_bytes", free), zap.Int64("reserve_bytes", w.o.Reserve),
			zap.String("what_to_do", w.advice(free)))
		return
	}
	w.log.Info("disk space back: writes resume", zap.String("key", w.o.Key), zap.String("path", w.o.Dir),
		zap.Int64("free_bytes", free))
}

func (w *Watcher) advice(free int64) string {
	return fmt.Sprintf("free %s on the filesystem of %s (%s), or grow it: dd resumes by itself once %s are free",
		MB(w.o.Resume-free), w.o.Dir, w.o.Key, MB(w.o.Resume))
}

// Low reports whether the filesystem is low, and returns a channel closed when that changes.
func (w *Watcher) Low() (low bool, changed <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.low.Load(), w.changed
}

// IsLow reports whether the filesystem is low, without measuring.
func (w *Watcher) IsLow() bool { return w.low.Load() }

// Free is the free space measured last (-1 where it cannot be measured).
func (w *Watcher) Free() int64 { return w.free.Load() }

// Reserve is the free space below which the filesystem is low.
func (w *Watcher) Reserve() int64 { return w.o.Reserve }

// Err is nil while the filesystem is not low, and otherwise says what is refused and what to do.
func (w *Watcher) Err() error {
	if !w.low.Load() {
		return nil
	}
	free := w.free.Load()
	return fmt.Errorf("%s %s: %s free, under the %s dd keeps free: %s; %s", w.o.Key, w.o.Dir, MB(free),
		MB(w.o.Reserve), w.o.Refused, w.advice(free))
}

// MB formats bytes as megabytes for messages.
func MB(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/(1<<20)) }
