package discordsim

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// One websocket connection: a reader goroutine (frames, validation, opcodes) and a writer goroutine
// (the outgoing queue, compression). A connection serves at most one session at a time; the session
// outlives it (see gateway.go).

type compressKind uint8

const (
	compressNone compressKind = iota
	compressZlib
	compressZstd
)

const (
	// maxClientPayload: Discord closes with 4002 on a client message over 4096 bytes.
	maxClientPayload = 4096
	// closeWait is how long the server waits for the client's close frame after sending its own.
	closeWait = 2 * time.Second
	// writeTimeout: a client that does not read for this long is dropped.
	writeTimeout = 30 * time.Second
	// maxQueued messages waiting for the writer: past it the client is too slow and is dropped (its
	// session stays resumable).
	maxQueued = 1 << 18
	// largeBotGuilds: past this many guilds a bot uses large bot sharding, where the shard count must be
	// a multiple of max_concurrency (else 4010).
	largeBotGuilds = 150000
	// closeHeartbeatTimeout is sent when a client misses its heartbeat (see gateway.go).
	closeHeartbeatTimeout = 4000
)

// closeEndsSession: after the server closes with one of these codes the session cannot be resumed.
// Every other code (and a dropped TCP connection) leaves it resumable for ResumeWindow.
func closeEndsSession(code int) bool {
	switch code {
	case 1000, 1001, 4004, 4007, 4009, 4010, 4011, 4012, 4013, 4014:
		return true
	}
	return false
}

type outItem struct {
	ev   *gwEvent // a dispatch: rendered with seq and the session's variant of d
	seq  int64
	sess *session
	raw  []byte    // otherwise a complete payload, or a control frame's body
	ctrl ws.OpCode // 0 for data; ws.OpClose or ws.OpPong
}

type gwConn struct {
	g         *gatewayState
	nc        net.Conn
	br        *bufio.Reader
	endpoint  string // "gateway" or "resume"
	resumeURL string
	compress  compressKind
	enc       streamEncoder // writer-owned

	sess            atomic.Pointer[session] // nil until IDENTIFY or RESUME succeeds (and after op 9)
	payloadCompress atomic.Bool             // IDENTIFY compress: true
	noAck           atomic.Bool             // admin: stop ACKing heartbeats (a zombie)
	lastBeat        atomic.Int64            // unix nanos of HELLO or the last heartbeat

	mu         sync.Mutex
	queue      []outItem
	spare      []outItem
	closing    bool // a close frame is queued or the socket was dropped: nothing more is queued
	serverCode int  // the close code the server sent, 0 if none
	clientCode int  // the close code of a close the client started, 0 if none
	hbTimer    *time.Timer
	reconnect  *time.Timer // enforces op 7

	wake       chan struct{}
	readerDone chan struct{}
	writerDone chan struct{}

	sendTimes []int64 // reader-owned: times of the last SendLimit messages
	sendHead  int
	hdr       [10]byte // writer-owned
}

func (g *gatewayState) serveWS(endpoint string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		nc, rw, _, err := ws.UpgradeHTTP(r, w)
		if err != nil {
			return // UpgradeHTTP answered with an HTTP error
		}
		_ = nc.SetDeadline(time.Time{})
		c := &gwConn{g: g, nc: nc, br: rw.Reader, endpoint: endpoint, resumeURL: "ws://" + r.Host + "/gateway-resume",
			wake: make(chan struct{}, 1), readerDone: make(chan struct{}), writerDone: make(chan struct{})}
		code, reason := c.parseQuery(r.URL.Query())
		if code == 0 && g.s.cfg.RequireUserAgent && r.Header.Get("User-Agent") == "" {
			code, reason = 4002, "User-Agent header is required"
		}
		if code == 0 && c.compress != compressNone {
			c.enc = newStreamEncoder(c.compress)
		}
		g.addConn(c)
		go c.writeLoop()
		if code != 0 {
			c.closeWith(code, reason)
		} else {
			c.sendHello()
		}
		c.readLoop()
		c.shutdown()
		c.finish()
	}
}

