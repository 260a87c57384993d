package logging

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"go.uber.org/zap"
)

func TestSecretsNeverReachTheLog(t *testing.T) {
	const token = "MTA1.Gx9-token.abcDEF"
	const secret = "proxy-secret-1"
	for _, format := range []string{"json", "console"} {
		var out bytes.Buffer
		log, err := New(Options{Level: "debug", Format: format, Secrets: []string{token, secret, ""}, Output: &out})
		if err != nil {
			t.Fatal(err)
		}
		u, _ := url.Parse("http://x/?token=" + token)
		log.Info("identify with "+token, zap.String("auth", "Bot "+token), zap.Error(fmt.Errorf("upstream: %w", errors.New("bad "+secret))),
			zap.Stringer("url", u), zap.Any("headers", map[string][]string{"Authorization": {secret}}))
		log.Sugar().Debugf("raw %s %s", token, secret)
		_ = log.Sync()
		got := out.String()
		if strings.Contains(got, token) || strings.Contains(got, secret) {
			t.Fatalf("%s log shows a secret:\n%s", format, got)
		}
		if n := strings.Count(got, Redacted); n < 7 {
			t.Fatalf("%s log: want every secret replaced by %s (7 places), got %d:\n%s", format, Redacted, n, got)
		}
	}
}

func TestRedactorPassesOtherTextThrough(t *testing.T) {
	var out bytes.Buffer
	r := NewRedactor(&out, []string{"abc", "abcdef"})
	if _, err := r.Write([]byte("x abcdef y abc z\n")); err != nil {
		t.Fatal(err)
	}
	if got, want := out.String(), "x [REDACTED] y [REDACTED] z\n"; got != want {
		t.Fatalf("got %q want %q", got, want)
	}
}

func TestBadLevelOrFormat(t *testing.T) {
	if _, err := New(Options{Level: "loud", Format: "json"}); err == nil {
		t.Error("level loud accepted")
	}
	if _, err := New(Options{Level: "info", Format: "xml"}); err == nil {
		t.Error("format xml accepted")
	}
}

func BenchmarkLogLineWithSecrets(b *testing.B) {
	var out bytes.Buffer
	log, _ := New(Options{Level: "info", Format: "json", Secrets: []string{"MTA1.Gx9-token.abcDEF", "s1", "s2"}, Output: &out})
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		out.Reset()
		log.Info("event delivered", zap.Int("shard", 3), zap.String("t", "MESSAGE_CREATE"))
	}
}
