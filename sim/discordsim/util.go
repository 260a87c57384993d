package discordsim

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
)

func subtleEqual(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// writeJSON writes v with a status code, as Discord does (application/json).
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError writes Discord's error body {"message","code"}.
func writeError(w http.ResponseWriter, status, code int, msg string) {
	writeJSON(w, status, map[string]any{"message": msg, "code": code})
}

// writeFormError writes Discord's 50035 "Invalid Form Body" with one field error.
func writeFormError(w http.ResponseWriter, field, code, msg string) {
	writeJSON(w, http.StatusBadRequest, map[string]any{
		"code": 50035, "message": "Invalid Form Body",
		"errors": map[string]any{field: map[string]any{"_errors": []map[string]string{{"code": code, "message": msg}}}},
	})
}
