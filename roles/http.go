package roles

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// writeJSON writes v as JSON with a status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError writes the error body every dd API uses: {"code":0,"message":"..."}.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"code": 0, "message": msg})
}

// secretMatches compares in constant time, so a caller cannot learn a secret byte by byte from timing.
func secretMatches(got, want string) bool {
	return want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// requireSecret lets a request through only with Authorization equal to secret. An empty secret (allowed
// on loopback only, see config) lets everything through.
func requireSecret(secret string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if secret != "" && !secretMatches(r.Header.Get("Authorization"), secret) {
			unauthorized(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// decodeBody decodes a JSON body of at most limit bytes into v. Anything after the value but white space
// is an error: a body is one value, not a stream.
func decodeBody(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("unexpected data after the JSON value (at byte %d)", dec.InputOffset())
	}
	return nil
}

// unauthorized answers 401 without reading the request's body. Go's server would otherwise read up to
// 256 KiB of an unread body before it sends the answer (so that the connection can be reused): a stranger
// could hold the handler with a body sent slowly. The connection is closed after the answer instead.
func unauthorized(w http.ResponseWriter, r *http.Request) {
	dropUnreadBody(w, r)
	writeError(w, http.StatusUnauthorized, "missing or wrong Authorization")
}

// dropUnreadBody makes the answer close the connection without reading what is left of the body.
func dropUnreadBody(w http.ResponseWriter, r *http.Request) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return
	}
	w.Header().Set("Connection", "close")
	_ = http.NewResponseController(w).SetReadDeadline(time.Now())
}
