package cache

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ddhq/dd/queue"
)

// A cache that follows a queue in-process is not ready while it is more than ReadyLag events behind.
func TestHandlerNotReadyFarBehindItsQueue(t *testing.T) {
	c, st := newCache(t, Options{})
	q, err := queue.Open(st, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	con, err := q.Consumer("cache")
	if err != nil {
		t.Fatal(err)
	}
	h := NewHandler(c, HandlerOptions{Disk: st, Following: con})
	recs := make([]queue.Record, ReadyLag+1)
	for i := range recs {
		recs[i] = queue.Record{Shard: 0, Payload: []byte(`{"op":0,"t":"TYPING_START","s":1,"d":{}}`)}
	}
	if err := q.Append(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	if err := h.Ready(); err == nil || !strings.Contains(err.Error(), "events behind") {
		t.Errorf("%d events behind: Ready() = %v, want events behind", len(recs), err)
	}
	got, err := con.Read(0, 10)
	if err != nil || len(got) == 0 {
		t.Fatalf("reading the queue: %v", err)
	}
	con.Ack(0, got[len(got)-1].Seq)
	if err := h.Ready(); err != nil {
		t.Errorf("%d events behind: Ready() = %v, want nil", ReadyLag+1-len(got), err)
	}
}

// A 404 names what the cache does not hold, with the ids of the path.
func TestHandlerNotFoundNamesWhatIsMissing(t *testing.T) {
	c, _ := newCache(t, Options{})
	h := NewHandler(c, HandlerOptions{})
	for path, want := range map[string]string{
		"/guilds/1":                 "the cache does not hold guild 1",
		"/guilds/1/members/2":       "the cache does not hold member 2 of guild 1",
		"/guilds/1/voice-states/2":  "the cache does not hold voice state of user 2 of guild 1",
		"/channels/3/messages/4":    "the cache does not hold message 4 in channel 3",
		"/guilds/1/members?limit=5": "the cache does not hold guild 1",
		"/nope":                     "no cache endpoint GET /nope",
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		var body struct{ Message string }
		if err := json.Unmarshal(rec.Body.Bytes(), &body); rec.Code != http.StatusNotFound || err != nil || body.Message != want {
			t.Errorf("GET %s = %d %s, want 404 %q", path, rec.Code, rec.Body, want)
		}
	}
}

// Posted events are applied and answered 204; a store that fails them makes the cache not ready.
func TestHandlerAppliesPostedEvents(t *testing.T) {
	c, _ := newCache(t, Options{})
	h := NewHandler(c, HandlerOptions{})
	body := `[{"shardId":0,"payload":` + string(payload("GUILD_CREATE", 1, guildCreate(7, 0, nil))) + `}]`
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/events", strings.NewReader(body)))
	if rec.Code != http.StatusNoContent {
		t.Fatalf("POST /events = %d %s, want 204", rec.Code, rec.Body)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/guilds/7", nil))
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" {
		t.Errorf("GET /guilds/7 after POST /events = %d %s", rec.Code, rec.Body)
	}
	if err := h.Ready(); err != nil {
		t.Errorf("Ready() = %v after stored events", err)
	}
}
