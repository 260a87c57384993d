// Package logging builds dd's zap logger. Its one promise beyond zap's: no configured secret (the bot
// token, the roles' secrets) ever reaches a log line, whatever path it took there (a message, a field,
// an error from a library, a URL). It does not decide what is logged.
package logging

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"unicode/utf8"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Redacted replaces a secret in log output.
const Redacted = "[REDACTED]"

// Options configure New.
type Options struct {
	Level   string    // debug | info | warn | error
	Format  string    // json | console
	Secrets []string  // values to redact wherever they appear
	Output  io.Writer // default os.Stderr
}

// New returns a logger whose output passes through a redacting writer.
func New(o Options) (*zap.Logger, error) {
	var level zapcore.Level
	if err := level.UnmarshalText([]byte(o.Level)); err != nil {
		return nil, fmt.Errorf("logging: level %q: %w", o.Level, err)
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	encCfg.EncodeDuration = zapcore.StringDurationEncoder // "15s", not a bare 15
	out := o.Output
	if out == nil {
		out = os.Stderr
	}
	var enc zapcore.Encoder
	switch o.Format {
	case "json", "":
		enc = zapcore.NewJSONEncoder(encCfg)
	case "console":
		// Colours only on a terminal: in a file or a pipe the escape codes are noise.
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		if isTerminal(out) {
			encCfg.EncodeLevel = zapcore.CapitalColorLevelEncoder
		}
		enc = zapcore.NewConsoleEncoder(encCfg)
	default:
		return nil, fmt.Errorf("logging: format %q is not json or console", o.Format)
	}
	sink := zapcore.AddSync(NewRedactor(out, o.Secrets))
	core := zapcore.NewCore(enc, zapcore.Lock(sink), level)
	return zap.New(core, zap.AddCaller(), zap.ErrorOutput(sink)), nil
}

// isTerminal reports whether w is a terminal (a character device, not a file or a pipe).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Redactor is an io.Writer that replaces every secret in what passes through it. zap writes one whole
// entry per Write, so a secret is never split across two calls.
//
// The rule: a secret of wholeWordMin characters or more (every secret dd's config accepts: it refuses
// shorter ones) is replaced wherever it appears, even inside a longer word, since no ordinary text holds
// 16 characters of it by chance. A shorter one (a URL's password: dd does not police those) is replaced
// only where it stands as a whole token: not preceded or followed by a letter, digit or underscore when
// its own first or last character is one. So a password "s" hides "bot:s@host" but not every letter s of
// every line, and the log does not give away which letters it is made of. Each secret is also looked for
// as it appears inside a JSON string (escaped) and percent-encoded in a URL.
type Redactor struct {
	out     io.Writer
	secrets []secret
	mu      sync.Mutex
	buf     []byte
}

type secret struct {
	b         []byte
	wholeWord bool
}

// wholeWordMin is the length from which a secret is redacted inside longer words too (config's
// MinSecretLength).
const wholeWordMin = 16

// NewRedactor redacts secrets (longest first, so one secret inside another is fully covered).
func NewRedactor(out io.Writer, secrets []string) *Redactor {
	r := &Redactor{out: out}
	seen := map[string]bool{}
	for _, s := range secrets {
		if s == "" {
			continue
		}
		// The forms a secret takes in a log line: as is, escaped in a JSON string (zap's way, and
		// encoding/json's with <, > and & escaped too), percent-encoded in a URL.
		for _, form := range []string{s, jsonEscaped(s, false), jsonEscaped(s, true), url.QueryEscape(s), url.PathEscape(s)} {
			if !seen[form] {
				seen[form] = true
				r.secrets = append(r.secrets, secret{b: []byte(form), wholeWord: utf8.RuneCountInString(s) < wholeWordMin})
			}
		}
	}
	sort.SliceStable(r.secrets, func(i, j int) bool { return len(r.secrets[i].b) > len(r.secrets[j].b) })
	return r
}

// jsonEscaped is s as it appears between the quotes of a JSON string.
func jsonEscaped(s string, escapeHTML bool) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(escapeHTML)
	_ = enc.Encode(s)
	return strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(b.String(), `"`), "\n"), `"`)
}

func (r *Redactor) Write(p []byte) (int, error) {
	hit := false
	for _, s := range r.secrets {
		if bytes.Contains(p, s.b) {
			hit = true
			break
		}
	}
	if !hit {
		return r.out.Write(p)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.buf = append(r.buf[:0], p...)
	for _, s := range r.secrets {
		r.buf = s.replace(r.buf)
	}
	if _, err := r.out.Write(r.buf); err != nil {
		return 0, err
	}
	return len(p), nil
}

// replace returns b with the secret's occurrences replaced by Redacted, under the rule above.
func (s secret) replace(b []byte) []byte {
	if !s.wholeWord {
		return bytes.ReplaceAll(b, s.b, []byte(Redacted))
	}
	var out []byte
	from, done := 0, 0
	for {
		i := bytes.Index(b[from:], s.b)
		if i < 0 {
			break
		}
		start, end := from+i, from+i+len(s.b)
		if s.standsAlone(b, start, end) {
			out = append(out, b[done:start]...)
			out = append(out, Redacted...)
			done = end
			from = end
		} else {
			from = start + 1
		}
	}
	if out == nil {
		return b
	}
	return append(out, b[done:]...)
}

// standsAlone reports whether b[start:end], an occurrence of the secret, is not part of a longer word.
func (s secret) standsAlone(b []byte, start, end int) bool {
	if start > 0 && isWordByte(s.b[0]) && isWordByte(b[start-1]) {
		return false
	}
	if end < len(b) && isWordByte(s.b[len(s.b)-1]) && isWordByte(b[end]) {
		return false
	}
	return true
}

// isWordByte reports a letter, digit or underscore; any byte of a multi-byte UTF-8 character counts as
// a letter.
func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c >= 0x80
}
