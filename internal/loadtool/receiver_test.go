package loadtool

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ddhq/dd/internal/httpapi"
)

// batch is a body of n envelopes as delivery posts it, and its X-DD-Event-Ids.
func batch(shard, firstSeq, n int) (body []byte, ids string) {
	body = []byte{'['}
	var idl []string
	for i := range n {
		if i > 0 {
			body = append(body, ',')
		}
		seq := firstSeq + i
		body = httpapi.AppendEnvelope(body, shard, fmt.Appendf(nil,
			`{"op":0,"t":"MESSAGE_CREATE","s":%d,"d":{"id":"%d","channel_id":"1","content":"hello, world","author":{"id":"2","username":"u"}}}`, seq, seq))
		idl = append(idl, fmt.Sprintf("s%d-%d", shard, seq))
	}
	return append(body, ']'), strings.Join(idl, ",")
}

func post(r *Receiver, body []byte, ids, secret string) int {
	req := httptest.NewRequest("POST", "/", strings.NewReader(string(body)))
	req.Header.Set("Authorization", secret)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-DD-Event-Ids", ids)
	rec := httptest.NewRecorder()
	r.serve(rec, req)
	return rec.Code
}

func newTestReceiver() *Receiver {
	return &Receiver{secret: "s", shards: map[int]*shardSeqs{}, ids: map[string]uint16{}, types: map[string]int64{},
		guilds: map[string]struct{}{}}
}

// The receiver counts each event once by id and by (shard, seq), and refuses what is not a batch of
// dispatch envelopes with as many ids.
func TestReceiverCountsEnvelopesAndRefusesOthers(t *testing.T) {
	r := newTestReceiver()
	body, ids := batch(3, 1, 5)
	for range 2 {
		if code := post(r, body, ids, "s"); code != http.StatusNoContent {
			t.Fatalf("a batch of 5: %d, want 204", code)
		}
	}
	one, id := batch(4, 1, 1)
	if code := post(r, one[1:len(one)-1], id, "s"); code != http.StatusNoContent {
		t.Fatalf("one envelope: %d, want 204", code)
	}
	for _, bad := range []string{`{"shardId":1}`, `[{"shardId":1,"payload":{"op":1,"s":1}}]`, `{"payload":{"op":0,"s":1}}`, `[{"shardId":1,"payload":{"op":0,"s":1}}`} {
		if code := post(r, []byte(bad), "x", "s"); code != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", bad, code)
		}
	}
	if code := post(r, body, ids, "wrong"); code != http.StatusUnauthorized {
		t.Errorf("wrong secret: %d, want 401", code)
	}
	st := r.Stats()
	if st.Events != 11 || st.UniqueIDs != 6 || st.DuplicateIDs != 5 || st.DuplicateSeq != 5 || st.Invalid != 4 || st.BadAuth != 1 ||
		st.Types["MESSAGE_CREATE"] != 11 {
		t.Errorf("stats %+v", st)
	}
	if missing, beyond := r.Missing(map[int]int64{3: 6, 4: 1}); missing != 1 || beyond != 0 {
		t.Errorf("missing %d beyond %d, want 1 and 0", missing, beyond)
	}
}

// BenchmarkReceiverBatch is the receiver's cost per batch of 100 events (it shares a host with dd in a
// load run): go test -run X -bench ReceiverBatch ./internal/loadtool/
func BenchmarkReceiverBatch(b *testing.B) {
	r := newTestReceiver()
	body, ids := batch(0, 1, 100)
	req := httptest.NewRequest("POST", "/", nil)
	req.Header.Set("Authorization", "s")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-DD-Event-Ids", ids)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		req.Body = nopBody{strings.NewReader(string(body))}
		r.serve(httptest.NewRecorder(), req)
	}
}

type nopBody struct{ *strings.Reader }

func (nopBody) Close() error { return nil }
