package roles

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
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
			writeError(w, http.StatusUnauthorized, "missing or wrong Authorization")
			return
		}
		next.ServeHTTP(w, r)
	})
}