// parseQuery checks ?v=10&encoding=json[&compress=zlib-stream|zstd-stream]. Only JSON is simulated:
// encoding=etf (or anything but json, or none) closes with 4002, as does an unknown compress value.
func (c *gwConn) parseQuery(q url.Values) (int, string) {
	if q.Get("v") != "10" {
		return 4012, "invalid API version"
	}
	if q.Get("encoding") != "json" {
		return 4002, "encoding must be json (etf is not simulated)"
	}
	switch q.Get("compress") {
	case "":
	case "zlib-stream":
		c.compress = compressZlib
	case "zstd-stream":
		c.compress = compressZstd
	default:
		return 4002, "unknown compress " + strconv.Quote(q.Get("compress"))
	}
	return 0, ""
}

func (c *gwConn) sendHello() {
	iv := c.g.s.cfg.HeartbeatInterval.Milliseconds()
	c.sendRaw([]byte(`{"t":null,"s":null,"op":10,"d":{"heartbeat_interval":` + strconv.FormatInt(iv, 10) +
		`,"_trace":["[\"gateway-sim\",{\"micros\":0}]"]}}`))
	c.lastBeat.Store(time.Now().UnixNano())
	c.mu.Lock()
	if !c.closing {
		c.hbTimer = time.AfterFunc(c.beatAllowance(), c.checkHeartbeat)
	}
	c.mu.Unlock()
}

// beatAllowance: a heartbeat is due every interval (the first after interval×jitter); the server allows
// half an interval of grace before it gives up on the client.
func (c *gwConn) beatAllowance() time.Duration { return c.g.s.cfg.HeartbeatInterval * 3 / 2 }

func (c *gwConn) checkHeartbeat() {
	deadline := time.Unix(0, c.lastBeat.Load()).Add(c.beatAllowance())
	if wait := time.Until(deadline); wait > 0 {
		c.mu.Lock()
		if !c.closing && c.hbTimer != nil {
			c.hbTimer.Reset(wait)
		}
		c.mu.Unlock()
		return
	}
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	if !closing {
		c.g.bump(func(st *GatewayStats) { st.HeartbeatTimeouts++ })
		c.closeWith(closeHeartbeatTimeout, "heartbeat timed out")
	}
}

// ---- reading ----

func (c *gwConn) readLoop() {
	var msg []byte
	inMsg := false
	for {
		h, err := ws.ReadHeader(c.br)
		if err != nil {
			return
		}
		if h.Rsv != 0 || h.OpCode.IsReserved() || !h.Masked {
			c.closeWith(1002, "protocol error")
			return
		}
		if h.OpCode.IsControl() {
			if h.Length > 125 || !h.Fin {
				c.closeWith(1002, "protocol error")
				return
			}
			p := make([]byte, h.Length)
			if _, err := io.ReadFull(c.br, p); err != nil {
				return
			}
			ws.Cipher(p, h.Mask, 0)
			switch h.OpCode {
			case ws.OpClose:
				c.onClientClose(p)
				return
			case ws.OpPing:
				c.enqueue(outItem{ctrl: ws.OpPong, raw: p})
			}
			continue
		}
		c.mu.Lock()
		closing := c.closing
		c.mu.Unlock()
		if closing || int64(len(msg))+h.Length > maxClientPayload {
			if !closing {
				c.g.bump(func(st *GatewayStats) { st.DecodeErrorCloses++ })
				c.closeWith(4002, "payload over 4096 bytes")
			}
			if _, err := io.CopyN(io.Discard, c.br, h.Length); err != nil {
				return
			}
			continue
		}
		if (h.OpCode == ws.OpContinuation) != inMsg {
			c.closeWith(1002, "protocol error: bad fragmentation")
			return
		}
		n := len(msg)
		msg = append(msg, make([]byte, h.Length)...)
		if _, err := io.ReadFull(c.br, msg[n:]); err != nil {
			return
		}
		ws.Cipher(msg[n:], h.Mask, 0)
		if !h.Fin {
			inMsg = true
			continue
		}
		inMsg = false
		c.handle(msg)
		msg = nil
	}
}

