package delivery

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"
)

// h1Client posts to one http:// bot URL over HTTP/1.1 keep-alive connections on the caller's goroutine:
// one write of the request, reads of the answer into a buffer the connection keeps, and no goroutine per
// connection. net/http's Transport hands every request to a connection's write goroutine and its answer
// back from a read goroutine, and allocates a request, a context, a header map and a response per POST:
// at one event per POST that cost more of dd's CPU than the rest of the delivery (issue #9's profile).
// The request is the one net/http sends (same headers, Host and User-Agent included, less its
// Accept-Encoding: the answer is not read), and the answer is read as net/http reads it: informational
// answers skipped, a body by Content-Length or chunked, a connection kept only if the bot keeps it.
// https URLs, and a Client given in the options, use net/http (TLS, HTTP/2, proxies).
type h1Client struct {
	addr        string // host:port dialled
	head        []byte // request line and the headers every POST has
	maxIdle     int
	idleTimeout time.Duration // an idle connection is closed after this
	dialer      net.Dialer

	mu      sync.Mutex
	idle    []*h1Conn // most recently used last
	pruning bool      // a prune is scheduled
}

type h1Conn struct {
	nc     net.Conn
	br     *bufio.Reader
	buf    []byte // the request being written
	idleAt time.Time
}

const (
	h1IdleTimeout  = 90 * time.Second // net/http's IdleConnTimeout as delivery set it
	h1MaxDrain     = 64 << 10         // an answer's body up to this is read to keep the connection
	h1KeepBufBelow = 256 << 10        // a request buffer above this (a big batch) is not kept
)

// newH1Client prepares posting to rawURL; nil when net/http must do it (not http, or a secret that is
// not a valid header value, which net/http refuses per request as before).
func newH1Client(rawURL, secret string, maxIdle int) *h1Client {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "http" || u.Host == "" || !validHeaderValue(secret) {
		return nil
	}
	port := u.Port()
	if port == "" {
		port = "80"
	}
	head := fmt.Appendf(nil, "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: Go-http-client/1.1\r\n", u.RequestURI(), u.Host)
	switch {
	case secret != "":
		head = fmt.Appendf(head, "Authorization: %s\r\n", secret)
	case u.User != nil:
		// What net/http sends for a URL's user and password when no Authorization is set.
		pw, _ := u.User.Password()
		head = fmt.Appendf(head, "Authorization: Basic %s\r\n", base64.StdEncoding.EncodeToString([]byte(u.User.Username()+":"+pw)))
	}
	head = append(head, "Content-Type: application/json\r\n"...)
	return &h1Client{addr: net.JoinHostPort(u.Hostname(), port), head: head, maxIdle: maxIdle, idleTimeout: h1IdleTimeout,
		dialer: net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}}
}

func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// errStaleConn is a reused connection that the bot had closed before any answer came: the POST is sent
// again at once on a new connection, as net/http does.
var errStaleConn = errors.New("connection closed by the bot before it answered")

// post sends body with ids and answers the status, or the failure's metric label and error.
func (h *h1Client) post(ctx context.Context, timeout time.Duration, body []byte, ids []string, batch bool) (status int, reason string, err error) {
	deadline := time.Now().Add(timeout)
	for try := 0; ; try++ {
		c, reused, err := h.get(ctx, deadline)
		if err != nil {
			reason, err := h.failure(ctx, timeout, err)
			return 0, reason, err
		}
		c.buf = appendRequest(append(c.buf[:0], h.head...), body, ids, batch)
		stop := context.AfterFunc(ctx, func() { _ = c.nc.SetDeadline(time.Unix(1, 0)) })
		status, keep, err := c.roundTrip(deadline, reused)
		if !stop() {
			keep = false // its deadline was moved
		}
		if cap(c.buf) > h1KeepBufBelow {
			c.buf = nil
		}
		if err != nil || !keep {
			_ = c.nc.Close()
		} else {
			h.put(c)
		}
		if errors.Is(err, errStaleConn) && try == 0 && ctx.Err() == nil {
			continue
		}
		if err != nil {
			reason, err := h.failure(ctx, timeout, err)
			return 0, reason, err
		}
		return status, "", nil
	}
}

func (h *h1Client) failure(ctx context.Context, timeout time.Duration, err error) (reason string, _ error) {
	if ctx.Err() != nil {
		return "network", ctx.Err()
	}
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return "timeout", fmt.Errorf("no answer within %s: %w", timeout, err)
	}
	return "network", err
}

// appendRequest appends the per-POST headers and body to b, which holds the request line and fixed headers.
func appendRequest(b, body []byte, ids []string, batch bool) []byte {
	b = append(b, "X-Dd-Event-Id: "...)
	b = append(b, ids[0]...)
	if batch {
		b = append(b, "\r\nX-Dd-Event-Ids: "...)
		for i, id := range ids {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, id...)
		}
	}
	b = append(b, "\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n\r\n"...)
	return append(b, body...)
}

