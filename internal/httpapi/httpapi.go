// Package httpapi holds what every dd HTTP API shares with the others: the listener each role serves on
// (Server: /healthz, /readyz and /metrics without auth, a connection cap answered with 503, request
// bodies that must keep arriving), the JSON error body {"code":0,"message":"..."}, the constant-time
// check of a shared secret, refusing a request without reading its body, strict JSON bodies, and the
// event envelope {"shardId":N,"payload":{...}} that delivery encodes and every receiver (the cache role,
// the bot simulator) decodes.
//
// It is not a router or a middleware kit: each package serves its own routes. It is not for Discord's
// error bodies either (the simulator writes Discord's codes).
package httpapi

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// WriteJSON writes v as JSON with a status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError writes the error body every dd API uses: {"code":0,"message":"..."}.
func WriteError(w http.ResponseWriter, status int, msg string) {
	WriteJSON(w, status, map[string]any{"code": 0, "message": msg})
}

// SecretMatches reports whether got is the secret want, comparing in constant time so that a caller
// cannot learn the secret byte by byte from timing. An empty want matches nothing: a caller that lets
// everything through without a secret says so itself.
func SecretMatches(got, want string) bool {
	return want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// DropUnreadBody makes the answer close the connection without reading what is left of the request's
// body. Go's server would otherwise read up to 256 KiB of an unread body before it sends the answer (so
// that the connection can be reused): a stranger refused with 401 could hold the handler with a body sent
// slowly.
func DropUnreadBody(w http.ResponseWriter, r *http.Request) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return
	}
	w.Header().Set("Connection", "close")
	_ = http.NewResponseController(w).SetReadDeadline(time.Now())
}

// Unauthorized answers 401 without reading the request's body (see DropUnreadBody).
func Unauthorized(w http.ResponseWriter, r *http.Request) {
	DropUnreadBody(w, r)
	WriteError(w, http.StatusUnauthorized, "missing or wrong Authorization")
}

// DecodeBody decodes a JSON body of at most limit bytes into v. Anything after the value but white space
// is an error: a body is one value, not a stream.
func DecodeBody(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("unexpected data after the JSON value (at byte %d)", dec.InputOffset())
	}
	return nil
}
