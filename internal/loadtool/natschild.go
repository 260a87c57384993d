package loadtool

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/ddhq/dd/internal/natsproc"
)

// A run in cluster mode needs a NATS server with JetStream. It comes from nats-server's Go module, like
// the tests' (cluster/clustertest), but runs as a child process of its own (internal/natsproc), so that
// its CPU time and memory are read from /proc apart from the receiver's. A program that runs RunCluster
// must call natsproc.RunChild first thing in main (cmd/ddload does; this package's tests do in TestMain).

// natsProcess is a load run's NATS server, a child process.
type natsProcess struct {
	*process
	url string
}

// startNATS re-executes self as the NATS child, its store and log in dir, and waits until it listens.
func startNATS(ctx context.Context, dir, self string) (*natsProcess, error) {
	env := []string{natsproc.Config{Name: "ddload", StoreDir: filepath.Join(dir, "nats-store"),
		URLFile: filepath.Join(dir, "nats.url")}.Env()}
	p, err := startProcess(ctx, "nats", dir, self, nil, env, nil)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	url, err := natsproc.WaitURL(wctx, filepath.Join(dir, "nats.url"), p.done)
	if err != nil {
		if errors.Is(err, natsproc.ErrExited) {
			err = fmt.Errorf("waiting for the NATS server's URL file: %w: %w", errStopped, p.exitError())
		}
		p.stop(5 * time.Second)
		return nil, err
	}
	return &natsProcess{process: p, url: url}, nil
}
