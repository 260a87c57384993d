package logging

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
)

func TestSecretsNeverReachTheLog(t *testing.T) {
	const token = "MTA1.Gx9-token.abcDEF"
	const secret = "proxy-secret-0123456789"
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

// A short secret (a URL's password; config refuses short secret keys) is redacted where it stands as a
// whole token, not inside every word that contains it: the log stays readable and does not spell it out.
func TestShortSecretIsRedactedOnlyAsAWholeToken(t *testing.T) {
	var out bytes.Buffer
	log, err := New(Options{Level: "info", Format: "json", Secrets: []string{"s"}, Output: &out})
	if err != nil {
		t.Fatal(err)
	}
	log.Info("sessions resumed", zap.String("url", "http://bot:s@host/"), zap.String("auth", "s"))
	_ = log.Sync()
	got := out.String()
	if !strings.Contains(got, `"msg":"sessions resumed"`) || !strings.Contains(got, `"level":"info"`) {
		t.Errorf("words containing the secret were touched:\n%s", got)
	}
	if !strings.Contains(got, `"url":"http://bot:[REDACTED]@host/"`) || !strings.Contains(got, `"auth":"[REDACTED]"`) {
		t.Errorf("the secret standing alone was not redacted:\n%s", got)
	}
	// The rule at the edges: start and end of the text, next to punctuation, next to word characters.
	for in, want := range map[string]string{
		"s":          "[REDACTED]",
		"s,s s":      "[REDACTED],[REDACTED] [REDACTED]",
		"xs sx s_ 5": "xs sx s_ 5",
		"(s)":        "([REDACTED])",
	} {
		var b bytes.Buffer
		_, _ = NewRedactor(&b, []string{"s"}).Write([]byte(in))
		if b.String() != want {
			t.Errorf("%q: got %q, want %q", in, b.String(), want)
		}
	}
}

// A secret as long as config requires is redacted wherever it appears, even glued to other text, and
// in the forms it takes inside a JSON string or a URL.
func TestLongSecretIsRedactedEverywhereAndInEveryForm(t *testing.T) {
	const token = "MTA1.Gx9-token.abcDEF"
	const odd = `pass"with\slash&<0123456789> /?`
	var out bytes.Buffer
	log, err := New(Options{Level: "info", Format: "json", Secrets: []string{token, odd}, Output: &out})
	if err != nil {
		t.Fatal(err)
	}
	u := url.URL{Scheme: "http", Host: "x", Path: "/" + odd, RawQuery: url.Values{"t": {odd}}.Encode()}
	log.Info("x"+token+"y", zap.String("odd", odd), zap.Stringer("url", &u), zap.Error(errors.New("bad "+odd)))
	_ = log.Sync()
	got := out.String()
	for _, form := range []string{token, odd, jsonEscaped(odd, false), url.QueryEscape(odd), url.PathEscape(odd)} {
		if strings.Contains(got, form) {
			t.Errorf("log shows the secret as %q:\n%s", form, got)
		}
	}
	if !strings.Contains(got, `"msg":"x[REDACTED]y"`) {
		t.Errorf("a long secret inside a word was not redacted:\n%s", got)
	}
}

// The console format colours its levels on a terminal only: a log written to a file or a pipe (the
// demo's dd.log) has no escape codes.
func TestConsoleLogToAFileHasNoColourCodes(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "dd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var buf bytes.Buffer
	for _, out := range []io.Writer{f, &buf} {
		log, err := New(Options{Level: "debug", Format: "console", Output: out})
		if err != nil {
			t.Fatal(err)
		}
		log.Info("listening")
		log.Warn("slow")
		_ = log.Sync()
	}
	written, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	for name, got := range map[string]string{"file": string(written), "buffer": buf.String()} {
		if strings.Contains(got, "\x1b[") || !strings.Contains(got, "INFO") || !strings.Contains(got, "WARN") {
			t.Errorf("console log to a %s: want plain INFO and WARN, no escape codes: %q", name, got)
		}
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
	log, _ := New(Options{Level: "info", Format: "json", Secrets: []string{"MTA1.Gx9-token.abcDEF", "secret-one-0123456789", "secret-two-0123456789"}, Output: &out})
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		out.Reset()
		log.Info("event delivered", zap.Int("shard", 3), zap.String("t", "MESSAGE_CREATE"))
	}
}
