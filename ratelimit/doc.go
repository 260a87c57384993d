// Package ratelimit keeps Discord's REST rate limits for dd's rest role, so that Discord never has to
// answer 429: route keys with their major parameters (route.go), per-bucket FIFO queues released exactly
// when a bucket allows (bucket.go), the per-token global limit (global.go) and the invalid-request guard
// that stops dd short of Discord's 10,000-per-10-minutes ban (guard.go).
//
// It is pure logic: it never sends a request and knows nothing of HTTP servers. The caller (restproxy)
// asks Acquire for permission before each attempt and reports what Discord answered on the Ticket it got;
// the limiter learns buckets from those answers. Waiting is done with timers set for the exact instant a
// bucket or the global window allows the next request; nothing polls.
package ratelimit
