package loadtool

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// A run in cluster mode needs a NATS server with JetStream. It comes from nats-server's Go module, like
// the tests' (cluster/clustertest), but runs as a child process of its own, so that its CPU time and
// memory are read from /proc apart from the receiver's: the load tool starts its own executable again
// with childEnv set, and that process serves NATS until it is told to stop (RunChild). A program that
// runs RunCluster must call RunChild first thing in main (cmd/ddload does; this package's tests do in
// TestMain).
const (
	childEnv        = "DDLOAD_CHILD"         // "nats": this process is a load run's NATS server
	childNATSDirEnv = "DDLOAD_NATS_STORE"    // its JetStream store
	childNATSURLEnv = "DDLOAD_NATS_URL_FILE" // where it writes its client URL once it accepts connections
)

// RunChild serves as the child process a load run started, when this process's environment says it is
// one, and then returns its exit status and true; otherwise it returns at once with false.
func RunChild() (code int, ok bool) {
	switch os.Getenv(childEnv) {
	case "":
		return 0, false
	case "nats":
		if err := serveNATS(os.Getenv(childNATSDirEnv), os.Getenv(childNATSURLEnv)); err != nil {
			fmt.Fprintln(os.Stderr, "ddload nats child:", err)
			return 1, true
		}
		return 0, true
	default:
		fmt.Fprintf(os.Stderr, "ddload: %s=%q names no child\n", childEnv, os.Getenv(childEnv))
		return 2, true
	}
}

// serveNATS runs a JetStream server on a free loopback port, its store in storeDir, writes its client URL
// to urlFile, and shuts down on SIGTERM or SIGINT.
func serveNATS(storeDir, urlFile string) error {
	if storeDir == "" || urlFile == "" {
		return fmt.Errorf("%s and %s must be set", childNATSDirEnv, childNATSURLEnv)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	s, err := server.NewServer(&server.Options{ServerName: "ddload", Host: "127.0.0.1", Port: -1,
		JetStream: true, StoreDir: storeDir, NoLog: true, NoSigs: true})
	if err != nil {
		return err
	}
	s.Start()
	defer s.Shutdown()
	if !s.ReadyForConnections(20 * time.Second) {
		return fmt.Errorf("not ready for connections in 20s")
	}
	// Written whole and then renamed, so that the parent never reads half a URL.
	tmp := urlFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(s.ClientURL()+"\n"), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, urlFile); err != nil {
		return err
	}
	fmt.Printf("nats-server %s with JetStream listening at %s, store %s\n", server.VERSION, s.ClientURL(), storeDir)
	sig := <-sigs
	fmt.Printf("nats-server: %v, shutting down\n", sig)
	return nil
}

func natsVersion() string { return server.VERSION }

// natsProcess is a load run's NATS server, a child process (RunChild).
type natsProcess struct {
	*process
	url string
}

// startNATS re-executes self as the NATS child, its store and log in dir, and waits until it listens.
func startNATS(ctx context.Context, dir, self string) (*natsProcess, error) {
	urlFile := filepath.Join(dir, "nats.url")
	env := []string{childEnv + "=nats", childNATSDirEnv + "=" + filepath.Join(dir, "nats-store"), childNATSURLEnv + "=" + urlFile}
	p, err := startProcess(ctx, "nats", dir, self, nil, env, nil)
	if err != nil {
		return nil, err
	}
	n := &natsProcess{process: p}
	err = waitFor(ctx, "the NATS server's URL file", 30*time.Second, 20*time.Millisecond, []*process{p}, func() (bool, error) {
		b, err := os.ReadFile(urlFile)
		n.url = strings.TrimSpace(string(b))
		return err == nil && strings.HasPrefix(n.url, "nats://"), nil
	})
	if err != nil {
		p.stop(5 * time.Second)
		return nil, err
	}
	return n, nil
}
