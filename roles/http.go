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
			httpapi.Unauthorized(w, r) // without reading the body: a stranger sending one slowly holds nothing
			return
		}
		next.ServeHTTP(w, r)
	})
}
