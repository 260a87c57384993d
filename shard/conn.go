package shard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/ddhq/dd/discord"
	"github.com/ddhq/dd/internal/rawjson"
	"github.com/ddhq/dd/internal/zlibstream"
	"github.com/ddhq/dd/internal/zstdstream"
)

// Compression names, as in gateway.compress.
const (
	CompressZstd = "zstd-stream"
	CompressZlib = "zlib-stream"
	CompressNone = "none"
)

// conn is one websocket connection to the gateway. Reading is pull-based on one goroutine: the object
// reader pulls from the decompressor, which pulls websocket frames from the socket as it needs them, so a
// payload is decompressed and framed without intermediate copies and with one decompression context for
// the connection's life, as Discord's stream compression requires.
type conn struct {
	nc   net.Conn
	rd   *wsutil.Reader
	objs *rawjson.ObjectReader // payloads, one JSON object each, from the decompressed stream
	zr   io.Closer             // decompressor, if any

	ctl  wsutil.FrameHandlerFunc
	peek peekReader // the socket, for rd

	wmu    sync.Mutex
	closed bool
}

// gatewayURL adds the query Discord requires to a gateway or resume URL.
func gatewayURL(base string, version int, compress string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("gateway url %q: %w", base, err)
	}
	switch u.Scheme {
	case "ws", "wss":
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("gateway url %q: scheme must be wss or ws", base)
	}
	q := u.Query()
	q.Set("v", fmt.Sprint(version))
	q.Set("encoding", "json")
	if compress != CompressNone && compress != "" {
		q.Set("compress", compress)
	} else {
		q.Del("compress")
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

func dial(ctx context.Context, rawURL, compress string) (*conn, error) {
	// The same User-Agent as on REST calls: Discord-compatible servers (Spacebar) refuse a websocket
	// without one.
	d := ws.Dialer{Timeout: 15 * time.Second, Header: ws.HandshakeHeaderHTTP(http.Header{"User-Agent": {discord.UserAgent}})}
	nc, br, _, err := d.Dial(ctx, rawURL)
	if err != nil {
		return nil, fmt.Errorf("dial gateway: %w", err)
	}
	var src io.Reader = nc
	if br != nil {
		// The handshake reader may hold the first frames already. Only those are read from it, so that
		// MultiReader moves on to the socket and lets the reader's 4 KiB buffer go.
		src = io.MultiReader(io.LimitReader(br, int64(br.Buffered())), nc)
	}
	return newConn(nc, src, compress), nil
}

// newConn reads the gateway's frames from src (nc, or what the handshake read ahead and then nc) and
// writes to nc.
func newConn(nc net.Conn, src io.Reader, compress string) *conn {
	c := &conn{nc: nc}
	c.peek.src = src
	c.ctl = wsutil.ControlFrameHandler(lockedWriter{c}, ws.StateClientSide)
	c.rd = &wsutil.Reader{Source: &c.peek, State: ws.StateClientSide, OnIntermediate: c.ctl}
	feed := &frameFeeder{c: c}
	var payloads io.Reader = feed
	switch compress {
	case CompressZstd:
		// zstdstream keeps only the sender's window between messages, packed once the connection idles.
		zd := zstdstream.NewReader(feed, 32<<20)
		zd.SetIdle(packIdle)
		payloads, c.zr = zd, zstdCloser{zd}
	case CompressZlib:
		// zlibstream packs an idle connection's 32 KiB history and lends it a decoder per message.
		zr := zlibstream.NewReader(feed, packIdle)
		payloads, c.zr = zr, zlibCloser{zr}
	}
	c.objs = rawjson.NewObjectReader(payloads)
	return c
}

// next reads the next gateway payload, exactly as sent (after decompression).
func (c *conn) next() ([]byte, error) { return c.objs.Next() }

// send writes one text message. Callers have passed the send limiter.
func (c *conn) send(payload []byte) error {
	if len(payload) > discord.MaxSendBytes {
		return fmt.Errorf("%w: %d bytes", ErrPayloadTooLarge, len(payload))
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed {
		return net.ErrClosed
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return wsutil.WriteClientMessage(c.nc, ws.OpText, payload)
}

// close sends a close frame with code (never 1000/1001 unless the session should end) and closes the
// socket. Used once the read loop has stopped; see closeGracefully while it runs.
func (c *conn) close(code int, reason string) {
	c.sendClose(code, reason)
	c.nc.Close()
}

// closeGracefully sends a close frame and lets the read loop run on until the server answers with its own
// close frame (or a second passes), as the websocket close handshake has it: closing the socket at once
// could let the server see a dropped connection before it reads our code, and a session meant to end
// (1000) would stay resumable, or the reverse.
func (c *conn) closeGracefully(code int, reason string) {
	if c.sendClose(code, reason) {
		_ = c.nc.SetReadDeadline(time.Now().Add(time.Second))
	}
}

// sendClose writes the close frame once; it reports whether this call wrote it.
func (c *conn) sendClose(code int, reason string) bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed {
		return false
	}
	c.closed = true
	_ = c.nc.SetWriteDeadline(time.Now().Add(2 * time.Second))
	body := ws.NewCloseFrameBody(ws.StatusCode(code), reason)
	_ = ws.WriteFrame(c.nc, ws.MaskFrameInPlace(ws.NewCloseFrame(body)))
	return true
}

// release frees the decompressor. Only after the read loop has returned: the decoder is not safe for
// use from two goroutines.
func (c *conn) release() {
	if c.zr != nil {
		c.zr.Close()
	}
}

// drop closes the socket without a close frame (as a network failure would).
func (c *conn) drop() {
	c.wmu.Lock()
	c.closed = true
	c.wmu.Unlock()
	c.nc.Close()
}

// lockedWriter lets the control-frame handler (pong, close reply) write between our own sends.
type lockedWriter struct{ c *conn }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.c.wmu.Lock()
	defer w.c.wmu.Unlock()
	return w.c.nc.Write(p)
}

// peekReader is the socket as the websocket reader reads it. A read smaller than its array (a frame's
// 2-byte header, its extended length, the first byte of a message, a short rest) asks the socket for up
// to the array's size instead and keeps what it did not need: a small message, which arrives whole, is
// then read with one system call instead of three or four. The array is part of the connection, not a
// buffer taken while waiting, so an idle shard blocked here holds nothing more; reads as large as the
// array go to the socket directly.
type peekReader struct {
	src   io.Reader
	small [peekSize]byte
	r, w  int
}

const peekSize = 256

func (p *peekReader) Read(b []byte) (int, error) {
	if p.r < p.w {
		n := copy(b, p.small[p.r:p.w])
		p.r += n
		return n, nil
	}
	if len(b) >= peekSize {
		return p.src.Read(b)
	}
	n, err := p.src.Read(p.small[:])
	if n > 0 {
		err = nil // the socket says it again on the next read, once what is kept is read out
	}
	m := copy(b, p.small[:n])
	p.r, p.w = m, n
	return m, err
}

// frameFeeder is an io.Reader over the data frames of the connection: when one message is used up it
// reads the next one from the socket, handling control frames on the way. A server close frame becomes
// a *CloseError. It is also an io.ByteReader with a small buffer of its own, so that the inflater reads
// it directly instead of wrapping it in a 4 KiB bufio.Reader (memory per idle shard counts).
type frameFeeder struct {
	c     *conn
	inMsg bool
	buf   []byte // while in a message
	bufp  *[]byte
	r, w  int
	one   [1]byte
}

const feederBuffer = 1024

var feederBuffers = sync.Pool{New: func() any { b := make([]byte, feederBuffer); return &b }}

func (f *frameFeeder) Read(p []byte) (int, error) {
	if f.r < f.w {
		n := copy(p, f.buf[f.r:f.w])
		f.r += n
		return n, nil
	}
	return f.readFrames(p)
}

// MessageDone reports whether every byte of the messages read so far was read out and the last one
// has ended (zlibstream stops its decoder there).
func (f *frameFeeder) MessageDone() bool { return f.r == f.w && !f.inMsg }

func (f *frameFeeder) ReadByte() (byte, error) {
	if f.r == f.w {
		if !f.inMsg {
			// Between messages, where an idle connection waits: without the buffer, whose next use may be
			// minutes away. The next message's first byte comes alone.
			if f.bufp != nil {
				feederBuffers.Put(f.bufp)
				f.bufp, f.buf = nil, nil
			}
			n, err := f.readFrames(f.one[:])
			if n == 0 {
				return 0, err
			}
			return f.one[0], nil
		}
		if f.bufp == nil {
			f.bufp = feederBuffers.Get().(*[]byte)
			f.buf = *f.bufp
		}
		n, err := f.readFrames(f.buf)
		if n == 0 {
			return 0, err
		}
		f.r, f.w = 0, n
	}
	b := f.buf[f.r]
	f.r++
	return b, nil
}

// readFrames reads payload bytes of the current message, moving to the next message (and past control
// frames) when it is used up. It never returns bytes of two messages at once.
func (f *frameFeeder) readFrames(p []byte) (int, error) {
	for {
		if f.inMsg {
			n, err := f.c.rd.Read(p)
			if errors.Is(err, io.EOF) {
				f.inMsg = false
				if n > 0 {
					return n, nil
				}
				continue
			}
			return n, wrapClose(err)
		}
		hdr, err := f.c.rd.NextFrame()
		if err != nil {
			return 0, wrapClose(err)
		}
		if hdr.OpCode.IsControl() {
			if err := f.c.ctl(hdr, f.c.rd); err != nil {
				return 0, wrapClose(err)
			}
			continue
		}
		f.inMsg = true
	}
}

// CloseError is a close frame received from the gateway.
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	cc := discord.LookupCloseCode(e.Code)
	if e.Reason != "" {
		return fmt.Sprintf("gateway closed with %d (%s): %s", e.Code, cc.Name, e.Reason)
	}
	return fmt.Sprintf("gateway closed with %d (%s)", e.Code, cc.Name)
}

func wrapClose(err error) error {
	if err == nil {
		return nil // without errors.As, whose target escapes: an allocation per read
	}
	var ce wsutil.ClosedError
	if errors.As(err, &ce) {
		return &CloseError{Code: int(ce.Code), Reason: ce.Reason}
	}
	return err
}

// packIdle is how long a connection goes without a message before its decompressor's history is packed
// (about 4 times smaller for gateway JSON) and the window's buffer (zlib-stream: the whole decoder) goes.
const packIdle = time.Second

type zlibCloser struct{ z *zlibstream.Reader }

func (z zlibCloser) Close() error { z.z.Close(); return nil }

type zstdCloser struct{ d *zstdstream.Reader }

func (z zstdCloser) Close() error { z.d.Close(); return nil }
