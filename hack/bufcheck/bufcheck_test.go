// Package bufcheck holds the test that buf's checks of the provisioner's API bite: buf.yaml and
// the baseline that `make proto-lint` runs buf lint and buf breaking with, applied to copies of
// the proto tree with one mistake each. It uses the pinned buf, installing it through
// hack/install-buf when bin/ lacks it, and fails (never skips) when it cannot.
package bufcheck

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const (
	root     = "../.."
	api      = "proto/provisioner/v1/provisioner.proto"
	runner   = "proto/runner/v1/fetch_single_task.proto"
	baseline = "proto/provisioner/v1/baseline.txtpb"
)

// buf returns the pinned buf: hack/install-buf prints its path, downloading it first if
// bin/buf is missing or another version.
func buf(t *testing.T) string {
	t.Helper()
	bin, err := filepath.Abs(filepath.Join(root, "bin"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), "go", "run", "./hack/install-buf", "-bin", bin)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("installing buf (go run ./hack/install-buf): %v\n%s", err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// edit is a change to one file of the copied tree: old must occur exactly once (so that the
// test notices when the proto moves on under it); an empty old appends new.
type edit struct{ file, old, new string }

// finding is one line of buf's --error-format=json.
type finding struct {
	Path    string `json:"path"`
	Line    int    `json:"start_line"`
	Type    string `json:"type"`
	Message string `json:"message"`
}

// want is what a check must report: nothing when rule is empty, else a finding of rule whose
// message contains every one of mention.
type want struct {
	rule    string
	mention []string
}

func TestChecksBite(t *testing.T) {
	bufPath := buf(t)
	for _, tc := range []struct {
		name           string
		edits          []edit
		lint, breaking want
	}{
		{name: "the API as it is passes both"},
		{
			name:     "a renumbered field breaks",
			edits:    []edit{{api, "  VMState state = 6;\n", "  VMState state = 999;\n"}}, // a number no field of VM will use
			breaking: want{"FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED", []string{`"state"`, `"VM"`, `"6"`}},
		},
		{
			name:     "a removed field breaks",
			edits:    []edit{{api, "  string runner_token = 4;\n", ""}},
			breaking: want{"FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED", []string{`"runner_token"`, `"CreateVMRequest"`}},
		},
		{
			name:  "a removed field whose number and name are reserved does not",
			edits: []edit{{api, "  string runner_token = 4;\n", "  reserved 4;\n  reserved \"runner_token\";\n"}},
		},
		{
			name:     "a renamed field breaks JSON",
			edits:    []edit{{api, "  string job_handle = 4;\n", "  string job_attempt = 4;\n"}},
			breaking: want{"FIELD_SAME_JSON_NAME", []string{`"jobHandle"`, `"jobAttempt"`}},
		},
		{
			name:     "a removed rpc breaks",
			edits:    []edit{{api, "  rpc GetCapacity(GetCapacityRequest) returns (GetCapacityResponse);\n", ""}},
			breaking: want{"RPC_NO_DELETE", []string{`"GetCapacity"`}},
		},
		{
			name:  "a lower-case message name is refused",
			edits: []edit{{api, "", "\nmessage vm_note {}\n"}},
			lint:  want{"MESSAGE_PASCAL_CASE", []string{`"vm_note"`}},
		},
		{
			name: "an rpc without its own Request and Response is refused",
			edits: []edit{{api, "  rpc GetVM(GetVMRequest) returns (GetVMResponse);\n",
				"  rpc GetVM(GetVMRequest) returns (GetVMResponse);\n  rpc Ping(GetVMRequest) returns (GetVMResponse);\n"}},
			lint: want{"RPC_REQUEST_STANDARD_NAME", []string{`"PingRequest"`}},
		},
		{
			name:  "Forgejo's runner proto is not ours to lint",
			edits: []edit{{runner, "", "\nmessage not_ours {}\n"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := tree(t, tc.edits)
			check(t, "buf lint", tc.lint, run(t, bufPath, dir, "lint"))
			check(t, "buf breaking", tc.breaking, run(t, bufPath, dir, "breaking", "--against", baseline))
		})
	}
}

// tree copies buf.yaml and proto/ (baseline included) to a temporary directory and applies edits.
func tree(t *testing.T, edits []edit) string {
	t.Helper()
	dir := t.TempDir()
	data, err := os.ReadFile(filepath.Join(root, "buf.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "buf.yaml"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(filepath.Join(dir, "proto"), os.DirFS(filepath.Join(root, "proto"))); err != nil {
		t.Fatal(err)
	}
	for _, e := range edits {
		path := filepath.Join(dir, e.file)
		src, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		s := string(src)
		switch n := strings.Count(s, e.old); {
		case e.old == "":
			s += e.new
		case n != 1:
			t.Fatalf("%s holds %q %d times, want once: update this test to the proto", e.file, e.old, n)
		default:
			s = strings.Replace(s, e.old, e.new, 1)
		}
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// run runs buf in dir and returns its findings; buf failing for another reason (the proto does
// not compile, the baseline is unreadable) fails the test.
func run(t *testing.T, bufPath, dir string, args ...string) []finding {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), bufPath, append(args, "--error-format=json")...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var findings []finding
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var f finding
		if err := json.Unmarshal(sc.Bytes(), &f); err != nil {
			t.Fatalf("buf %s: %q is not a finding: %v", args[0], sc.Text(), err)
		}
		findings = append(findings, f)
	}
	// buf exits 100 when it has findings, 1 when it could not check.
	var exit *exec.ExitError
	switch {
	case err == nil && len(findings) == 0:
	case errors.As(err, &exit) && exit.ExitCode() == 100 && len(findings) > 0:
	default:
		t.Fatalf("buf %s: %v, %d findings\n%s%s", strings.Join(args, " "), err, len(findings), out, stderr.String())
	}
	return findings
}

func check(t *testing.T, what string, w want, findings []finding) {
	t.Helper()
	if w.rule == "" {
		for _, f := range findings {
			t.Errorf("%s: unexpected %s at %s:%d: %s", what, f.Type, f.Path, f.Line, f.Message)
		}
		return
	}
	for _, f := range findings {
		if f.Type != w.rule {
			continue
		}
		all := true
		for _, m := range w.mention {
			all = all && strings.Contains(f.Message, m)
		}
		if all {
			return
		}
	}
	if len(findings) == 0 {
		t.Errorf("%s: passed, want a %s finding naming %s", what, w.rule, strings.Join(w.mention, ", "))
		return
	}
	t.Errorf("%s: no %s finding naming %s; it said:", what, w.rule, strings.Join(w.mention, ", "))
	for _, f := range findings {
		t.Errorf("  %s %s:%d: %s", f.Type, f.Path, f.Line, f.Message)
	}
}
