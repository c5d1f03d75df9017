package runner

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/opmetrics"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/poolconn"
)

// A Runner being deleted retries a failing deregistration soon, then less often, never past its
// deadline, and is let go once the deadline has passed.
func TestDeregisterDecision(t *testing.T) {
	deleted := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	const deadline = 10 * time.Minute
	cases := []struct {
		elapsed time.Duration
		giveUp  bool
		retryIn time.Duration
	}{
		{0, false, time.Second},
		{2 * time.Second, false, time.Second},
		{20 * time.Second, false, 5 * time.Second},
		{5 * time.Minute, false, 30 * time.Second},
		{deadline - 10*time.Second, false, 10 * time.Second}, // not past the deadline
		{deadline, true, 0},
		{time.Hour, true, 0},
	}
	for _, c := range cases {
		t.Run(c.elapsed.String(), func(t *testing.T) {
			giveUp, retryIn := deregisterDecision(deleted, deleted.Add(c.elapsed), deadline)
			if giveUp != c.giveUp || retryIn != c.retryIn {
				t.Fatalf("after %s: give up %v, retry in %s; want %v, %s", c.elapsed, giveUp, retryIn, c.giveUp, c.retryIn)
			}
		})
	}
	// A clock behind the deletion timestamp (another API server's) still retries.
	if giveUp, retryIn := deregisterDecision(deleted, deleted.Add(-time.Minute), deadline); giveUp || retryIn != time.Second {
		t.Fatalf("clock behind: give up %v, retry in %s", giveUp, retryIn)
	}
}

func TestAbandonReason(t *testing.T) {
	cases := map[error]string{
		fmt.Errorf("%w: default/p: not found", errPoolGone):                                     opmetrics.AbandonedPoolGone,
		fmt.Errorf("forgejo client for pool p: %w: read Secret: gone", poolconn.ErrTokenSecret): opmetrics.AbandonedTokenUnavailable,
		fmt.Errorf("read registration 3: %w", forgejo.ErrNotFound):                              opmetrics.AbandonedForgejoError,
		errors.New("503 Service Unavailable"):                                                   opmetrics.AbandonedForgejoError,
	}
	for err, want := range cases {
		if got := abandonReason(err); got != want {
			t.Errorf("%v: reason %s, want %s", err, got, want)
		}
	}
}
