package cluster

import (
	"testing"
	"time"

	"github.com/ddhq/dd/cluster/clustertest"
)

// waitTerm waits until f accepts the election's term.
func waitTerm(t *testing.T, e *Election, within time.Duration, what string, f func(Term) bool) Term {
	t.Helper()
	deadline := time.After(within)
	for {
		term := e.Term()
		if f(term) {
			return term
		}
		select {
		case <-term.Changed:
		case <-deadline:
			t.Fatalf("after %s: %s; term is %+v", within, what, term)
		}
	}
}

func TestElectionHasOneLeaderAndFollowersKnowItsData(t *testing.T) {
	s := clustertest.Server(t)
	ca := connect(t, s.ClientURL(), "a", 1)
	a := leaser(t, ca, 2*time.Second)
	b := leaser(t, connect(t, s.ClientURL(), "b", 1), 2*time.Second)
	ea := a.Elect("rest.x", []byte(`{"url":"http://a"}`))
	waitTerm(t, ea, 5*time.Second, "a alone should lead", Term.Leading)
	eb := b.Elect("rest.x", []byte(`{"url":"http://b"}`))
	defer eb.Close(ctxFor(t, 5*time.Second))
	tb := waitTerm(t, eb, 5*time.Second, "b should follow a", func(t Term) bool { return t.Owner == "a" })
	if tb.Leading() || string(tb.Data) != `{"url":"http://a"}` {
		t.Fatalf("b's term %+v: want a follower that knows a's data", tb)
	}

	// a dies without releasing (its connection closes; its lease runs out at the server): b leads
	// within the TTL (plus its poll).
	ta := ea.Term()
	died := time.Now()
	ca.Close()
	waitDone(t, ta.Lease, 3*time.Second)
	waitTerm(t, eb, 4*time.Second, "b should take over a dead leader's lease", Term.Leading)
	t.Logf("b leads %s after a died (TTL 2s)", time.Since(died).Round(time.Millisecond))
	if time.Since(died) > 2*2*time.Second {
		t.Errorf("takeover took %s; want under 2 × TTL", time.Since(died))
	}
}

func TestElectionCloseHandsOverAtOnce(t *testing.T) {
	s := clustertest.Server(t)
	a := leaser(t, connect(t, s.ClientURL(), "a", 1), 3*time.Second)
	b := leaser(t, connect(t, s.ClientURL(), "b", 1), 3*time.Second)
	ea := a.Elect("rest.y", []byte(`{}`))
	waitTerm(t, ea, 5*time.Second, "a should lead", Term.Leading)
	eb := b.Elect("rest.y", []byte(`{}`))
	defer eb.Close(ctxFor(t, 5*time.Second))
	waitTerm(t, eb, 5*time.Second, "b should follow", func(t Term) bool { return t.Owner == "a" })
	closed := time.Now()
	if err := ea.Close(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	waitTerm(t, eb, 2*time.Second, "b should lead soon after a's release", Term.Leading)
	if d := time.Since(closed); d > time.Second {
		t.Errorf("b took %s to lead after a released; want well under the TTL", d)
	}
}
