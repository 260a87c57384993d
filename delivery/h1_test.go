package delivery

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// rawBot is a loopback TCP server that reads HTTP/1.1 requests itself and answers each with what answer
// returns for it (the bytes written as they are), so that a test controls every byte of the answers and
// sees every connection.
type rawBot struct {
	ln       net.Listener
	accepted atomic.Int64
	ended    atomic.Int64 // connections whose reading ended (the client closed them)
	mu       sync.Mutex
	reqs     []*http.Request
	bodies   [][]byte
	answer   func(n int) (resp string, closeAfter bool)
}

func newRawBot(t testing.TB, answer func(n int) (string, bool)) *rawBot {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &rawBot{ln: ln, answer: answer}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.accepted.Add(1)
			go b.serve(c)
		}
	}()
	return b
}

func (b *rawBot) url(path string) string { return "http://" + b.ln.Addr().String() + path }

func (b *rawBot) serve(c net.Conn) {
	defer b.ended.Add(1)
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return
		}
		b.mu.Lock()
		n := len(b.reqs)
		b.reqs = append(b.reqs, req)
		b.bodies = append(b.bodies, body)
		b.mu.Unlock()
		resp, closeAfter := b.answer(n)
		if _, err := io.WriteString(c, resp); err != nil || closeAfter {
			return
		}
	}
}

func (b *rawBot) request(i int) (*http.Request, []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.reqs[i], b.bodies[i]
}

func (b *rawBot) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.reqs)
}

const noContent = "HTTP/1.1 204 No Content\r\n\r\n"

func netHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// The HTTP/1.1 path sends the request net/http sends (method, target, Host, headers, body), but for
// net/http's Accept-Encoding.
func TestH1SendsWhatNetHTTPSends(t *testing.T) {
	for _, tc := range []struct {
		name, path, secret string
		batch              bool
		user               bool
	}{
		{name: "one event", path: "/events?x=1", secret: "bot-secret-0123456789"},
		{name: "batch", path: "/", secret: "bot-secret-0123456789", batch: true},
		{name: "password in the URL, no secret", path: "/in", user: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newRawBot(t, func(int) (string, bool) { return noContent, false })
			u := b.url(tc.path)
			if tc.user {
				u = strings.Replace(u, "http://", "http://bot:pa%20ss@", 1)
			}
			body := []byte(`{"shardId":3,"payload":{"op":0,"t":"MESSAGE_CREATE","s":7,"d":{}}}`)
			ids := []string{"abc-7", "abc-8"}
			for _, client := range []*http.Client{nil, netHTTPClient()} {
				p, err := NewBotPoster(PosterOptions{URLs: []string{u}, Secret: tc.secret, Batch: tc.batch, Client: client})
				if err != nil {
					t.Fatal(err)
				}
				if (client == nil) != (p.h1[u] != nil) {
					t.Fatalf("h1 used = %v with Client %v", p.h1[u] != nil, client)
				}
				if reason, err := p.Post(context.Background(), u, body, ids); err != nil {
					t.Fatalf("%s: %v", reason, err)
				}
			}
			h1, h1Body := b.request(0)
			nh, nhBody := b.request(1)
			if h1.Method != nh.Method || h1.RequestURI != nh.RequestURI || h1.Host != nh.Host || h1.Proto != nh.Proto {
				t.Fatalf("request line/host: h1 %s %s %s %s, net/http %s %s %s %s", h1.Method, h1.RequestURI, h1.Proto, h1.Host,
					nh.Method, nh.RequestURI, nh.Proto, nh.Host)
			}
			nh.Header.Del("Accept-Encoding")
			if fmt.Sprint(h1.Header) != fmt.Sprint(nh.Header) {
				t.Fatalf("headers:\nh1       %v\nnet/http %v", h1.Header, nh.Header)
			}
			if !bytes.Equal(h1Body, body) || !bytes.Equal(nhBody, body) {
				t.Fatalf("bodies: h1 %q, net/http %q, want %q", h1Body, nhBody, body)
			}
			if tc.user && !strings.HasPrefix(h1.Header.Get("Authorization"), "Basic ") {
				t.Fatalf("Authorization %q, want the URL's user as Basic", h1.Header.Get("Authorization"))
			}
			if got := b.accepted.Load(); got != 2 {
				t.Fatalf("%d connections, want 2 (one per client)", got)
			}
		})
	}
}

