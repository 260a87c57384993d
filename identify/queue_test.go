package identify

import (
	"context"
	"net/http/httptest"
	"sort"
	"sync"
	"testing"
	"time"
)

// Several clients of one shared queue identify no faster than one process: one per bucket per window.
func TestSharedIdentifyQueuePacesAllClients(t *testing.T) {
	const window = 80 * time.Millisecond
	q := NewQueue(NewLocal(SessionStartLimit{Total: 100, Remaining: 100, ResetAfter: time.Hour, MaxConcurrency: 1},
		window, 0, nil), "q-secret", time.Second, nil)
	srv := httptest.NewServer(q)
	defer srv.Close()
	var (
		mu    sync.Mutex
		times []time.Time
		wg    sync.WaitGroup
	)
	for c := 0; c < 3; c++ { // three gateway processes
		client := NewRemote(srv.URL+"/dd/v1/identify", "q-secret", nil)
		for s := 0; s < 2; s++ {
			wg.Add(1)
			go func(shard int) {
				defer wg.Done()
				turn, err := client.Acquire(context.Background(), shard)
				if err != nil {
					t.Error(err)
					return
				}
				now := time.Now()
				client.Sent(shard, now)
				mu.Lock()
				times = append(times, now)
				mu.Unlock()
				turn.Release(true)
			}(c*2 + s)
		}
	}
	wg.Wait()
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	for i := 1; i < len(times); i++ {
		if gap := times[i].Sub(times[i-1]); gap < window-5*time.Millisecond {
			t.Fatalf("identifies %d and %d only %s apart; the shared window is %s", i-1, i, gap, window)
		}
	}
}

// A holder that crashes without releasing does not block the bucket beyond the lease TTL.
func TestExpiredLeaseFreesTheBucket(t *testing.T) {
	q := NewQueue(NewLocal(SessionStartLimit{Total: 100, Remaining: 100, ResetAfter: time.Hour, MaxConcurrency: 1},
		time.Millisecond, 0, nil), "s", 150*time.Millisecond, nil)
	srv := httptest.NewServer(q)
	defer srv.Close()
	crashed := NewRemote(srv.URL+"/q", "s", nil)
	if _, err := crashed.Acquire(context.Background(), 0); err != nil { // never released
		t.Fatal(err)
	}
	start := time.Now()
	other := NewRemote(srv.URL+"/q", "s", nil)
	turn, err := other.Acquire(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	turn.Release(true)
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("granted after %s, while the crashed holder's lease was live", d)
	}
}

func TestIdentifyQueueNeedsTheSecret(t *testing.T) {
	q := NewQueue(NewLocal(SessionStartLimit{Remaining: 1, MaxConcurrency: 1}, time.Millisecond, 0, nil), "right", 0, nil)
	srv := httptest.NewServer(q)
	defer srv.Close()
	_, err := NewRemote(srv.URL+"/q", "wrong", nil).Acquire(context.Background(), 0)
	if err == nil {
		t.Fatal("a wrong secret was granted an identify")
	}
}
