package main

import (
	"os"
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
