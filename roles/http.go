package roles

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/ddhq/dd/internal/httpapi"
)

// requireSecret lets a request through only with Authorization equal to secret. An empty secret (allowed
// on loopback only, see config) lets everything through.
func requireSecret(secret string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if secret != "" && !httpapi.SecretMatches(r.Header.Get("Authorization"), secret) {
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
	httpapi.DropUnreadBody(w, r)
	httpapi.WriteError(w, http.StatusUnauthorized, "missing or wrong Authorization")
}
