package discordsim

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/klauspost/compress/zstd"
)

// gwPayload is one gateway message as the test client decoded it.
type gwPayload struct {
	Op     int             `json:"op"`
	D      json.RawMessage `json:"d"`
	S      *int64          `json:"s"`
	T      *string         `json:"t"`
	Binary bool            `json:"-"` // arrived in a binary frame
}

func (p gwPayload) name() string {
	if p.T == nil {
		return ""
	}
	return *p.T
}

func (p gwPayload) String() string {
	s := fmt.Sprintf("op %d", p.Op)
	if p.T != nil {
		s += fmt.Sprintf(" %s s=%d", *p.T, *p.S)
	}
	d := string(p.D)
	if len(d) > 120 {
		d = d[:120] + "..."
	}
	return s + " d=" + d
}

// testClient is a small gateway client: it reads every frame in a goroutine, decodes transport
// compression with one context for the connection's life (zlib: a message ends with 00 00 ff ff; zstd:
// one decoder, the frame never ends) and hands payloads over a channel.
type testClient struct {
	t        testing.TB
	conn     net.Conn
	compress string

	msgs      chan gwPayload
	done      chan struct{} // closed when the connection is over
	closeCode int           // the server's close code, 0 if the socket just ended (set before done)
	errMu     sync.Mutex
	protoErr  error // a protocol violation the reader saw

	wmu     sync.Mutex
	lastSeq int64 // of payloads taken with next
	frames  int   // data frames received (reader-owned until done)
}

// dialGateway connects to the gateway with the given query (e.g. "v=10&encoding=json").
func dialGateway(t testing.TB, base, query string) *testClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, br, _, err := ws.Dial(ctx, base+"?"+query)
	if err != nil {
		t.Fatalf("dial %s?%s: %v", base, query, err)
	}
	c := &testClient{t: t, conn: conn, msgs: make(chan gwPayload, 1<<16), done: make(chan struct{})}
	for _, kv := range strings.Split(query, "&") {
		if v, ok := strings.CutPrefix(kv, "compress="); ok && (v == "zlib-stream" || v == "zstd-stream") {
			c.compress = v
		}
	}
	var rd io.Reader = conn
	if br != nil {
		rd = io.MultiReader(br, conn)
	}
	go c.readLoop(rd)
	t.Cleanup(func() { _ = conn.Close() })
	return c
}

func (c *testClient) fail(err error) {
	c.errMu.Lock()
	if c.protoErr == nil {
		c.protoErr = err
	}
	c.errMu.Unlock()
}

func (c *testClient) err() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.protoErr
}

