package gateway

import (
	"fmt"
	"testing"
	"time"
)

func ev(t string, d string) []byte {
	return []byte(fmt.Sprintf(`{"t":"%s","s":%d,"op":0,"d":%s}`, t, len(d), d))
}

func TestEventKeyIgnoresSequenceAndSeesData(t *testing.T) {
	a := []byte(`{"t":"MESSAGE_CREATE","s":5,"op":0,"d":{"id":"1"}}`)
	b := []byte(`{"op":0,"s":912,"t":"MESSAGE_CREATE","d":{"id":"1"}}`)
	c := []byte(`{"t":"MESSAGE_CREATE","s":5,"op":0,"d":{"id":"2"}}`)
	if eventKey(a) != eventKey(b) {
		t.Error("the same event in two sessions (other seq, field order) has two keys")
	}
	if eventKey(a) == eventKey(c) {
		t.Error("two events share a key")
	}
}

func TestMatcherConsumesOneMatchPerEvent(t *testing.T) {
	w := newWindow(time.Minute, 100)
	start := time.Now()
	w.record(ev("TYPING_START", `{"u":1}`))
	w.record(ev("TYPING_START", `{"u":1}`)) // the same payload twice: two real events
	w.record(ev("MESSAGE_CREATE", `{"id":"9"}`))
	m := w.matcher(start)
	if !m.seen(ev("TYPING_START", `{"u":1}`)) || !m.seen(ev("TYPING_START", `{"u":1}`)) {
		t.Fatal("recorded events not matched")
	}
	if m.seen(ev("TYPING_START", `{"u":1}`)) {
		t.Fatal("a third identical event matched two recorded ones")
	}
	if m.seen(ev("MESSAGE_CREATE", `{"id":"10"}`)) {
		t.Fatal("an event the old set never queued matched")
	}
	if m.remaining() != 1 {
		t.Fatalf("left %d, want 1", m.remaining())
	}
}

func TestWindowAndTailAreBounded(t *testing.T) {
	w := newWindow(50*time.Millisecond, 3)
	for i := range 10 {
		w.record(ev("X", fmt.Sprint(i)))
	}
	if n := w.matcher(time.Time{}).remaining(); n != 3 {
		t.Fatalf("window holds %d, bound 3", n)
	}
	time.Sleep(60 * time.Millisecond)
	w.record(ev("X", "new"))
	if n := w.matcher(time.Time{}).remaining(); n != 1 {
		t.Fatalf("window holds %d after the time bound, want 1", n)
	}
	tl := newTail[int](time.Hour, 2)
	tl.add(1)
	tl.add(2)
	tl.add(3)
	if got, _ := tl.take(); len(got) != 2 || got[0] != 2 || got[1] != 3 {
		t.Fatalf("tail = %v, want [2 3]", got)
	}
}