// onClientClose handles a close frame: the echo of ours, or the client closing (then echoed).
func (c *gwConn) onClientClose(p []byte) {
	code := 1005 // no status code
	if len(p) >= 2 {
		code = int(binary.BigEndian.Uint16(p))
	}
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.closing = true
	c.clientCode = code
	echo := code
	if code == 1005 {
		echo = 1000
	}
	c.g.bump(func(st *GatewayStats) { st.CloseCodesReceived[code]++ })
	c.queue = append(c.queue, outItem{ctrl: ws.OpClose, raw: ws.NewCloseFrameBody(ws.StatusCode(echo), "")})
	c.mu.Unlock()
	c.g.pending.Add(1)
	c.signal()
	// The session's fate is decided by the close frame, not by when the socket is finally gone: a client
	// that closes with 1000 and resumes at once must find its session ended.
	if sess := c.sess.Load(); sess != nil {
		c.g.detach(sess, c, code == 1000 || code == 1001, "client closed with "+strconv.Itoa(code))
	}
}

// shutdown closes the socket once the close handshake (if any) is done, and stops the writer.
func (c *gwConn) shutdown() {
	c.mu.Lock()
	graceful := c.closing && (c.serverCode != 0 || c.clientCode != 0)
	c.mu.Unlock()
	if graceful {
		select {
		case <-c.writerDone:
		case <-time.After(time.Second):
		}
	}
	_ = c.nc.Close()
	close(c.readerDone)
	<-c.writerDone
}

// allowSend applies Discord's send limit (SendLimit per SendWindow per connection, sliding).
func (c *gwConn) allowSend(now int64) bool {
	limit, window := c.g.s.cfg.SendLimit, int64(c.g.s.cfg.SendWindow)
	if len(c.sendTimes) < limit {
		c.sendTimes = append(c.sendTimes, now)
		return true
	}
	if now-c.sendTimes[c.sendHead] < window {
		return false
	}
	c.sendTimes[c.sendHead] = now
	c.sendHead = (c.sendHead + 1) % limit
	return true
}

func (c *gwConn) handle(data []byte) {
	if !c.allowSend(time.Now().UnixNano()) {
		c.g.bump(func(st *GatewayStats) { st.RateLimitCloses++ })
		c.closeWith(4008, "rate limited")
		return
	}
	top, ok := decodeObject(data)
	if !ok {
		c.decodeError("payload is not a JSON object")
		return
	}
	op, ok := jsonInt(top["op"])
	if !ok {
		c.decodeError("op must be an integer")
		return
	}
	d := top["d"]
	switch op {
	case 1:
		c.onHeartbeat(d)
	case 2:
		c.onIdentify(d)
	case 6:
		c.onResume(d)
	case 8:
		c.onRequestMembers(d)
	case 3, 4, 31: // presence, voice state, soundboard: accepted, not simulated
		if c.sess.Load() == nil {
			c.closeWith(4003, "not authenticated")
			return
		}
		if _, ok := decodeObject(d); !ok {
			c.decodeError("d must be an object")
		}
	default:
		c.closeWith(4001, "unknown opcode "+strconv.FormatInt(op, 10))
	}
}

func (c *gwConn) decodeError(reason string) {
	c.g.bump(func(st *GatewayStats) { st.DecodeErrorCloses++ })
	c.closeWith(4002, reason)
}

func (c *gwConn) onHeartbeat(d json.RawMessage) {
	if !isNull(d) {
		if v, ok := jsonInt(d); !ok || v < 0 {
			c.decodeError("heartbeat d must be the last sequence number or null")
			return
		}
	}
	c.lastBeat.Store(time.Now().UnixNano())
	c.g.heartbeats.Add(1)
	if !c.noAck.Load() {
		c.sendRaw([]byte(`{"t":null,"s":null,"op":11,"d":null}`))
	}
}

