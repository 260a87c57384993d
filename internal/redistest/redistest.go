// Package redistest runs a real redis-server for tests: on a free loopback port, in the test's temporary
// directory, killed when the test ends. A test that needs it is skipped, saying so, when redis-server is
// not installed (CI installs it: .ci/run). It is for tests only.
package redistest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Server is one redis-server process; Kill and Start stop and restart it on the same port and directory,
// with its data when Persist is set.
type Server struct {
	t       testing.TB
	bin     string
	dir     string
	port    int
	persist bool
	pass    string
	cmd     *exec.Cmd
	exited  chan struct{}
}

// Options configure Start.
type Options struct {
	// Persist keeps the data across Kill and Start: an append-only file fsynced on every write (Redis's
	// appendfsync always), so that what Redis acknowledged survives a SIGKILL.
	Persist bool
	// Password requires AUTH (requirepass).
	Password string
}

// Start runs redis-server, or skips the test when it is not installed.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed (apt-get install redis-server; .ci/run does it): skipping a test of the Redis sink")
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir(), port: freePort(t), persist: o.Persist, pass: o.Password}
	args := []string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--dir", s.dir, "--save", "",
		"--daemonize", "no", "--protected-mode", "no", "--logfile", ""}
	if o.Persist {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	if o.Password != "" {
		args = append(args, "--requirepass", o.Password)
	}
	s.cmd = exec.Command(bin, args...)
	s.Start()
	t.Cleanup(s.Kill)
	return s
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Addr is host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// URL is redis://host:port/0, with the password when one is given.
func (s *Server) URL(password string) string {
	if password != "" {
		return "redis://:" + password + "@" + s.Addr() + "/0"
	}
	return "redis://" + s.Addr() + "/0"
}

// Start (re)starts the server and waits until it answers PING (after loading its data).
func (s *Server) Start() {
	s.t.Helper()
	cmd := exec.Command(s.bin, s.cmd.Args[1:]...)
	cmd.Dir = s.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("starting redis-server: %v", err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { _ = c.Wait(); close(done) }(cmd, s.exited)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if err := s.ping(); err == nil {
			return
		} else if time.Now().After(deadline) {
			s.t.Fatalf("redis-server on %s did not answer PING within 20s: %v", s.Addr(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill stops the server with SIGKILL and waits until it is gone.
func (s *Server) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// ping answers nil once the server takes commands (a server loading its data answers -LOADING).
func (s *Server) ping() error {
	_, err := s.Do("PING")
	return err
}

// Do sends one command (after AUTH when the server has a password) and returns the first line of the
// reply.
func (s *Server) Do(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", s.Addr())
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	var b strings.Builder
	cmds := [][]string{args}
	if s.pass != "" {
		cmds = [][]string{{"AUTH", s.pass}, args}
	}
	for _, cmd := range cmds {
		fmt.Fprintf(&b, "*%d\r\n", len(cmd))
		for _, a := range cmd {
			fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
		}
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	var line string
	for range cmds {
		if line, err = r.ReadString('\n'); err != nil {
			return "", err
		}
		if strings.HasPrefix(line, "-") {
			break
		}
	}
	line = strings.TrimRight(line, "\r\n")
	if strings.HasPrefix(line, "-") {
		return "", fmt.Errorf("redis: %s", line[1:])
	}
	return line, nil
}