// Answers are read as net/http reads them: informational ones skipped, bodies by length or chunked, the
// status mapped to the same failure labels, and the connection kept only while the bot keeps it.
func TestH1ReadsAnswersAndKeepsTheConnection(t *testing.T) {
	answers := []struct {
		resp   string
		reason string // "" for a 2xx
		closes bool   // the answer ends the connection
	}{
		{resp: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"},
		{resp: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"},
		{resp: "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n"},
		{resp: "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy", reason: "status_5xx"},
		{resp: "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n", reason: "status_4xx"},
		{resp: "HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n", reason: "status_other"},
		{resp: "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n", closes: true},
		{resp: "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", closes: true},
		{resp: "HTTP/1.1 200 OK\r\n\r\nuntil the end", closes: true},
		{resp: noContent},
	}
	b := newRawBot(t, func(n int) (string, bool) {
		a := answers[n%len(answers)]
		return a.resp, a.closes
	})
	p, err := NewBotPoster(PosterOptions{URLs: []string{b.url("/")}, Secret: "bot-secret-0123456789"})
	if err != nil {
		t.Fatal(err)
	}
	wantConns := int64(1)
	for i, a := range answers {
		reason, err := p.Post(context.Background(), b.url("/"), []byte(`{}`), []string{strconv.Itoa(i)})
		if reason != a.reason || (err == nil) != (a.reason == "") {
			t.Fatalf("answer %d %q: reason %q, err %v; want %q", i, a.resp, reason, err, a.reason)
		}
		if got := b.accepted.Load(); got != wantConns {
			t.Fatalf("after answer %d: %d connections, want %d", i, got, wantConns)
		}
		if a.closes {
			wantConns++ // the next POST dials
		}
	}
}

// A kept connection that the bot closed while it idled is found closed by the next POST, which is sent
// again at once on a new connection: no failure is reported for it.
func TestH1ResendsOnceOverAStaleConnection(t *testing.T) {
	b := newRawBot(t, func(int) (string, bool) { return noContent, true }) // closes after every answer
	p, err := NewBotPoster(PosterOptions{URLs: []string{b.url("/")}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		time.Sleep(20 * time.Millisecond) // the close has arrived
		if reason, err := p.Post(context.Background(), b.url("/"), []byte(`{}`), []string{"x"}); err != nil {
			t.Fatalf("POST %d: %s: %v", i, reason, err)
		}
	}
	if got := b.count(); got != 3 {
		t.Fatalf("the bot read %d requests, want 3", got)
	}
	// The bot that closes without answering a fresh connection is a failure, not resent.
	silent := newRawBot(t, func(int) (string, bool) { return "", true })
	p, err = NewBotPoster(PosterOptions{URLs: []string{silent.url("/")}})
	if err != nil {
		t.Fatal(err)
	}
	if reason, err := p.Post(context.Background(), silent.url("/"), []byte(`{}`), []string{"x"}); reason != "network" || err == nil {
		t.Fatalf("closed without an answer: reason %q, err %v; want network", reason, err)
	}
	if got := silent.count(); got != 1 {
		t.Fatalf("the silent bot read %d requests, want 1", got)
	}
}

// Ending the context ends a POST waiting for its answer at once; the timeout ends it as "timeout".
func TestH1HonoursContextAndTimeout(t *testing.T) {
	never := make(chan struct{})
	t.Cleanup(func() { close(never) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { <-never; c.Close() }() // reads nothing, answers nothing
		}
	}()
	u := "http://" + ln.Addr().String() + "/"
	p, err := NewBotPoster(PosterOptions{URLs: []string{u}, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, err = p.Post(ctx, u, []byte(`{}`), []string{"x"})
	if !errors.Is(err, context.Canceled) || time.Since(start) > 2*time.Second {
		t.Fatalf("after the cancel: %v in %v, want context.Canceled within 2s", err, time.Since(start))
	}
	p, err = NewBotPoster(PosterOptions{URLs: []string{u}, Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	reason, err := p.Post(context.Background(), u, []byte(`{}`), []string{"x"})
	if took := time.Since(start); reason != "timeout" || took < 100*time.Millisecond || took > 2*time.Second {
		t.Fatalf("no answer: reason %q (%v) after %v, want timeout after 100ms", reason, err, took)
	}
}

// BenchmarkBotPosterPost posts one envelope per op to a loopback bot that answers 204 at once (it parses
// only what it must), through net/http as before and the HTTP/1.1 path, in the same run. cpu-µs/op is
// this process's CPU time (user + system, the bot's small share included) per POST.
func BenchmarkBotPosterPost(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go cheapBot(c)
		}
	}()
	u := "http://" + ln.Addr().String() + "/"
	body := AppendEnvelope(nil, 3, append([]byte(`{"op":0,"t":"MESSAGE_CREATE","s":1,"d":`), append(bytes.Repeat([]byte("x"), 600), '}')...))
	ids := []string{"0b5c1d2e-123456"}
	for _, impl := range []struct {
		name   string
		client *http.Client
	}{{"net-http", defaultClient(256, 1)}, {"h1", nil}} {
		b.Run(impl.name, func(b *testing.B) {
			p, err := NewBotPoster(PosterOptions{URLs: []string{u}, Secret: "bot-secret-0123456789", Client: impl.client})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			b.ReportAllocs()
			cpu0 := cpuTime()
			b.ResetTimer()
			for range b.N {
				if reason, err := p.Post(ctx, u, body, ids); err != nil {
					b.Fatal(reason, err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
		})
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cheapBot answers every request on c with 204, reading its headers and Content-Length bytes of body.
func cheapBot(c net.Conn) {
	defer c.Close()
	br := bufio.NewReaderSize(c, 64<<10)
	for {
		length := 0
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return
			}
			if len(line) <= 2 {
				break
			}
			if len(line) > 16 && strings.EqualFold(string(line[:15]), "Content-Length:") {
				length, _ = strconv.Atoi(strings.TrimSpace(string(line[15:])))
			}
		}
		if _, err := br.Discard(length); err != nil {
			return
		}
		if _, err := io.WriteString(c, noContent); err != nil {
			return
		}
	}
}

// A kept connection idle for the idle timeout is closed (net/http's IdleConnTimeout), not before; the
// next POST dials anew.
func TestH1ClosesIdleConnections(t *testing.T) {
	b := newRawBot(t, func(int) (string, bool) { return noContent, false })
	p, err := NewBotPoster(PosterOptions{URLs: []string{b.url("/")}})
	if err != nil {
		t.Fatal(err)
	}
	const idle = 300 * time.Millisecond
	p.h1[b.url("/")].idleTimeout = idle
	post := func() {
		t.Helper()
		if reason, err := p.Post(context.Background(), b.url("/"), []byte(`{}`), []string{"x"}); err != nil {
			t.Fatalf("%s: %v", reason, err)
		}
	}
	post()
	start := time.Now()
	time.Sleep(idle / 3)
	if n := b.ended.Load(); n != 0 {
		t.Fatalf("a connection idle for %v of %v was closed", time.Since(start), idle)
	}
	for b.ended.Load() == 0 {
		if time.Since(start) > idle+2*time.Second {
			t.Fatalf("the idle connection still open %v after its last POST (idle timeout %v)", time.Since(start), idle)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if took := time.Since(start); took < idle {
		t.Fatalf("closed after %v, before the idle timeout %v", took, idle)
	}
	post()
	if got := b.accepted.Load(); got != 2 {
		t.Fatalf("%d connections, want 2 (the POST after the close dials)", got)
	}
}