type identifyReq struct {
	token          string
	tokenIdx       int
	intents        int
	shard, num     int
	largeThreshold int
	compress       bool    // payload compression
	guilds         []Guild // of the shard
}

func (c *gwConn) onIdentify(d json.RawMessage) {
	if c.sess.Load() != nil {
		c.closeWith(4005, "already authenticated")
		return
	}
	req, code, reason := c.parseIdentify(d)
	if code != 0 {
		c.g.recordIdentify(IdentifyRecord{At: time.Now(), TokenIdx: req.tokenIdx, Shard: req.shard,
			NumShards: req.num, Outcome: IdentifyRejected, Reason: reason, CloseCode: code, Endpoint: c.endpoint})
		if code == 4002 {
			c.decodeError(reason)
		} else {
			c.closeWith(code, reason)
		}
		return
	}
	c.g.identify(c, req)
}

// parseIdentify validates IDENTIFY's d; a non-zero code is the close code.
func (c *gwConn) parseIdentify(d json.RawMessage) (req identifyReq, code int, reason string) {
	req.tokenIdx, req.num, req.largeThreshold = -1, 1, 50
	obj, ok := decodeObject(d)
	if !ok {
		return req, 4002, "identify d must be an object"
	}
	if err := json.Unmarshal(obj["token"], &req.token); err != nil || obj["token"] == nil {
		return req, 4002, "identify token must be a string"
	}
	props, ok := decodeObject(obj["properties"])
	if !ok {
		return req, 4002, "identify properties must be an object"
	}
	for _, k := range []string{"os", "browser", "device"} {
		var s string
		if json.Unmarshal(props[k], &s) != nil || props[k] == nil {
			return req, 4002, "identify properties." + k + " must be a string"
		}
	}
	var shardOK = true
	if raw, ok := obj["shard"]; ok && !isNull(raw) {
		var sh []json.RawMessage
		shardOK = json.Unmarshal(raw, &sh) == nil && len(sh) == 2
		if shardOK {
			id, ok1 := jsonInt(sh[0])
			num, ok2 := jsonInt(sh[1])
			shardOK = ok1 && ok2 && id >= 0 && num >= 1 && id < num && num <= 1<<20
			req.shard, req.num = int(id), int(num)
		}
	}
	if raw, ok := obj["large_threshold"]; ok {
		lt, ok := jsonInt(raw)
		if !ok || lt < 50 || lt > 250 {
			return req, 4002, "large_threshold must be an integer from 50 to 250"
		}
		req.largeThreshold = int(lt)
	}
	if raw, ok := obj["compress"]; ok {
		var b bool
		if json.Unmarshal(raw, &b) != nil {
			return req, 4002, "compress must be a boolean"
		}
		if b && c.compress != compressNone {
			return req, 4002, "compress: true is not allowed with transport compression"
		}
		req.compress = b
	}
	if raw, ok := obj["presence"]; ok && !isNull(raw) {
		if _, ok := decodeObject(raw); !ok {
			return req, 4002, "presence must be an object"
		}
	}
	req.tokenIdx = c.g.s.tokenIndex(strings.TrimPrefix(req.token, "Bot "))
	if req.tokenIdx < 0 {
		return req, 4004, "authentication failed"
	}
	rawIntents, ok := obj["intents"]
	if !ok || isNull(rawIntents) {
		return req, 4013, "intents are required"
	}
	intents, ok := jsonInt(rawIntents)
	if !ok || intents < 0 || intents&^validIntents != 0 {
		return req, 4013, "invalid intents " + string(rawIntents)
	}
	req.intents = int(intents)
	if p := req.intents & privilegedIntents &^ c.g.s.cfg.PrivilegedIntents; p != 0 {
		return req, 4014, "disallowed intents " + strconv.Itoa(p)
	}
	if !shardOK {
		return req, 4010, "invalid shard"
	}
	if mc := c.g.s.cfg.MaxConcurrency; mc > 1 && req.num%mc != 0 && c.g.s.world.count() > largeBotGuilds {
		return req, 4010, fmt.Sprintf("large bot sharding: the shard count must be a multiple of %d", mc)
	}
	req.guilds = c.g.s.world.shardGuilds(req.shard, req.num)
	if len(req.guilds) > c.g.s.cfg.MaxGuildsPerShard {
		return req, 4011, "sharding required: " + strconv.Itoa(len(req.guilds)) + " guilds on this shard"
	}
	return req, 0, ""
}

