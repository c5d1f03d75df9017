package cluster

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
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

// ManagerRole is the ClusterRole `make generate` writes to config/rbac/role.yaml from the
// operator's RBAC markers: the rights the operator ships with.
func ManagerRole(tb testing.TB) rbacv1.ClusterRole {
	tb.Helper()
	root, err := RepoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "config", "rbac", "role.yaml"))
	if err != nil {
		tb.Fatal(err)
	}
	var role rbacv1.ClusterRole
	if err := yaml.Unmarshal(data, &role); err != nil {
		tb.Fatalf("config/rbac/role.yaml: %v", err)
	}
	return role
}
