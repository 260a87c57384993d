package httpapi

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// overflowConns bounds the connections past max_connections that are still answered (health checks,
// and a 503 for the rest); beyond it they are closed at once.
const overflowConns = 64

// withBodyDeadline gives r's body a read deadline that moves with the bytes received (grace, then
// minRate bytes a second), and clears it once the body is read, so that a handler's later wait (the REST
// proxy waiting for Discord) is not cut. A 100 MiB upload at 16 KiB/s may take 100 minutes, a body sent
// one byte a second is cut after about the grace. (A whole-request ReadTimeout would have to be long
// enough for the largest upload, and would then let a trickle hold a handler as long.)
func withBodyDeadline(w http.ResponseWriter, r *http.Request, grace time.Duration, minRate int64) *http.Request {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return r
	}
	rc := http.NewResponseController(w)
	b := &deadlineBody{ReadCloser: r.Body, rc: rc, start: time.Now(), grace: grace, minRate: minRate}
	b.set = b.start.Add(grace)
	if rc.SetReadDeadline(b.set) != nil {
		return r
	}
	r.Body = b
	return r
}

type deadlineBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	grace   time.Duration
	minRate int64
	start   time.Time
	read    int64
	set     time.Time // the deadline in force
	done    bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	if b.done {
		return b.ReadCloser.Read(p)
	}
	n, err := b.ReadCloser.Read(p)
	b.read += int64(n)
	switch {
	case errors.Is(err, io.EOF):
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	case errors.Is(err, os.ErrDeadlineExceeded):
		return n, fmt.Errorf("the request body arrived slower than %d bytes a second: %w", b.minRate, os.ErrDeadlineExceeded)
	case err == nil:
		// Moved in steps of a second at least: a deadline per small read would cost more than it guards.
		if d := b.start.Add(b.grace + time.Duration(b.read*int64(time.Second)/b.minRate)); d.Sub(b.set) >= time.Second {
			b.set = d
			_ = b.rc.SetReadDeadline(d)
		}
	}
	return n, err
}

// limitListener hands the server at most max connections at once. A connection past the cap goes to
// overflow, a small server that answers health checks and refuses the rest with a 503 at once; when
// overflow holds overflowConns already, the connection is closed. Nothing waits: a client over the cap
// learns it at once instead of hanging in the accept queue.
type limitListener struct {
	net.Listener
	sem      chan struct{}
	overflow *chanListener
	refused  func()
}

func newLimitListener(l net.Listener, max int, refused func()) *limitListener {
	return &limitListener{Listener: l, sem: make(chan struct{}, max), refused: refused,
		overflow: &chanListener{addr: l.Addr(), conns: make(chan net.Conn), done: make(chan struct{})}}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.sem <- struct{}{}:
			return &releaseConn{Conn: c, release: func() { <-l.sem }}, nil
		default:
		}
		l.refused()
		if !l.overflow.offer(c) {
			_ = c.Close()
		}
	}
}

func (l *limitListener) Close() error {
	l.overflow.Close()
	return l.Listener.Close()
}

// releaseConn gives its slot back once, when closed.
type releaseConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *releaseConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// chanListener is the overflow server's listener: the connections limitListener could not take.
type chanListener struct {
	addr   net.Addr
	conns  chan net.Conn
	done   chan struct{}
	once   sync.Once
	active atomic.Int64
}

// offer hands c to the overflow server if it is serving and has room.
func (l *chanListener) offer(c net.Conn) bool {
	if l.active.Add(1) > overflowConns {
		l.active.Add(-1)
		return false
	}
	rc := &releaseConn{Conn: c, release: func() { l.active.Add(-1) }}
	select {
	case l.conns <- rc:
		return true
	case <-l.done:
	case <-time.After(100 * time.Millisecond): // the overflow server is not accepting
	}
	l.active.Add(-1)
	return false
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }
