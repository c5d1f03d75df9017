package main

import (
	"bytes"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// The figures are only as good as these helpers; the bench itself is too slow for a test.

func TestSummarizeTakesNearestRank(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	p := summarize("x", d)
	if p.Count != 100 || p.P50 != 50 || p.P95 != 95 || p.P99 != 99 || p.Max != 100 {
		t.Errorf("summarize = %+v, want n=100 p50=50 p95=95 p99=99 max=100", p)
	}
	if p := summarize("one", []time.Duration{7 * time.Millisecond}); p.P50 != 7 || p.P99 != 7 {
		t.Errorf("one sample: %+v", p)
	}
	if p := summarize("none", nil); p.Count != 0 {
		t.Errorf("no samples: %+v", p)
	}
}

func TestNormalizePathFoldsIDs(t *testing.T) {
	for in, want := range map[string]string{
		"/api/v1/admin/actions/runners/42":   "/api/v1/admin/actions/runners/{id}",
		"/api/v1/admin/actions/runners/jobs": "/api/v1/admin/actions/runners/jobs",
		"/api/v1/repos/o/r2/actions/runners": "/api/v1/repos/o/r2/actions/runners",
	} {
		if got := normalizePath(in); got != want {
			t.Errorf("normalizePath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestReadProcStatsOfItself(t *testing.T) {
	st, err := readProcStats(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.HWM <= 0 || st.RSS <= 0 || st.HWM < st.RSS {
		t.Errorf("implausible memory figures: %+v", st)
	}
}

func TestSummarizeLogGroupsErrors(t *testing.T) {
	path := t.TempDir() + "/operator.log"
	log := `{"level":"info","msg":"starting"}
{"level":"error","msg":"Reconciler error","error":"conflict"}
{"level":"error","msg":"Reconciler error","error":"conflict"}
{"level":"error","msg":"Reconciler error","error":"boom"}
`
	if err := os.WriteFile(path, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	got := summarizeLog(path)
	if !strings.Contains(got, "4 lines") || !strings.Contains(got, "2× Reconciler error: conflict; 1× Reconciler error: boom") {
		t.Errorf("summarizeLog = %q", got)
	}
}

func TestParseFlagsPaths(t *testing.T) {
	for args, want := range map[string][]string{"": {"poll", "webhook"}, "-paths=webhook,poll": {"webhook", "poll"}, "-paths=poll": {"poll"}} {
		cfg, err := parseFlags(strings.Fields(args))
		if err != nil || !slices.Equal(cfg.paths, want) {
			t.Errorf("parseFlags(%q) = %q, %v; want %q", args, cfg.paths, err, want)
		}
	}
	for _, bad := range []string{"-paths=", "-paths=poll,poll", "-paths=hooks"} {
		if _, err := parseFlags([]string{bad}); err == nil {
			t.Errorf("parseFlags(%q) took it", bad)
		}
	}
}

func TestPrintResultsSideBySide(t *testing.T) {
	all := []*results{
		{Path: "poll", Complete: true, Phases: []phase{{Name: "queued → Running", P50: 7000}}},
		{Path: "webhook", Complete: true, Phases: []phase{{Name: "queued → Running", P50: 300}}},
	}
	var out bytes.Buffer
	if err := printResults(&out, all, false); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"=== poll path ===", "=== webhook path ===", "path  poll  webhook", "queued → Running p50 ms  7000      300"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if err := printResults(&out, all, true); err != nil || !strings.HasPrefix(out.String(), "[") {
		t.Errorf("JSON output is not an array (%v):\n%s", err, out.String())
	}
}
