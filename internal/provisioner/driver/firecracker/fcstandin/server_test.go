package fcstandin

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// SpecPath is where the tests find Firecracker's API description.
func specPath(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "testdata", "firecracker-api-v1.15.1.yaml")
}

func TestStandInFollowsTheDescription(t *testing.T) {
	spec, err := LoadSpec(specPath(t))
	if err != nil {
		t.Fatal(err)
	}
	if spec.Version != "1.15.1" {
		t.Fatalf("description version %q", spec.Version)
	}
	srv := New(spec, "vm-1")
	sock := filepath.Join(t.TempDir(), "fc.sock")
	if err := srv.Listen(sock); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() }) //nolint:errcheck,gosec // test teardown
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}

	// Each step runs in order: the later ones depend on the guest having been started.
	steps := []struct {
		name, method, path, body string
		want                     int
		refusal                  string
	}{
		{"unknown path", "PUT", "/no-such-thing", `{}`, 404, "no such path"},
		{"wrong method", "DELETE", "/machine-config", ``, 405, "not allowed"},
		{"missing required body", "PUT", "/boot-source", ``, 400, "needs a body"},
		{"missing required field", "PUT", "/machine-config", `{"vcpu_count": 2}`, 400, `missing required field "mem_size_mib"`},
		{"wrong type", "PUT", "/machine-config", `{"vcpu_count": "2", "mem_size_mib": 256}`, 400, "want a number"},
		{"above maximum", "PUT", "/machine-config", `{"vcpu_count": 33, "mem_size_mib": 256}`, 400, "above the maximum"},
		{"unknown field", "PUT", "/machine-config", `{"vcpu_count": 2, "mem_size_mib": 256, "vcpus": 2}`, 400, `unknown field "vcpus"`},
		{"wrong enum value", "PUT", "/logger", `{"level": "Loud", "log_path": "/x"}`, 400, "is not one of"},
		{"nested wrong type", "PUT", "/drives/rootfs", `{"drive_id": "rootfs", "is_root_device": "yes"}`, 400, "want a boolean"},
		{"vsock CID below minimum", "PUT", "/vsock", `{"guest_cid": 2, "uds_path": "/v.sock"}`, 400, "below the minimum"},
		{"start without kernel", "PUT", "/actions", `{"action_type": "InstanceStart"}`, 400, "boot source"},
		{"ctrl-alt-del before boot", "PUT", "/actions", `{"action_type": "SendCtrlAltDel"}`, 400, "before starting"},
		{"post-boot only before boot", "PATCH", "/drives/rootfs", `{"drive_id": "rootfs", "path_on_host": "/x"}`, 400, "before starting"},
		{"machine config", "PUT", "/machine-config", `{"vcpu_count": 2, "mem_size_mib": 256}`, 204, ""},
		{"boot source", "PUT", "/boot-source", `{"kernel_image_path": "/vmlinux", "boot_args": "console=ttyS0"}`, 204, ""},
		{"drive", "PUT", "/drives/rootfs", `{"drive_id": "rootfs", "path_on_host": "/rootfs.ext4", "is_root_device": true, "is_read_only": false}`, 204, ""},
		{"mmds address pattern", "PUT", "/mmds/config", `{"network_interfaces": ["eth0"], "ipv4_address": "10.0.0.1"}`, 400, "does not match"},
		{"start", "PUT", "/actions", `{"action_type": "InstanceStart"}`, 204, ""},
		{"start twice", "PUT", "/actions", `{"action_type": "InstanceStart"}`, 400, "already running"},
		{"pre-boot only after boot", "PUT", "/machine-config", `{"vcpu_count": 2, "mem_size_mib": 256}`, 400, "after starting"},
		{"ctrl-alt-del", "PUT", "/actions", `{"action_type": "SendCtrlAltDel"}`, 204, ""},
	}
	for _, st := range steps {
		req, err := http.NewRequest(st.method, "http://localhost"+st.path, strings.NewReader(st.body))
		if err != nil {
			t.Fatal(err)
		}
		if st.body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		resp.Body.Close() //nolint:gosec // status is all we read
		if resp.StatusCode != st.want {
			t.Errorf("%s: status %d, want %d", st.name, resp.StatusCode, st.want)
		}
		reqs := srv.Requests()
		if last := reqs[len(reqs)-1]; !strings.Contains(last.Refusal, st.refusal) || (st.refusal == "") != (last.Refusal == "") {
			t.Errorf("%s: refusal %q, want one containing %q", st.name, last.Refusal, st.refusal)
		}
	}
}
