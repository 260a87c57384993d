// Package natsproc runs a NATS server with JetStream, from nats-server's Go module, as a child process
// of its own: the parent starts its own executable again with EnvName set to the server's Config, and
// that process serves NATS (RunChild) until SIGTERM or SIGINT, or until its parent is gone. A process
// of its own, so that its CPU time and memory are read apart (the load tool) and so that it can die the
// way a machine dies, by SIGKILL, its store as the kill left it (the tests of a node's loss).
//
// A program that starts such a child calls RunChild first thing in main, or in TestMain for a test
// binary.
package natsproc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EnvName is the environment variable that makes a process a NATS child; its value is the child's
// Config as JSON (Config.Env).
const EnvName = "DD_NATS_CHILD"

// Version is the version of nats-server a child runs.
const Version = server.VERSION

// Config describes the server a child runs, on 127.0.0.1 with JetStream.
type Config struct {
	Name     string `json:"name"`     // server name (as JetStream's cluster info gives it)
	StoreDir string `json:"storeDir"` // JetStream store
	URLFile  string `json:"urlFile"`  // written with the client URL once the server accepts connections
	Port     int    `json:"port"`     // client port; 0 for any free one

	// A node of a cluster: its name, this node's route port, and every node's route URL. Cluster ""
	// for a server alone.
	Cluster   string   `json:"cluster,omitempty"`
	RoutePort int      `json:"routePort,omitempty"`
	Routes    []string `json:"routes,omitempty"`

	// Parent is the process that must outlive the child: the child ends once its parent process is
	// another. Env sets it to the caller.
	Parent int `json:"parent"`
}

// Env is the environment entry (NAME=value) that starts a child serving c, its parent this process.
func (c Config) Env() string {
	c.Parent = os.Getpid()
	b, err := json.Marshal(c)
	if err != nil { // strings and ints only: cannot happen
		panic(err)
	}
	return EnvName + "=" + string(b)
}

// RunChild serves as a NATS child when this process's environment says it is one, and then returns
// its exit status and true; otherwise it returns at once with false. Use:
//
//	if code, ok := natsproc.RunChild(); ok {
//		os.Exit(code)
//	}
func RunChild() (code int, ok bool) {
	v, ok := os.LookupEnv(EnvName)
	if !ok {
		return 0, false
	}
	var c Config
	if err := json.Unmarshal([]byte(v), &c); err != nil {
		fmt.Fprintf(os.Stderr, "nats child: %s: %v\n", EnvName, err)
		return 2, true
	}
	if err := serve(c); err != nil {
		fmt.Fprintf(os.Stderr, "nats child %s: %v\n", c.Name, err)
		return 1, true
	}
	return 0, true
}

// serve runs the server c describes, writes its client URL to c.URLFile, and shuts it down on SIGTERM
// or SIGINT, or once c.Parent is no longer this process's parent.
func serve(c Config) error {
	if c.StoreDir == "" || c.URLFile == "" || c.Parent == 0 {
		return errors.New("the store, the URL file and the parent must be set")
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	opts := &server.Options{ServerName: c.Name, Host: "127.0.0.1", Port: c.Port,
		JetStream: true, StoreDir: c.StoreDir, NoLog: true, NoSigs: true}
	if c.Port == 0 {
		opts.Port = -1 // nats-server's 0 is its default port, 4222
	}
	if c.Cluster != "" {
		opts.Cluster = server.ClusterOpts{Name: c.Cluster, Host: "127.0.0.1", Port: c.RoutePort}
		opts.Routes = server.RoutesFromStr(strings.Join(c.Routes, ","))
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return err
	}
	s.Start()
	defer s.Shutdown()
	if !s.ReadyForConnections(20 * time.Second) {
		return errors.New("not ready for connections in 20s")
	}
	// Written whole and then renamed, so that the parent never reads half a URL.
	tmp := c.URLFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(s.ClientURL()+"\n"), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, c.URLFile); err != nil {
		return err
	}
	fmt.Printf("nats-server %s: %s, JetStream, listening at %s, store %s", Version, c.Name, s.ClientURL(), c.StoreDir)
	if c.Cluster != "" {
		fmt.Printf(", node of cluster %s with routes on %d", c.Cluster, c.RoutePort)
	}
	fmt.Println()
	// A parent killed before it stopped its child leaves no server behind: the child is re-parented,
	// and goes. (The parent is compared with the one Env named, so a parent gone before the child
	// started counts too.)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case sig := <-sigs:
			fmt.Printf("nats-server %s: %v, shutting down\n", c.Name, sig)
			return nil
		case <-tick.C:
			if os.Getppid() != c.Parent {
				fmt.Printf("nats-server %s: parent process %d is gone, shutting down\n", c.Name, c.Parent)
				return nil
			}
		}
	}
}

// ErrExited is WaitURL's error when the child exited before it wrote its URL.
var ErrExited = errors.New("the NATS child exited before it listened")

// WaitURL waits until a child has written its client URL to urlFile and returns the URL; it gives up
// when ctx ends or when exited (the child's end, e.g. closed once Wait returned) is closed.
func WaitURL(ctx context.Context, urlFile string, exited <-chan struct{}) (string, error) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		b, err := os.ReadFile(urlFile)
		if url := strings.TrimSpace(string(b)); err == nil && strings.HasPrefix(url, "nats://") {
			return url, nil
		}
		select {
		case <-exited:
			return "", ErrExited
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for the NATS child's URL in %s: %w", urlFile, ctx.Err())
		case <-tick.C:
		}
	}
}
