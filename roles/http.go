package roles

import (
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

// decodeBody decodes a JSON body of at most limit bytes into v (httpapi.DecodeBody).
func decodeBody(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	return httpapi.DecodeBody(w, r, limit, v)
}

// unauthorized answers 401 without reading the request's body (httpapi.Unauthorized): a stranger
// sending a body slowly holds nothing.
func unauthorized(w http.ResponseWriter, r *http.Request) { httpapi.Unauthorized(w, r) }
