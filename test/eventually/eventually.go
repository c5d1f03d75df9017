// Package eventually waits in tests for a condition that the system under test reaches in its
// own time. The bound is a guard against a hang, never a performance expectation: timings
// belong in benchmarks.
package eventually

import (
	"testing"
	"time"
)

// True polls cond every 50ms until it holds, failing tb with what and cond's last report once
// bound has passed.
func True(tb testing.TB, bound time.Duration, what string, cond func() (ok bool, state string)) {
	tb.Helper()
	deadline := time.Now().Add(bound)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("waiting for %s: %s", what, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
