package ratelimit

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"
)

// DiscordEpoch is the first millisecond of 2015, the zero of Discord's snowflakes.
const DiscordEpoch = 1420070400000

// Message-delete buckets by the message's age, as observed on Discord.
const (
	deleteRecentAge = 10 * time.Second
	deleteOldAge    = 14 * 24 * time.Hour
)

// Route is what the limiter needs to know about one request.
type Route struct {
	// Key names the route without its major parameter, e.g. "POST /channels/{channel_id}/messages". Routes
	// with the same key have the same Discord bucket hash; it is also the metrics label (bounded set).
	Key string
	// Major is the top-level resource the bucket is per: a channel, guild, webhook or interaction ID.
	// Webhook and interaction tokens appear only as a hash, never in clear.
	Major string
	// Global is whether the request counts towards the token's global limit. Interaction callbacks and
	// webhook-with-token routes do not, as Discord documents.
	Global bool
	// Unauthenticated routes need no bot token (webhook-with-token routes and interaction callbacks carry
	// theirs in the path; GET /gateway needs none): their limits belong to the webhook or interaction,
	// not to the bot that sends.
	Unauthenticated bool
}

// ParseRoute derives the route of a request. path is the API path after the version prefix, as sent
// (still percent-encoded), without the query, e.g. "/channels/123/messages". now decides which
// message-delete bucket (by the message's age) a DELETE of a message falls in.
func ParseRoute(method, path string, now time.Time) Route {
	r := Route{Global: true}
	var b strings.Builder
	b.Grow(len(method) + len(path) + 24)
	b.WriteString(method)
	b.WriteByte(' ')

	rest := strings.TrimPrefix(path, "/")
	var first, third, prev, lastID string
	i := 0
	for ; rest != ""; i++ {
		var seg string
		seg, rest, _ = strings.Cut(rest, "/")
		b.WriteByte('/')
		switch {
		case i == 1 && isSnowflake(seg) && (first == "channels" || first == "guilds"):
			r.Major = seg
			b.WriteString("{" + strings.TrimSuffix(first, "s") + "_id}")
		case i == 1 && isSnowflake(seg) && (first == "webhooks" || first == "interactions"):
			r.Major = seg
			name := strings.TrimSuffix(first, "s")
			b.WriteString("{" + name + "_id}")
			if rest != "" {
				var token string
				token, rest, _ = strings.Cut(rest, "/")
				i++
				r.Major += "/" + hashToken(token)
				r.Global, r.Unauthenticated = false, true
				b.WriteString("/{" + name + "_token}")
			}
		case first == "channels" && i == 4 && seg == "reactions" && method != "GET":
			// Adding and removing reactions share one bucket per channel, whatever the emoji or user.
			key := b.String()
			return Route{Key: "PUT|DELETE" + key[len(method):] + "reactions", Major: r.Major, Global: true}
		case prev == "reactions" && first == "channels" && i == 5:
			b.WriteString("{emoji}")
		case prev == "invites" || prev == "templates":
			b.WriteString("{code}")
		case isSnowflake(seg):
			lastID = seg
			b.WriteString("{id}")
		default:
			b.WriteString(seg)
		}
		switch i {
		case 0:
			first = seg
		case 2:
			third = seg
		}
		prev = seg
	}
	if path == "/" || path == "" {
		b.WriteByte('/')
	}
	r.Key = b.String()
	switch {
	case method == "GET" && (path == "/gateway" || path == "/gateway/"):
		r.Global, r.Unauthenticated = false, true
	case method == "DELETE" && first == "channels" && third == "messages" && i == 4 && prev == lastID && r.Major != "":
		r.Key += deleteAgeClass(lastID, now)
	}
	return r
}

// deleteAgeClass names the message-delete bucket a message falls in by its age.
func deleteAgeClass(id string, now time.Time) string {
	n, err := strconv.ParseUint(id, 10, 64)
	if err != nil {
		return ""
	}
	age := now.Sub(time.UnixMilli(int64(n>>22) + DiscordEpoch))
	switch {
	case age < deleteRecentAge:
		return " (age<10s)"
	case age < deleteOldAge:
		return " (age<14d)"
	default:
		return " (age>=14d)"
	}
}

// isSnowflake reports whether a path segment is a numeric ID.
func isSnowflake(s string) bool {
	if s == "" || len(s) > 20 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// hashToken stands in for a webhook or interaction token wherever dd keeps it (bucket keys, metrics,
// logs): 64 bits of SHA-256 tell tokens apart without revealing them.
func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:8])
}
