// Package testkit holds what dd's tests share: waiting for a condition without timing a test.
package testkit

import (
	"testing"
	"time"
)

// Eventually polls cond every 20 ms until it holds, failing the test with what was awaited if it does
// not within d. It returns how long it took, for tests that report it. Some conditions are costly (a
// score of HTTP reads of the process under test): polling them faster starves that process under -race.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}
