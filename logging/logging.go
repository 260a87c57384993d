// Package logging builds dd's zap logger. Its one promise beyond zap's: no configured secret (the bot
// token, the roles' secrets) ever reaches a log line, whatever path it took there (a message, a field,
// an error from a library, a URL). It does not decide what is logged.
package logging

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"

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
	var enc zapcore.Encoder
	switch o.Format {
	case "json", "":
		enc = zapcore.NewJSONEncoder(encCfg)
	case "console":
		encCfg.EncodeLevel = zapcore.CapitalColorLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	default:
		return nil, fmt.Errorf("logging: format %q is not json or console", o.Format)
	}
	out := o.Output
	if out == nil {
		out = os.Stderr
	}
	sink := zapcore.AddSync(NewRedactor(out, o.Secrets))
	core := zapcore.NewCore(enc, zapcore.Lock(sink), level)
	return zap.New(core, zap.AddCaller(), zap.ErrorOutput(sink)), nil
}

// Redactor is an io.Writer that replaces every secret in what passes through it. zap writes one whole
// entry per Write, so a secret is never split across two calls.
type Redactor struct {
	out     io.Writer
	secrets [][]byte
	mu      sync.Mutex
	buf     []byte
}

// NewRedactor redacts secrets (longest first, so one secret inside another is fully covered).
func NewRedactor(out io.Writer, secrets []string) *Redactor {
	r := &Redactor{out: out}
	for _, s := range secrets {
		if s != "" {
			r.secrets = append(r.secrets, []byte(s))
		}
	}
	sort.Slice(r.secrets, func(i, j int) bool { return len(r.secrets[i]) > len(r.secrets[j]) })
	return r
}

func (r *Redactor) Write(p []byte) (int, error) {
	hit := false
	for _, s := range r.secrets {
		if bytes.Contains(p, s) {
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
		r.buf = bytes.ReplaceAll(r.buf, s, []byte(Redacted))
	}
	if _, err := r.out.Write(r.buf); err != nil {
		return 0, err
	}
	return len(p), nil
}
