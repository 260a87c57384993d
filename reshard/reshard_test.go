package reshard

import (
	"fmt"
	"testing"
	"time"
)

func ev(t string, d string) []byte {
	return []byte(fmt.Sprintf(`{"t":"%s","s":%d,"op":0,"d":%s}`, t, len(d), d))
}

func TestKeyIgnoresSequenceAndSeesData(t *testing.T) {
	a := []byte(`{"t":"MESSAGE_CREATE","s":5,"op":0,"d":{"id":"1"}}`)
	b := []byte(`{"op":0,"s":912,"t":"MESSAGE_CREATE","d":{"id":"1"}}`)
	c := []byte(`{"t":"MESSAGE_CREATE","s":5,"op":0,"d":{"id":"2"}}`)
	if Key(a) != Key(b) {
		t.Error("the same event in two sessions (other seq, field order) has two keys")
	}
	if Key(a) == Key(c) {
		t.Error("two events share a key")
	}
}

func TestMatcherConsumesOneMatchPerEvent(t *testing.T) {
	w := NewWindow(time.Minute, 100)
	start := time.Now()
	w.Record(ev("TYPING_START", `{"u":1}`))
	w.Record(ev("TYPING_START", `{"u":1}`)) // the same payload twice: two real events
	w.Record(ev("MESSAGE_CREATE", `{"id":"9"}`))
	m := w.Matcher(start)
	if !m.Seen(ev("TYPING_START", `{"u":1}`)) || !m.Seen(ev("TYPING_START", `{"u":1}`)) {
		t.Fatal("recorded events not matched")
	}
	if m.Seen(ev("TYPING_START", `{"u":1}`)) {
		t.Fatal("a third identical event matched two recorded ones")
	}
	if m.Seen(ev("MESSAGE_CREATE", `{"id":"10"}`)) {
		t.Fatal("an event the old set never queued matched")
	}
	if m.Left() != 1 {
		t.Fatalf("left %d, want 1", m.Left())
	}
}

func TestWindowAndTailAreBounded(t *testing.T) {
	w := NewWindow(50*time.Millisecond, 3)
	for i := range 10 {
		w.Record(ev("X", fmt.Sprint(i)))
	}
	if n := w.Matcher(time.Time{}).Left(); n != 3 {
		t.Fatalf("window holds %d, bound 3", n)
	}
	time.Sleep(60 * time.Millisecond)
	w.Record(ev("X", "new"))
	if n := w.Matcher(time.Time{}).Left(); n != 1 {
		t.Fatalf("window holds %d after the time bound, want 1", n)
	}
	tail := NewTail[int](time.Hour, 2)
	tail.Add(1)
	tail.Add(2)
	tail.Add(3)
	if got, _ := tail.Take(); len(got) != 2 || got[0] != 2 || got[1] != 3 {
		t.Fatalf("tail = %v, want [2 3]", got)
	}
}

func TestNewShardCount(t *testing.T) {
	cases := []struct{ rec, guilds, conc, want int }{
		{1, 100, 1, 1},
		{2, 100, 1, 2},
		{1, 6000, 1, 3},       // guilds need 3 at 2500 each
		{120, 100000, 1, 128}, // past 100 shards: a multiple of 16
		{40, 90000, 16, 48},   // a multiple of max_concurrency
		{16, 10, 16, 16},
	}
	for _, c := range cases {
		if got := NewShardCount(c.rec, c.guilds, c.conc); got != c.want {
			t.Errorf("NewShardCount(%d, %d, %d) = %d, want %d", c.rec, c.guilds, c.conc, got, c.want)
		}
	}
	if !Due(2000, 1, 80) || Due(1999, 1, 80) || !Due(4000, 2, 80) {
		t.Error("Due at 80 % of 2500 per shard is wrong")
	}
}