func (c *testClient) readLoop(rd io.Reader) {
	defer close(c.done)
	rw := struct {
		io.Reader
		io.Writer
	}{rd, writerFunc(func(p []byte) (int, error) {
		c.wmu.Lock()
		defer c.wmu.Unlock()
		return c.conn.Write(p)
	})}
	// Stream decompression: frames go into a pipe, a decoder goroutine reads JSON values out of the
	// decompressed stream.
	var pw *io.PipeWriter
	decoded := make(chan struct{})
	if c.compress != "" {
		var pr *io.PipeReader
		pr, pw = io.Pipe()
		go func() {
			defer close(decoded)
			var src io.Reader
			switch c.compress {
			case "zlib-stream":
				zr, err := zlib.NewReader(pr)
				if err != nil {
					c.fail(fmt.Errorf("zlib header: %w", err))
					return
				}
				src = zr
			case "zstd-stream":
				zr, err := zstd.NewReader(pr, zstd.WithDecoderConcurrency(1))
				if err != nil {
					c.fail(err)
					return
				}
				defer zr.Close()
				src = zr
			}
			dec := json.NewDecoder(src)
			for {
				var p gwPayload
				if err := dec.Decode(&p); err != nil {
					if !errors.Is(err, io.ErrClosedPipe) && !errors.Is(err, io.EOF) &&
						!strings.Contains(err.Error(), "closed pipe") {
						c.fail(fmt.Errorf("decoding %s: %w", c.compress, err))
					}
					_ = pr.Close()
					return
				}
				p.Binary = true
				c.msgs <- p
			}
		}()
	} else {
		close(decoded)
	}
	defer func() {
		if pw != nil {
			_ = pw.Close()
		}
		<-decoded
	}()
	for {
		data, op, err := wsutil.ReadServerData(rw)
		if err != nil {
			var ce wsutil.ClosedError
			if errors.As(err, &ce) {
				c.closeCode = int(ce.Code)
			}
			return
		}
		c.frames++
		switch {
		case c.compress != "":
			if op != ws.OpBinary {
				c.fail(fmt.Errorf("%s: got a %v frame, want binary", c.compress, op))
			}
			if c.compress == "zlib-stream" && !bytes.HasSuffix(data, []byte{0, 0, 0xff, 0xff}) {
				c.fail(fmt.Errorf("zlib-stream message does not end with 00 00 ff ff: % x", data[max(0, len(data)-8):]))
			}
			if _, err := pw.Write(data); err != nil {
				return
			}
		case op == ws.OpBinary: // payload compression: a complete zlib stream
			zr, err := zlib.NewReader(bytes.NewReader(data))
			if err != nil {
				c.fail(fmt.Errorf("payload compression: %w", err))
				continue
			}
			raw, err := io.ReadAll(zr)
			if err != nil {
				c.fail(fmt.Errorf("payload compression: %w", err))
				continue
			}
			var p gwPayload
			if err := json.Unmarshal(raw, &p); err != nil {
				c.fail(err)
				continue
			}
			p.Binary = true
			c.msgs <- p
		default:
			var p gwPayload
			if err := json.Unmarshal(data, &p); err != nil {
				c.fail(fmt.Errorf("text frame is not JSON: %w: %q", err, data))
				continue
			}
			c.msgs <- p
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// sendRaw sends one text message.
func (c *testClient) sendRaw(p []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = wsutil.WriteClientText(c.conn, p)
}

func (c *testClient) send(op int, d any) {
	b, err := json.Marshal(map[string]any{"op": op, "d": d})
	if err != nil {
		c.t.Fatal(err)
	}
	c.sendRaw(b)
}

func (c *testClient) identify(token string, shard, num, intents int) {
	c.send(2, identifyPayload(token, shard, num, intents))
}

func identifyPayload(token string, shard, num, intents int) map[string]any {
	return map[string]any{"token": token, "intents": intents, "shard": []int{shard, num},
		"properties": map[string]string{"os": "linux", "browser": "dd-test", "device": "dd-test"}}
}

func (c *testClient) resume(token, sessionID string, seq int64) {
	c.send(6, map[string]any{"token": token, "session_id": sessionID, "seq": seq})
}

func (c *testClient) heartbeat() { c.send(1, nil) }

// heartbeatEvery heartbeats until the connection ends.
func (c *testClient) heartbeatEvery(d time.Duration) {
	go func() {
		tk := time.NewTicker(d)
		defer tk.Stop()
		for {
			select {
			case <-c.done:
				return
			case <-tk.C:
				c.heartbeat()
			}
		}
	}()
}

// closeWith starts a close handshake with a code and waits for the server's answer.
func (c *testClient) closeWith(code int) {
	c.wmu.Lock()
	_ = wsutil.WriteClientMessage(c.conn, ws.OpClose, ws.NewCloseFrameBody(ws.StatusCode(code), ""))
	c.wmu.Unlock()
	select {
	case <-c.done:
	case <-time.After(3 * time.Second):
		c.t.Errorf("server did not answer our close %d", code)
	}
	_ = c.conn.Close()
}

// drop closes the TCP connection without a close frame.
func (c *testClient) drop() {
	_ = c.conn.Close()
	<-c.done
}

// next returns the next payload or fails the test.
func (c *testClient) next(timeout time.Duration) gwPayload {
	c.t.Helper()
	select {
	case p := <-c.msgs:
		if p.S != nil {
			c.lastSeq = *p.S
		}
		return p
	case <-time.After(timeout):
		c.t.Fatalf("no gateway message within %v", timeout)
	case <-c.done:
		select {
		case p := <-c.msgs:
			if p.S != nil {
				c.lastSeq = *p.S
			}
			return p
		default:
		}
		c.t.Fatalf("connection ended (close code %d, error %v) while waiting for a message", c.closeCode, c.err())
	}
	return gwPayload{}
}

// expect returns the next payload, which must have opcode op (and event name t if op is 0).
func (c *testClient) expect(op int, t string) gwPayload {
	c.t.Helper()
	p := c.next(3 * time.Second)
	if p.Op != op || (op == 0 && p.name() != t) {
		c.t.Fatalf("got %v, want op %d %s", p, op, t)
	}
	return p
}

// expectHello reads HELLO and returns heartbeat_interval.
func (c *testClient) expectHello() int {
	c.t.Helper()
	p := c.expect(10, "")
	var d struct {
		HeartbeatInterval int `json:"heartbeat_interval"`
	}
	if err := json.Unmarshal(p.D, &d); err != nil || d.HeartbeatInterval <= 0 {
		c.t.Fatalf("HELLO d = %s: want heartbeat_interval", p.D)
	}
	return d.HeartbeatInterval
}

// waitClose drains messages until the server closes the connection and returns the close code (0 when
// the socket ended without a close frame).
func (c *testClient) waitClose(timeout time.Duration) int {
	c.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case <-c.msgs:
		case <-c.done:
			return c.closeCode
		case <-deadline:
			c.t.Fatalf("server did not close within %v", timeout)
		}
	}
}

// readyD is the part of READY the tests read.
type readyD struct {
	V                int                   `json:"v"`
	User             simUser               `json:"user"`
	Guilds           []simUnavailableGuild `json:"guilds"`
	SessionID        string                `json:"session_id"`
	ResumeGatewayURL string                `json:"resume_gateway_url"`
	Shard            [2]int                `json:"shard"`
	Application      struct {
		ID    string `json:"id"`
		Flags int    `json:"flags"`
	} `json:"application"`
}

func (c *testClient) expectReady() readyD {
	c.t.Helper()
	p := c.expect(0, "READY")
	var r readyD
	if err := json.Unmarshal(p.D, &r); err != nil {
		c.t.Fatalf("READY: %v", err)
	}
	return r
}
