package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/audit"
)

// buildAuditLog writes n records to a new log and returns its path and head hash.
func buildAuditLog(t *testing.T, n int) (string, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := audit.Open(path, "system:serviceaccount:ci:operator", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		err := l.Record(audit.Record{
			Action: audit.ActionPodCreated,
			Object: fmt.Sprintf("pod ci/runner-%d", i),
			Actor:  audit.Actor{Trigger: "poll"},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	_, head := l.Head()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return path, head
}

func runAuditCmd(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = runAudit(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// rewriteLines replaces the file at path with what edit makes of its lines (each with
// its newline).
func rewriteLines(t *testing.T, path string, edit func([][]byte) [][]byte) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(data, []byte{'\n'})
	lines = lines[:len(lines)-1] // the empty remainder after the last newline
	if err := os.WriteFile(path, bytes.Join(edit(lines), nil), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestAuditVerifyPassesAnIntactLog(t *testing.T) {
	path, head := buildAuditLog(t, 120)
	want := fmt.Sprintf("%s: ok: 120 records, last seq 120, head %s\n", path, head)
	for _, args := range [][]string{
		{"verify", path},
		{"verify", "--min-records", "120", "--head", head, path},
		{"verify", path, "--min-records=120"},
	} {
		code, stdout, stderr := runAuditCmd(args...)
		if code != 0 || stdout != want || stderr != "" {
			t.Errorf("audit %q: exit %d, stdout %q, stderr %q; want exit 0, stdout %q", args, code, stdout, stderr, want)
		}
	}
}

func TestAuditVerifyPassesAnEmptyLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, _ := runAuditCmd("verify", path)
	if code != 0 || stdout != path+": ok: 0 records (empty log)\n" {
		t.Fatalf("exit %d, stdout %q", code, stdout)
	}
}

func TestAuditVerifyReportsTheDamagedLine(t *testing.T) {
	cases := []struct {
		name string
		edit func([][]byte) [][]byte
		args []string
		want string
	}{{
		name: "line edited",
		edit: func(lines [][]byte) [][]byte {
			lines[6] = bytes.Replace(lines[6], []byte("runner-6"), []byte("runner-X"), 1)
			return lines
		},
		want: "line 8 (seq 8): link broken: line 7 was changed or a line after it was deleted",
	}, {
		name: "line deleted",
		edit: func(lines [][]byte) [][]byte { return append(lines[:4:4], lines[5:]...) },
		want: "line 5: seq jumps from 4 to 6: a line is missing",
	}, {
		name: "first line deleted",
		edit: func(lines [][]byte) [][]byte { return lines[1:] },
		want: "the log does not start at its first record (first seq 2): lines before it were removed",
	}, {
		name: "file truncated mid-line",
		edit: func(lines [][]byte) [][]byte {
			last := len(lines) - 1
			lines[last] = lines[last][:len(lines[last])/2]
			return lines
		},
		want: "the file is truncated: its last line is incomplete",
	}, {
		name: "last line deleted, below the high-water mark",
		edit: func(lines [][]byte) [][]byte { return lines[:len(lines)-1] },
		args: []string{"--min-records", "20"},
		want: "the log ends at seq 19 but at least 20 records were written: it was truncated",
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path, _ := buildAuditLog(t, 20)
			rewriteLines(t, path, c.edit)
			args := append(append([]string{"verify"}, c.args...), path)
			code, stdout, stderr := runAuditCmd(args...)
			if want := path + ": " + c.want + "\n"; code != 1 || stdout != want {
				t.Fatalf("exit %d, stdout %q (stderr %q); want exit 1, stdout %q", code, stdout, stderr, want)
			}
		})
	}
}

func TestAuditVerifyTakesAFileThatLooksLikeAFlagAfterDashDash(t *testing.T) {
	path, _ := buildAuditLog(t, 3)
	t.Chdir(filepath.Dir(path))
	if err := os.Rename(path, "-audit.jsonl"); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runAuditCmd("verify", "--min-records", "3", "--", "-audit.jsonl")
	if code != 0 || !strings.HasPrefix(stdout, "-audit.jsonl: ok: 3 records") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

func TestAuditUsageErrors(t *testing.T) {
	path, _ := buildAuditLog(t, 2)
	dir := t.TempDir()
	for name, args := range map[string][]string{
		"no subcommand":       {},
		"unknown subcommand":  {"check", path},
		"no file":             {"verify"},
		"two files":           {"verify", path, path},
		"missing file":        {"verify", filepath.Join(dir, "absent.jsonl")},
		"directory":           {"verify", dir},
		"bad min-records":     {"verify", "--min-records", "many", path},
		"head not a SHA-256":  {"verify", "--head", "3fa2", path},
		"unknown verify flag": {"verify", "--since", "1", path},
	} {
		code, stdout, stderr := runAuditCmd(args...)
		if code != 2 || stdout != "" || !strings.Contains(stderr, "usage: forgejo-runner-operator audit verify") {
			t.Errorf("%s: audit %q: exit %d, stdout %q, stderr %q; want exit 2 and the usage on stderr", name, args, code, stdout, stderr)
		}
	}
}

func TestAuditHelpGoesToStdout(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"--help"}, {"verify", "-h"}} {
		code, stdout, stderr := runAuditCmd(args...)
		if code != 0 || !strings.HasPrefix(stdout, "usage:") || stderr != "" {
			t.Errorf("audit %q: exit %d, stdout %q, stderr %q", args, code, stdout, stderr)
		}
	}
}
