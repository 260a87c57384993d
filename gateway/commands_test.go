package gateway

import (
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/ddhq/dd/shard"
)

// noShards runs no shard here; its guilds are all on shard 3.
type noShards struct{}

func (noShards) Shard(int) *shard.Shard   { return nil }
func (noShards) Shards() []*shard.Shard   { return nil }
func (noShards) ShardForGuild(uint64) int { return 3 }

func TestCommandHandlerAnswers(t *testing.T) {
	var set ShardSet
	h := CommandHandler(func() ShardSet { return set }, zap.NewNop())
	call := func(method, path, body string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
		return rec.Code, strings.TrimSpace(rec.Body.String())
	}
	for _, c := range []struct {
		started            bool
		method, path, body string
		code               int
		msg                string
	}{
		{false, "POST", "/shards/0/send", `{"op":3,"d":{}}`, 503, "shards are not started yet"},
		{false, "POST", "/", `{"type":"ShardPayload","shardId":0}`, 503, "shards are not started yet"},
		{false, "GET", "/status", "", 404, "no gateway endpoint GET /status"},
		{true, "GET", "/shards/0/send", "", 404, "no gateway endpoint GET /shards/0/send"},
		{true, "POST", "/shards/x/send", `{}`, 400, "shard id must be a number"},
		{true, "POST", "/shards/1/send", `{"op":3,"d":{}}`, 404, "shard 1 does not run in this process"},
		{true, "POST", "/", `{"type":"Nope"}`, 400, `unknown message type \"Nope\"`},
		{true, "POST", "/", `{"type":"ShardPayload"}`, 400, "ShardPayload needs shardId"},
		{true, "POST", "/", `{"type":"ShardInfoFromGuild","guildId":"42"}`, 404, "guild 42 is on shard 3, which does not run in this process"},
		{true, "POST", "/", `not json`, 400, "body must be a JSON message with a type"},
	} {
		set = nil
		if c.started {
			set = noShards{}
		}
		code, body := call(c.method, c.path, c.body)
		if code != c.code || !strings.Contains(body, c.msg) {
			t.Errorf("%s %s %s (started %v): %d %s; want %d with %q", c.method, c.path, c.body, c.started, code, body, c.code, c.msg)
		}
	}
}
