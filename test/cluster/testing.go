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

// RunWithAPIServer is a TestMain body for packages whose tests share one kube-apiserver (with
// etcd and the project's CRDs): it starts it, hands it to use, runs the tests and stops it,
// keeping its logs when a test failed. It returns the exit code for os.Exit.
func RunWithAPIServer(m *testing.M, use func(*Cluster)) int {
	c, err := Start(context.Background(), Options{APIServerOnly: true})
	if err != nil {
		println("start kube-apiserver:", err.Error())
		return 1
	}
	use(c)
	code := m.Run()
	if code != 0 {
		c.KeepLogs()
		println("kube-apiserver logs kept in", c.Dir)
	}
	if err := c.Stop(); err != nil {
		println("stop kube-apiserver:", err.Error())
	}
	return code
}
