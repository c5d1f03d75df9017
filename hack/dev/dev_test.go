package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/audit"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/eventually"
)

// TestDevEnvironment brings up what `make dev` brings up and checks what a user sees there:
// the operator ready, the sample pools applied, and `kubectl get runnerpools` columns.
func TestDevEnvironment(t *testing.T) {
	env, err := up(t.Context(), config{
		dir:         t.TempDir(),
		nodes:       1,
		webhookPort: freePort(t),
		forgejoAddr: "127.0.0.1:0",
		metricsAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
	})
	if err != nil {
		t.Fatalf("dev environment did not come up: %v", err)
	}
	defer env.down()

	// The operator's readiness was checked by up; the simulator must answer too.
	resp, err := http.Get(env.forgejoURL + "/api/v1/version")
	if err != nil {
		t.Fatalf("Forgejo simulator: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("Forgejo simulator /api/v1/version answered %d", resp.StatusCode)
	}

	// Ask for RunnerPools as a Table, exactly as kubectl get does.
	cfg := rest.CopyConfig(env.cluster.Config)
	cfg.AcceptContentTypes = "application/json;as=Table;v=v1;g=meta.k8s.io"
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, strings.TrimSuffix(cfg.Host, "/")+"/apis/forgejo.brooktrails.org/v1alpha1/runnerpools", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", cfg.AcceptContentTypes)
	resp, err = httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var table struct {
		ColumnDefinitions []struct{ Name string } `json:"columnDefinitions"`
		Rows              []json.RawMessage       `json:"rows"`
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(body, &table); err != nil {
		t.Fatalf("decode table (status %d): %v\n%s", resp.StatusCode, err, body)
	}
	var columns []string
	for _, c := range table.ColumnDefinitions {
		columns = append(columns, c.Name)
	}
	for _, want := range []string{"Name", "Mode", "Backend", "Desired", "Current", "Busy", "Pending", "Ready", "Age"} {
		if !slices.Contains(columns, want) {
			t.Errorf("kubectl get runnerpools lacks column %q; has %v", want, columns)
		}
	}
	if len(table.Rows) < 4 {
		t.Errorf("want the four sample pools, got %d rows", len(table.Rows))
	}

	// The binary's record flags are wired: the audit log holds the sample pools' creation and
	// verifies, and /metrics reports the pools.
	eventually.True(t, time.Minute, "the sample pools audited and in /metrics", func() (bool, string) {
		f, err := os.Open(env.auditLog)
		if err != nil {
			return false, err.Error()
		}
		defer func() { _ = f.Close() }()
		report, err := audit.Verify(f, audit.VerifyOptions{})
		if err != nil || report.Problem != nil {
			return false, fmt.Sprintf("verify: %v %+v", err, report.Problem)
		}
		data, _ := os.ReadFile(env.auditLog)
		created := strings.Count(string(data), `"action":"pool.created"`)
		resp, err := http.Get("http://" + env.metricsAddr + "/metrics")
		if err != nil {
			return false, err.Error()
		}
		defer func() { _ = resp.Body.Close() }()
		metrics, _ := io.ReadAll(resp.Body)
		ready := strings.Count(string(metrics), "forgejo_runner_operator_pool_ready{")
		return created >= 4 && ready >= 4, fmt.Sprintf("%d pool.created records, %d pools in /metrics", created, ready)
	})
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().(*net.TCPAddr).Port
}