type resumeReq struct {
	tokenIdx  int
	sessionID string
	seq       int64
}

func (c *gwConn) onResume(d json.RawMessage) {
	if c.sess.Load() != nil {
		c.closeWith(4005, "already authenticated")
		return
	}
	obj, ok := decodeObject(d)
	var token string
	var req resumeReq
	if ok {
		ok = json.Unmarshal(obj["token"], &token) == nil && obj["token"] != nil &&
			json.Unmarshal(obj["session_id"], &req.sessionID) == nil && obj["session_id"] != nil
	}
	if ok {
		req.seq, ok = jsonInt(obj["seq"])
		ok = ok && req.seq >= 0
		if c.g.s.cfg.SequenceFromZero {
			req.seq++ // the client's seq k is the session's k+1
		}
	}
	if !ok {
		c.decodeError("resume d must be {token: string, session_id: string, seq: integer}")
		return
	}
	req.tokenIdx = c.g.s.tokenIndex(strings.TrimPrefix(token, "Bot "))
	c.g.resume(c, req)
}

// ---- writing ----

// enqueue adds a message for the writer; false if the connection is closing.
func (c *gwConn) enqueue(it outItem) bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	if len(c.queue) >= maxQueued {
		c.closing = true
		c.mu.Unlock()
		c.g.bump(func(st *GatewayStats) { st.SlowConsumerDrops++ })
		_ = c.nc.Close()
		return false
	}
	c.queue = append(c.queue, it)
	c.mu.Unlock()
	c.g.pending.Add(1)
	c.signal()
	return true
}

func (c *gwConn) sendRaw(p []byte) bool { return c.enqueue(outItem{raw: p}) }

func (c *gwConn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// closeWith queues a close frame after what is already queued; the socket closes when the client
// answers or after closeWait. The session is detached (or ended) at once. Never call it while holding
// the session's mu.
func (c *gwConn) closeWith(code int, reason string) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.closing = true
	c.serverCode = code
	c.g.bump(func(st *GatewayStats) { st.CloseCodesSent[code]++ }) // before the client can see the close
	c.queue = append(c.queue, outItem{ctrl: ws.OpClose, raw: ws.NewCloseFrameBody(ws.StatusCode(code), reason)})
	c.mu.Unlock()
	c.g.pending.Add(1)
	c.signal()
	_ = c.nc.SetReadDeadline(time.Now().Add(closeWait))
	if sess := c.sess.Load(); sess != nil {
		c.g.detach(sess, c, closeEndsSession(code), "server closed with "+strconv.Itoa(code))
	}
}

// drop closes the TCP connection without a close frame, as a network failure would.
func (c *gwConn) drop() {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	_ = c.nc.Close()
}

var (
	bufWriterPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 8192) }}
	scratchPool   = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}
)

func (c *gwConn) writeLoop() {
	defer close(c.writerDone)
	defer func() {
		if c.enc != nil {
			c.enc.close()
		}
	}()
	for {
		select {
		case <-c.wake:
		case <-c.readerDone:
			return
		}
		c.mu.Lock()
		items := c.queue
		c.queue, c.spare = c.spare[:0], nil
		c.mu.Unlock()
		if len(items) == 0 {
			continue
		}
		done := c.writeBatch(items)
		c.g.pending.Add(-int64(len(items)))
		clear(items)
		if cap(items) <= 1024 {
			c.mu.Lock()
			c.spare = items[:0]
			c.mu.Unlock()
		}
		if done {
			return
		}
	}
}

