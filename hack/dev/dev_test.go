package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"

	"k8s.io/client-go/rest"
)

// TestDevEnvironment brings up what `make dev` brings up and checks what a user sees there:
// the operator ready, the sample pools applied, and `kubectl get runnerpools` columns.
func TestDevEnvironment(t *testing.T) {
	env, err := up(t.Context(), config{
		dir:         t.TempDir(),
		nodes:       1,
		webhookPort: freePort(t),
		forgejoAddr: "127.0.0.1:0",
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
