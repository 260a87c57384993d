package config

import (
	"fmt"
	"net/url"
	"strings"
	"unicode/utf8"
)

// MinSecretLength is the shortest value a secret key (the keys marked secret in keys.go: the secrets and
// the bot token) may hold. A shorter value is guessable, and the logger has to hide it wherever it
// appears: a secret "s" would turn every letter s of every log line into a marker that gives it away.
// Discord's bot tokens are about 70 characters.
const MinSecretLength = 16

// checkSecrets refuses secret values too short to be secrets. Empty means "none" (or the top-level
// secret for the roles' secrets) and is checked elsewhere where it matters. The value is never shown.
func (c *Config) checkSecrets(bad func(key, format string, args ...any)) {
	for _, s := range keys {
		if !s.secret {
			continue
		}
		v, _ := c.k.Get(s.path).(string)
		if n := utf8.RuneCountInString(v); n > 0 && n < MinSecretLength {
			bad(s.path, "too short to be a secret: give at least %d characters (for example the output of `openssl rand -hex 32`)",
				MinSecretLength)
		}
	}
}

// maskURL hides the password of a URL's userinfo (http://bot:xxxxx@host); anything else, URL or not,
// is returned as it is.
func maskURL(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	if list := urlList(s); list != nil {
		for i, u := range list {
			list[i] = maskURL(u)
		}
		return strings.Join(list, ",")
	}
	u, err := url.Parse(s)
	if err != nil {
		// Not a URL Go can read, perhaps because of its password: mask what looks like one.
		scheme, rest, ok := strings.Cut(s, "://")
		at := strings.LastIndex(rest, "@")
		if !ok || at < 0 {
			return s
		}
		if user, _, hasPW := strings.Cut(rest[:at], ":"); hasPW {
			return scheme + "://" + user + ":xxxxx" + rest[at:]
		}
		return s
	}
	if u.User == nil {
		return s
	}
	if _, ok := u.User.Password(); !ok {
		if natsToken(u) != "" {
			u.User = url.User("xxxxx")
			return u.String()
		}
		return s
	}
	return u.Redacted()
}

// urlPasswords returns the password of a URL's userinfo as it is written in s (percent-escaped) and
// decoded, so the logger can redact either form.
func urlPasswords(s string) []string {
	if !strings.Contains(s, "@") {
		return nil
	}
	if list := urlList(s); list != nil {
		var out []string
		for _, u := range list {
			out = append(out, urlPasswords(u)...)
		}
		return out
	}
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return nil
	}
	if tok := natsToken(u); tok != "" {
		return []string{tok}
	}
	pw, ok := u.User.Password()
	if !ok || pw == "" {
		return nil
	}
	out := []string{pw}
	// The written form: between the first ':' after "//" and the last '@' before the host.
	if rest, found := strings.CutPrefix(s, u.Scheme+"://"); found {
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			if _, raw, ok := strings.Cut(rest[:at], ":"); ok && raw != pw {
				out = append(out, raw)
			}
		}
	}
	return out
}

// natsToken is the token of a NATS URL that carries one ("nats://<token>@host:4222": a user without a
// password is a token to NATS), or "".
func natsToken(u *url.URL) string {
	if _, hasPW := u.User.Password(); hasPW {
		return ""
	}
	switch u.Scheme {
	case "nats", "tls", "ws", "wss":
		return u.User.Username()
	}
	return ""
}

// urlList splits a comma-separated list of URLs (cluster.nats_url: "nats://u:p@h1:4222,nats://u:p@h2:4222"),
// nil when s is not one.
func urlList(s string) []string {
	if !strings.Contains(s, ",") || strings.Count(s, "://") < 2 {
		return nil
	}
	return strings.Split(s, ",")
}

// eachString calls fn with every string a config value holds (the value, or a list's elements).
func eachString(v any, fn func(string)) {
	switch v := v.(type) {
	case string:
		fn(v)
	case []any:
		for _, e := range v {
			if s, ok := e.(string); ok {
				fn(s)
			}
		}
	case []string:
		for _, s := range v {
			fn(s)
		}
	}
}

// maskValue masks the URL passwords in a config value.
func maskValue(v any) any {
	switch v := v.(type) {
	case string:
		return maskURL(v)
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			if s, ok := e.(string); ok {
				e = maskURL(s)
			}
			out[i] = e
		}
		return out
	case []string:
		out := make([]string, len(v))
		for i, s := range v {
			out[i] = maskURL(s)
		}
		return out
	}
	return v
}

// quoteURL quotes a URL for an error message, its password masked.
func quoteURL(s string) string { return fmt.Sprintf("%q", maskURL(s)) }