// writeBatch writes items through one buffered writer; true when the connection is finished (a close
// frame was written or writing failed).
func (c *gwConn) writeBatch(items []outItem) (done bool) {
	bw := bufWriterPool.Get().(*bufio.Writer)
	bw.Reset(c.nc)
	sp := scratchPool.Get().(*[]byte)
	defer func() {
		bw.Reset(nil)
		bufWriterPool.Put(bw)
		if cap(*sp) <= 64<<10 {
			scratchPool.Put(sp)
		}
	}()
	_ = c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	written := len(items)
	for i, it := range items {
		if it.ctrl != 0 {
			c.writeFrame(bw, it.ctrl, it.raw)
			if it.ctrl == ws.OpClose {
				written, done = i, true
				break
			}
			continue
		}
		payload := it.raw
		if it.ev != nil {
			*sp = renderDispatch((*sp)[:0], it)
			payload = *sp
		}
		switch {
		case c.enc != nil:
			c.writeFrame(bw, ws.OpBinary, c.enc.compress(payload))
		case len(payload) >= payloadCompressMin && c.payloadCompress.Load():
			c.writeFrame(bw, ws.OpBinary, zlibOnce(payload))
		default:
			c.writeFrame(bw, ws.OpText, payload)
		}
	}
	if err := bw.Flush(); err != nil {
		_ = c.nc.Close()
		return true
	}
	for _, it := range items[:written] {
		if it.ev != nil {
			it.sess.markSent(it.seq)
		}
	}
	return done
}

func (c *gwConn) writeFrame(bw *bufio.Writer, op ws.OpCode, p []byte) {
	h := c.hdr[:0]
	h = append(h, 0x80|byte(op))
	switch n := len(p); {
	case n < 126:
		h = append(h, byte(n))
	case n <= 0xffff:
		h = append(h, 126, byte(n>>8), byte(n))
	default:
		h = append(h, 127)
		h = binary.BigEndian.AppendUint64(h, uint64(n))
	}
	_, _ = bw.Write(h)
	_, _ = bw.Write(p)
}

// renderDispatch appends {"t":..,"s":..,"op":0,"d":..} for one session.
func renderDispatch(b []byte, it outItem) []byte {
	b = append(b, `{"t":"`...)
	b = append(b, it.ev.name...)
	b = append(b, `","s":`...)
	seq := it.seq
	if it.sess.g.s.cfg.SequenceFromZero {
		seq--
	}
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `,"op":0,"d":`...)
	b = it.ev.appendPayloadFor(b, it.sess)
	return append(b, '}')
}

// finish decides what the end of this connection means for its session.
func (c *gwConn) finish() {
	c.mu.Lock()
	if c.hbTimer != nil {
		c.hbTimer.Stop()
	}
	if c.reconnect != nil {
		c.reconnect.Stop()
	}
	serverCode, clientCode := c.serverCode, c.clientCode
	left := len(c.queue)
	c.queue, c.spare = nil, nil
	c.mu.Unlock()
	c.g.pending.Add(-int64(left))
	c.g.removeConn(c)
	sess := c.sess.Load()
	if sess == nil {
		return
	}
	end, why := false, ""
	switch {
	case serverCode != 0:
		end, why = closeEndsSession(serverCode), "server closed with "+strconv.Itoa(serverCode)
	case clientCode == 1000 || clientCode == 1001:
		end, why = true, "client closed with "+strconv.Itoa(clientCode)
	}
	c.g.detach(sess, c, end, why)
}

// ---- JSON helpers (exact key names, as Discord's decoder: encoding/json would also match "OP") ----

func decodeObject(raw json.RawMessage) (map[string]json.RawMessage, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil, false
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return nil, false
	}
	return m, true
}

func jsonInt(raw json.RawMessage) (int64, bool) {
	v, err := strconv.ParseInt(string(bytes.TrimSpace(raw)), 10, 64)
	return v, err == nil
}

func isNull(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || string(t) == "null"
}