// get takes the most recently used idle connection that has not idled too long, or dials one.
func (h *h1Client) get(ctx context.Context, deadline time.Time) (c *h1Conn, reused bool, err error) {
	now := time.Now()
	h.mu.Lock()
	for len(h.idle) > 0 {
		c = h.idle[len(h.idle)-1]
		h.idle[len(h.idle)-1] = nil
		h.idle = h.idle[:len(h.idle)-1]
		if now.Sub(c.idleAt) < h.idleTimeout {
			h.mu.Unlock()
			return c, true, nil
		}
		_ = c.nc.Close()
	}
	h.mu.Unlock()
	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	nc, err := h.dialer.DialContext(dctx, "tcp", h.addr)
	if err != nil {
		return nil, false, err
	}
	return &h1Conn{nc: nc, br: bufio.NewReaderSize(nc, 4096)}, false, nil
}

func (h *h1Client) put(c *h1Conn) {
	c.idleAt = time.Now()
	h.mu.Lock()
	if len(h.idle) < h.maxIdle {
		h.idle = append(h.idle, c)
		c = nil
		if !h.pruning {
			h.pruning = true
			time.AfterFunc(h.idleTimeout, h.prune)
		}
	}
	h.mu.Unlock()
	if c != nil {
		_ = c.nc.Close()
	}
}

// prune closes the connections idle for idleTimeout (as net/http's IdleConnTimeout does), so that a bot
// that stops receiving events does not keep dd's sockets open; it runs again while some remain.
func (h *h1Client) prune() {
	now := time.Now()
	h.mu.Lock()
	n := 0
	for n < len(h.idle) && now.Sub(h.idle[n].idleAt) >= h.idleTimeout {
		n++
	}
	stale := append([]*h1Conn(nil), h.idle[:n]...)
	h.idle = append(h.idle[:0], h.idle[n:]...)
	clear(h.idle[len(h.idle):cap(h.idle)])
	if h.pruning = len(h.idle) > 0; h.pruning {
		time.AfterFunc(h.idleTimeout-now.Sub(h.idle[0].idleAt), h.prune)
	}
	h.mu.Unlock()
	for _, c := range stale {
		_ = c.nc.Close()
	}
}

// roundTrip writes c.buf and reads the answer (the last one, after any informational ones) to its end.
// keep says whether the connection can carry another request.
func (c *h1Conn) roundTrip(deadline time.Time, reused bool) (status int, keep bool, err error) {
	if err := c.nc.SetDeadline(deadline); err != nil {
		return 0, false, err
	}
	if _, err := c.nc.Write(c.buf); err != nil {
		if reused {
			return 0, false, fmt.Errorf("%w: %w", errStaleConn, err)
		}
		return 0, false, err
	}
	for first := true; ; first = false {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			if reused && first && len(line) == 0 && !errors.Is(err, os.ErrDeadlineExceeded) {
				return 0, false, fmt.Errorf("%w: %w", errStaleConn, err)
			}
			return 0, false, answerErr(err)
		}
		if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
			return 0, false, fmt.Errorf("malformed HTTP status line %q", trimCRLF(line))
		}
		status, err = strconv.Atoi(string(line[9:12]))
		if err != nil || status < 100 {
			return 0, false, fmt.Errorf("malformed HTTP status line %q", trimCRLF(line))
		}
		keep = line[7] == '1' // HTTP/1.1 keeps the connection unless it says close; 1.0 does not
		length, chunked := int64(-1), false
		for {
			h, err := c.br.ReadSlice('\n')
			if err != nil {
				return 0, false, answerErr(err)
			}
			h = trimCRLF(h)
			if len(h) == 0 {
				break
			}
			name, value, ok := bytes.Cut(h, []byte(":"))
			if !ok {
				return 0, false, fmt.Errorf("malformed HTTP header %q", h)
			}
			value = bytes.TrimSpace(value)
			switch {
			case bytes.EqualFold(name, []byte("Content-Length")):
				if length, err = strconv.ParseInt(string(value), 10, 64); err != nil || length < 0 {
					return 0, false, fmt.Errorf("malformed Content-Length %q", value)
				}
			case bytes.EqualFold(name, []byte("Transfer-Encoding")):
				chunked = bytes.EqualFold(value, []byte("chunked"))
				if !chunked {
					keep = false
				}
			case bytes.EqualFold(name, []byte("Connection")):
				if bytes.EqualFold(value, []byte("close")) {
					keep = false
				}
			}
		}
		if status >= 100 && status < 200 && status != 101 {
			continue // 100 Continue, 103 Early Hints: the answer follows
		}
		switch {
		case status == 204 || status == 304 || status == 101:
			if status == 101 {
				keep = false
			}
		case chunked:
			n, err := io.Copy(io.Discard, io.LimitReader(httputil.NewChunkedReader(c.br), h1MaxDrain+1))
			if err != nil {
				return 0, false, answerErr(err)
			}
			if n > h1MaxDrain {
				return status, false, nil
			}
			for { // the trailer, up to its empty line
				t, err := c.br.ReadSlice('\n')
				if err != nil {
					return 0, false, answerErr(err)
				}
				if len(trimCRLF(t)) == 0 {
					break
				}
			}
		case length > h1MaxDrain:
			keep = false
		case length >= 0:
			if _, err := c.br.Discard(int(length)); err != nil {
				return 0, false, answerErr(err)
			}
		default: // the body lasts until the bot closes the connection: not read
			keep = false
		}
		return status, keep, nil
	}
}

func answerErr(err error) error {
	if errors.Is(err, bufio.ErrBufferFull) {
		return errors.New("malformed HTTP answer: a line longer than 4096 bytes")
	}
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

func trimCRLF(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}
