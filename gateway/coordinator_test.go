package gateway

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
)

// The coordinator's target only rises, refuses a count no process could run (before storing it), and
// answers nothing without the secret; the client speaks its protocol.
func TestCoordinatorKeepsTheHighestValidTarget(t *testing.T) {
	srv := httptest.NewServer(&CoordinatorServer{Secret: "s3cret", MaxConcurrency: func() int { return 2 }})
	defer srv.Close()
	c := CoordinatorClient{URL: srv.URL + "/", Secret: "s3cret"}
	ctx := context.Background()
	steps := []struct {
		propose, want int
		refused       string
	}{
		{0, 0, ""},         // asking only
		{4, 4, ""},         // raised
		{2, 4, ""},         // a lower proposal (a process not moved yet) leaves it
		{8, 8, ""},         // raised again
		{7, 0, "multiple"}, // max_concurrency 2
		{MaxShards * 2, 0, "at most"},
		{0, 8, ""}, // the refused ones were not stored
	}
	for _, s := range steps {
		got, err := c.Target(ctx, s.propose)
		switch {
		case s.refused != "" && (err == nil || !strings.Contains(err.Error(), s.refused)):
			t.Errorf("propose %d: %d, %v; want refused saying %q", s.propose, got, err, s.refused)
		case s.refused == "" && (err != nil || got != s.want):
			t.Errorf("propose %d: %d, %v; want %d", s.propose, got, err, s.want)
		}
	}
	if _, err := (CoordinatorClient{URL: srv.URL, Secret: "wrong"}).Target(ctx, 16); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("a wrong secret: %v, want a 401", err)
	}
	if got, _ := c.Target(ctx, 0); got != 8 {
		t.Errorf("after a stranger's proposal the target is %d, want 8", got)
	}
}
