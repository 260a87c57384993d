package identify

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// The server asks Discord for the limits only once a gateway asks (a rest role no gateway uses makes
// no such call), grants nothing before (503), then grants turns through a Remote.
func TestServerLearnsTheLimitsWhenFirstAskedThenGrants(t *testing.T) {
	var fetches atomic.Int32
	var observed atomic.Int32
	s := NewServer("q-secret", 50*time.Millisecond, func(context.Context) (SessionStartLimit, bool, error) {
		fetches.Add(1)
		return SessionStartLimit{Total: 10, Remaining: 10, ResetAfter: time.Hour, MaxConcurrency: 2}, true, nil
	}, func(err error) {
		if err == nil {
			observed.Add(1)
		}
	}, nil)
	srv := httptest.NewServer(s)
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	time.Sleep(50 * time.Millisecond)
	if n := fetches.Load(); n != 0 {
		t.Fatalf("%d fetches of /gateway/bot before any gateway asked", n)
	}
	resp, err := http.Post(srv.URL+QueuePath+"acquire", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("before the limits are known: %d, want 503", resp.StatusCode)
	}
	client := NewRemote(srv.URL+QueuePath, "q-secret", nil)
	actx, acancel := context.WithTimeout(ctx, 10*time.Second)
	defer acancel()
	turn, err := client.Acquire(actx, 1)
	if err != nil {
		t.Fatalf("no turn once the limits are known: %v", err)
	}
	turn.Release(true)
	if fetches.Load() != 1 || observed.Load() != 1 || s.MaxConcurrency() != 2 {
		t.Errorf("fetches %d, observed %d, max_concurrency %d; want 1, 1, 2", fetches.Load(), observed.Load(), s.MaxConcurrency())
	}
}

// A fetch that cannot succeed by asking again (Discord refused the token) ends Run with its error.
func TestServerStopsOnAFetchThatCannotBeRetried(t *testing.T) {
	refused := errors.New("401: the token")
	s := NewServer("q-secret", 0, func(context.Context) (SessionStartLimit, bool, error) {
		return SessionStartLimit{}, false, refused
	}, nil, nil)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, QueuePath+"acquire", nil)) // a gateway asks
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	select {
	case err := <-done:
		if !errors.Is(err, refused) {
			t.Fatalf("Run returned %v, want the fetch's error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run kept retrying a fetch that said not to")
	}
}
