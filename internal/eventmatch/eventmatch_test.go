package eventmatch

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
	d := []byte(`{"t":"MESSAGE_UPDATE","s":5,"op":0,"d":{"id":"1"}}`)
	if Key(a) != Key(b) {
		t.Error("the same event in two sessions (other seq, field order) has two keys")
	}
	if Key(a) == Key(c) || Key(a) == Key(d) {
		t.Error("two events share a key")
	}
	// The key has no per-process seed: another process computes the same one (cluster mode matches
	// what one process holds against what another published).
	if got, want := Key(a), uint64(0xa76a1cd436a1c0c0); got != want {
		t.Fatalf("Key = %#x; want %#x in every process and every build", got, want)
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
	if m.Remaining() != 1 || !m.Has(ev("MESSAGE_CREATE", `{"id":"9"}`)) {
		t.Fatalf("left %d, want 1 (MESSAGE_CREATE 9)", m.Remaining())
	}
	m2 := NewMatcher()
	m2.Add(ev("X", `1`))
	m2.AddKey(Key(ev("X", `1`)))
	if !m2.Seen(ev("X", `1`)) || !m2.Seen(ev("X", `1`)) || m2.Seen(ev("X", `1`)) {
		t.Fatal("Add and AddKey of the same event: want two matches")
	}
}

func TestWindowAndTailAreBounded(t *testing.T) {
	w := NewWindow(50*time.Millisecond, 3)
	for i := range 10 {
		w.Record(ev("X", fmt.Sprint(i)))
	}
	if n := w.Matcher(time.Time{}).Remaining(); n != 3 {
		t.Fatalf("window holds %d, bound 3", n)
	}
	time.Sleep(60 * time.Millisecond)
	w.Record(ev("X", "new"))
	if n := w.Matcher(time.Time{}).Remaining(); n != 1 {
		t.Fatalf("window holds %d after the time bound, want 1", n)
	}
	tl := NewTail[int](time.Hour, 2)
	tl.Add(1)
	tl.Add(2)
	tl.Add(3)
	if tl.Len() != 2 {
		t.Fatalf("tail holds %d, bound 2", tl.Len())
	}
	if got, _ := tl.Take(); len(got) != 2 || got[0] != 2 || got[1] != 3 {
		t.Fatalf("tail = %v, want [2 3]", got)
	}
}
