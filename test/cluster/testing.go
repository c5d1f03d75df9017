package cluster

import (
	"context"
	"testing"
	"time"
)

// StartForTest starts a simulated cluster for one test (or one package, from TestMain through
// a testing.TB of its own) and stops it when the test ends, keeping the component logs when the
// test failed.
func StartForTest(tb testing.TB, opts Options) *Cluster {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	c, err := Start(ctx, opts)
	if err != nil {
		tb.Fatalf("start simulated cluster: %v", err)
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			c.KeepLogs()
			tb.Logf("simulated cluster logs kept in %s", c.Dir)
		}
		if err := c.Stop(); err != nil {
			tb.Errorf("stop simulated cluster: %v", err)
		}
	})
	return c
}
