package httpapi

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// Bots and tools parse dd's errors by this exact body; it must not drift between APIs.
func TestWriteErrorWritesDDsErrorBody(t *testing.T) {
	rec := httptest.NewRecorder()
	WriteError(rec, http.StatusTeapot, `a "quoted" <message>`)
	if rec.Code != http.StatusTeapot {
		t.Fatalf("status %d, want %d", rec.Code, http.StatusTeapot)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json", ct)
	}
	if want := "{\"code\":0,\"message\":\"a \\\"quoted\\\" \\u003cmessage\\u003e\"}\n"; rec.Body.String() != want {
		t.Fatalf("body %q, want %q", rec.Body.String(), want)
	}
}

func TestSecretMatchesOnlyTheSecret(t *testing.T) {
	for _, tc := range []struct {
		got, want string
		ok        bool
	}{
		{"s3cret", "s3cret", true},
		{"s3cre", "s3cret", false},
		{"s3cret ", "s3cret", false},
		{"", "s3cret", false},
		{"", "", false}, // no secret configured matches nothing
		{"anything", "", false},
	} {
		if got := SecretMatches(tc.got, tc.want); got != tc.ok {
			t.Errorf("SecretMatches(%q, %q) = %v, want %v", tc.got, tc.want, got, tc.ok)
		}
	}
}
