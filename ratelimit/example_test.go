package ratelimit_test

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/ddhq/dd/ratelimit"
)

// A program that calls Discord itself uses the limiter around each attempt: Acquire before sending,
// Done with Discord's answer, from whose headers the limiter learns the route's bucket. Here Discord's
// answers are made up: a bucket of 2 requests per second, spent after the second.
func ExampleLimiter() {
	l := ratelimit.New(ratelimit.Options{GlobalRate: 50})
	defer l.Close()
	ctx := context.Background()
	route := ratelimit.ParseRoute(http.MethodPost, "/channels/123/messages", time.Now())
	start := time.Now()
	for i := range 3 {
		ticket, err := l.Acquire(ctx, "Bot my-token", route)
		if err != nil {
			fmt.Println(err)
			return
		}
		// ... send the request to Discord here ...
		h := http.Header{}
		h.Set("X-RateLimit-Bucket", "abcd1234")
		h.Set("X-RateLimit-Limit", "2")
		h.Set("X-RateLimit-Remaining", fmt.Sprint(1-i%2))
		h.Set("X-RateLimit-Reset-After", "0.3")
		ticket.Done(ratelimit.Response{Status: http.StatusOK, Header: h})
		fmt.Printf("request %d sent after the bucket's reset: %v\n", i+1, time.Since(start) >= 300*time.Millisecond)
	}
	// Output:
	// request 1 sent after the bucket's reset: false
	// request 2 sent after the bucket's reset: false
	// request 3 sent after the bucket's reset: true
}
