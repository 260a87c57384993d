package ratelimit

import (
	"strings"
	"testing"
	"time"
)

func TestRouteKeysKeepMajorParametersApart(t *testing.T) {
	now := time.Now()
	recent := snowflakeAt(now.Add(-time.Second))
	mid := snowflakeAt(now.Add(-time.Hour))
	old := snowflakeAt(now.Add(-30 * 24 * time.Hour))
	cases := []struct {
		method, path string
		key, major   string
		global       bool
	}{
		{"POST", "/channels/111/messages", "POST /channels/{channel_id}/messages", "111", true},
		{"PATCH", "/channels/111/messages/222", "PATCH /channels/{channel_id}/messages/{id}", "111", true},
		{"GET", "/guilds/333/members/444", "GET /guilds/{guild_id}/members/{id}", "333", true},
		{"GET", "/guilds/333", "GET /guilds/{guild_id}", "333", true},
		{"GET", "/users/@me", "GET /users/@me", "", true},
		{"GET", "/users/555", "GET /users/{id}", "", true},
		{"PUT", "/applications/9/guilds/333/commands", "PUT /applications/{id}/guilds/{id}/commands", "", true},
		{"GET", "/invites/abcDEF", "GET /invites/{code}", "", true},
		{"PUT", "/channels/111/messages/222/reactions/%F0%9F%91%8D/@me", "PUT|DELETE /channels/{channel_id}/messages/{id}/reactions", "111", true},
		{"DELETE", "/channels/111/messages/223/reactions/name:123/999", "PUT|DELETE /channels/{channel_id}/messages/{id}/reactions", "111", true},
		{"DELETE", "/channels/111/messages/223/reactions", "PUT|DELETE /channels/{channel_id}/messages/{id}/reactions", "111", true},
		{"GET", "/channels/111/messages/222/reactions/%F0%9F%91%8D", "GET /channels/{channel_id}/messages/{id}/reactions/{emoji}", "111", true},
		{"DELETE", "/channels/111/messages/" + recent, "DELETE /channels/{channel_id}/messages/{id} (age<10s)", "111", true},
		{"DELETE", "/channels/111/messages/" + mid, "DELETE /channels/{channel_id}/messages/{id} (age<14d)", "111", true},
		{"DELETE", "/channels/111/messages/" + old, "DELETE /channels/{channel_id}/messages/{id} (age>=14d)", "111", true},
		{"GET", "/gateway", "GET /gateway", "", false},
		{"GET", "/gateway/bot", "GET /gateway/bot", "", true},
		{"POST", "/interactions/777/tok-en/callback", "POST /interactions/{interaction_id}/{interaction_token}/callback", "777/" + hashToken("tok-en"), false},
		{"GET", "/webhooks/888", "GET /webhooks/{webhook_id}", "888", true},
		{"POST", "/webhooks/888/secret-token", "POST /webhooks/{webhook_id}/{webhook_token}", "888/" + hashToken("secret-token"), false},
		{"PATCH", "/webhooks/888/secret-token/messages/@original", "PATCH /webhooks/{webhook_id}/{webhook_token}/messages/@original", "888/" + hashToken("secret-token"), false},
	}
	for _, c := range cases {
		r := ParseRoute(c.method, c.path, now)
		if r.Key != c.key || r.Major != c.major || r.Global != c.global {
			t.Errorf("%s %s: got {%q %q global=%v}, want {%q %q global=%v}", c.method, c.path, r.Key, r.Major, r.Global, c.key, c.major, c.global)
		}
		if strings.Contains(r.Key+r.Major, "secret-token") || strings.Contains(r.Key+r.Major, "tok-en") {
			t.Errorf("%s %s: a token appears in clear in %q / %q", c.method, c.path, r.Key, r.Major)
		}
	}
}

func snowflakeAt(t time.Time) string {
	return uitoa(uint64(t.UnixMilli()-DiscordEpoch) << 22)
}

func uitoa(n uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

func BenchmarkRouteKey(b *testing.B) {
	now := time.Now()
	paths := []struct{ m, p string }{
		{"POST", "/channels/1234567890123456789/messages"},
		{"PUT", "/channels/1234567890123456789/messages/1234567890123456790/reactions/%F0%9F%91%8D/@me"},
		{"GET", "/guilds/1234567890123456789/members/1234567890123456790"},
		{"POST", "/webhooks/1234567890123456789/abcdefghijklmnopqrstuvwxyz0123456789"},
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		p := paths[i%len(paths)]
		_ = ParseRoute(p.m, p.p, now)
	}
}
