package main

import (
	"bytes"
	"maps"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
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
	for args, want := range map[string][]string{
		"":                    {"poll", "webhook", "chain"},
		"-paths=webhook,poll": {"webhook", "poll"},
		"-paths=poll":         {"poll"},
		"-paths=chain":        {"chain"},
	} {
		cfg, err := parseFlags(strings.Fields(args))
		if err != nil || !slices.Equal(cfg.paths, want) {
			t.Errorf("parseFlags(%q) = %q, %v; want %q", args, cfg.paths, err, want)
		}
	}
	for _, bad := range []string{"-paths=", "-paths=poll,poll", "-paths=hooks", "-singles=-1", "-chains=0", "-paths=chain -chains=-2"} {
		if _, err := parseFlags(strings.Fields(bad)); err == nil {
			t.Errorf("parseFlags(%q) took it", bad)
		}
	}
	// Without the chain path, -chains is not used and so not checked.
	if _, err := parseFlags([]string{"-paths=poll", "-chains=0"}); err != nil {
		t.Errorf("-chains=0 without the chain path: %v", err)
	}
}

func TestParseFlagsSinglesAndChains(t *testing.T) {
	cfg, err := parseFlags(nil)
	if err != nil || cfg.singles != 5 || cfg.chains != 3 {
		t.Fatalf("defaults: singles %d, chains %d, %v; want 5, 3", cfg.singles, cfg.chains, err)
	}
	cfg, err = parseFlags([]string{"-singles=0", "-chains=7"})
	if err != nil || cfg.singles != 0 || cfg.chains != 7 {
		t.Errorf("-singles=0 -chains=7: singles %d, chains %d, %v", cfg.singles, cfg.chains, err)
	}
}

func TestQuietAfterCoversEveryFollowUp(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	// The run's end delivery, just before its runners were gone, asks for a poll 5 s later.
	if got, want := quietAfter(t0), t0.Add(5*time.Second+settleMargin); !got.Equal(want) {
		t.Errorf("quietAfter = %s, want %s", got, want)
	}
	if zero := quietAfter(time.Time{}); !zero.Before(t0) {
		t.Errorf("quietAfter(zero) = %s, want long past", zero)
	}
	// Half an interval after the latest poll, if that is later than quiet.
	if got := queueTime(t0, t0.Add(-time.Second), 5*time.Second); !got.Equal(t0.Add(4 * time.Second)) {
		t.Errorf("queueTime = %s, want 4 s after quiet", got)
	}
	if got := queueTime(t0, t0.Add(-time.Minute), 5*time.Second); !got.Equal(t0) {
		t.Errorf("queueTime = %s, want quiet itself", got)
	}
}

func TestPushTimesMatchRunsByCommit(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	state := forgejosim.State{
		Runs: []forgejosim.Run{{ID: 1, CommitSHA: "aaa"}, {ID: 2, CommitSHA: "bbb"}},
		Deliveries: []forgejosim.Delivery{
			{HookID: 7, Event: "push", Created: t0, Payload: []byte(`{"after":"aaa"}`)},
			{HookID: 7, Event: "action_run_success", Created: t0.Add(time.Hour), Payload: []byte(`{"after":"bbb"}`)},
			{HookID: 8, Event: "push", Created: t0.Add(time.Minute), Payload: []byte(`{"after":"bbb"}`)},
			{HookID: 7, Event: "push", Created: t0.Add(2 * time.Second), Payload: []byte(`{"after":"bbb"}`)},
			{HookID: 7, Event: "push", Created: t0.Add(time.Second), Payload: []byte(`{"after":"bbb"}`)},
			{HookID: 7, Event: "push", Created: t0, Payload: []byte(`not json`)},
		},
	}
	got := pushTimes(state, 7)
	if len(got) != 2 || !got[1].Equal(t0) || !got[2].Equal(t0.Add(time.Second)) {
		t.Errorf("pushTimes = %v; want run 1 at t0, run 2 at t0+1s (the earliest push of hook 7)", got)
	}
	if got := pushTimes(state, 0); len(got) != 0 {
		t.Errorf("no hook: %v", got)
	}
	j := forgejosim.Job{RunID: 3, Created: t0.Add(time.Hour)}
	if q := queuedAt(j, got); !q.Equal(j.Created) {
		t.Errorf("a job without a push is queued at its creation, got %s", q)
	}
}

func TestDeliveryCountsByEventAndAnswer(t *testing.T) {
	got := deliveryCounts([]forgejosim.Delivery{
		{HookID: 1, Event: "push", LastStatusCode: 202},
		{HookID: 1, Event: "push", LastStatusCode: 202},
		{HookID: 1, Event: "push", Status: forgejosim.DeliveryFailed},
		{HookID: 1, Event: "action_run_success", LastStatusCode: 202},
		{HookID: 2, Event: "push", LastStatusCode: 202},
	}, 1)
	want := map[string]int{"push 202": 2, "push failed": 1, "action_run_success 202": 1}
	if !maps.Equal(got, want) {
		t.Errorf("deliveryCounts = %v, want %v", got, want)
	}
}

func TestJobSamplesStartAtThePush(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	jobs := []forgejosim.Job{
		{ID: 1, RunID: 10, Handle: "h1", Created: t0, Started: t0.Add(3 * time.Second), Stopped: t0.Add(4 * time.Second), Status: forgejosim.JobSuccess},
		{ID: 2, RunID: 20, Handle: "h2", Created: t0}, // no pod yet
	}
	pushAt := map[int64]time.Time{10: t0.Add(10 * time.Millisecond)}
	byHandle := map[string]podTimes{"h1": {pods: 1, seen: t0.Add(time.Second), running: t0.Add(2 * time.Second), gone: t0.Add(5 * time.Second)}}
	s := jobSamples(jobs, pushAt, byHandle)
	if d := s[phQueuedPod]; len(d) != 1 || d[0] != 990*time.Millisecond {
		t.Errorf("%s = %v, want [990ms] (from the push, and none for the job without a pod)", phQueuedPod, d)
	}
	if d := s[phDoneGone]; len(d) != 1 || d[0] != time.Second {
		t.Errorf("%s = %v", phDoneGone, d)
	}
	ph := summarizeAll(singlePrefix, singlePhases, s)
	if len(ph) != 3 || ph[0].Name != "one job: queued → pod seen" || ph[2].Name != "one job: queued → done" || ph[2].P50 != 3990 {
		t.Errorf("single phases = %+v", ph)
	}
}

func TestChainSamples(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	done := forgejosim.JobSuccess
	runs := []forgejosim.Run{
		{ID: 1, Created: t0, Jobs: []forgejosim.Job{
			{Name: "build", Handle: "b", Status: done, Stopped: at(2000)},
			{Name: "test", Handle: "t", Needs: []string{"build"}, Status: done, Stopped: at(5000)},
			{Name: "deploy", Handle: "d", Needs: []string{"test"}, Status: done, Stopped: at(9000)},
		}},
		// Stuck after build: no need-done sample for deploy and no chain done.
		{ID: 2, Created: t0, Jobs: []forgejosim.Job{
			{Name: "build", Handle: "b2", Status: done, Stopped: at(1500)},
			{Name: "test", Handle: "t2", Needs: []string{"build"}, Status: forgejosim.JobWaiting},
			{Name: "deploy", Handle: "d2", Needs: []string{"test"}, Status: forgejosim.JobBlocked},
		}},
	}
	pushAt := map[int64]time.Time{1: at(100)}
	byHandle := map[string]podTimes{
		"b": {seen: at(600)}, "t": {seen: at(2300)}, "d": {seen: at(5400)},
		"b2": {seen: at(700)},
	}
	s := chainSamples(runs, pushAt, byHandle)
	if got := s[phChainFirstPod]; !slices.Equal(got, []time.Duration{500 * time.Millisecond, 700 * time.Millisecond}) {
		t.Errorf("%s = %v (run 1 from its push, run 2 from its creation)", phChainFirstPod, got)
	}
	if got := s[phChainNextPod]; !slices.Equal(got, []time.Duration{300 * time.Millisecond, 400 * time.Millisecond}) {
		t.Errorf("%s = %v", phChainNextPod, got)
	}
	if got := s[phChainDone]; !slices.Equal(got, []time.Duration{8900 * time.Millisecond}) {
		t.Errorf("%s = %v", phChainDone, got)
	}
}

func TestPodChecks(t *testing.T) {
	jobs := []forgejosim.Job{{ID: 1, Handle: "a"}, {ID: 2, Handle: "b"}}
	tasks := []forgejosim.Task{{JobID: 1}, {JobID: 2}, {JobID: 2}}
	byHandle := map[string]podTimes{"a": {pods: 2}, "b": {pods: 1}, "stray": {pods: 1}, "": {pods: 2}}
	two, without, twice := podChecks(jobs, tasks, byHandle)
	if two != 1 || without != 3 || twice != 1 {
		t.Errorf("podChecks = %d, %d, %d; want 1, 3, 1", two, without, twice)
	}
}

func TestPrintResultsSideBySide(t *testing.T) {
	all := []*results{
		{Path: "poll", Complete: true, Singles: 2, SinglesJobsPolls: 4, JobsPerSecond: 3, Phases: []phase{
			{Name: phQueuedRunning, Count: 50, P50: 7000},
			{Name: "one job: queued → pod seen", Count: 2, P50: 5100, P95: 6100, P99: 6100},
		}},
		{Path: "webhook", Complete: true, Singles: 2, SinglesJobsPolls: 6, JobsPerSecond: 9, Phases: []phase{
			{Name: phQueuedRunning, Count: 50, P50: 300},
			{Name: "one job: queued → pod seen", Count: 2, P50: 150, P95: 180, P99: 180},
		}},
		{Path: "chain", Complete: true, Chains: 3, API: apiFigures{JobsPolls: 21}, Phases: []phase{
			{Name: phChainNextPod, Count: 6, P50: 1200, P95: 1500, P99: 1500},
		}},
	}
	var out bytes.Buffer
	if err := printResults(&out, all, false); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"=== poll path ===", "=== webhook path ===", "=== chain path ===",
		"burst of 0 jobs, then 2 single jobs", "3 runs of 3 jobs (build → test → deploy",
		"queued = the run's push delivery", "queued = the run's insertion",
		"path  poll  webhook  chain",
		"burst: queued → Running p50 ms  7000      300      -",
		"one job: queued (push) → pod seen p95 ms  6100      180      -",
		"chain: need done → next pod p99 ms     -        -   1500",
		"burst jobs/s  3.00     9.00      -",
		"one job: jobs polls/job   2.0      3.0      -",
		"jobs polls (burst; chain: all runs)     0        0     21",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	// No path has it: no row.
	for _, absent := range []string{"chain: push → chain done p50", "one job: queued → done p50"} {
		if strings.Contains(out.String(), absent) {
			t.Errorf("output has a row %q that no path has:\n%s", absent, out.String())
		}
	}
	out.Reset()
	if err := printResults(&out, all, true); err != nil || !strings.HasPrefix(out.String(), "[") {
		t.Errorf("JSON output is not an array (%v):\n%s", err, out.String())
	}
}

func TestParseFlagsScale(t *testing.T) {
	cfg, err := parseFlags(nil)
	if err != nil || slices.Contains(cfg.paths, pathScale) {
		t.Fatalf("defaults: paths %q, %v; want no scale path", cfg.paths, err)
	}
	if cfg.pools != defaultScalePools || cfg.runners != defaultScaleRunners || cfg.window != time.Minute {
		t.Errorf("defaults: pools %d, runners %d, window %s", cfg.pools, cfg.runners, cfg.window)
	}
	cfg, err = parseFlags(strings.Fields("-paths scale -pools 20 -runners 200 -window 30s"))
	if err != nil || !slices.Equal(cfg.paths, []string{pathScale}) || cfg.pools != 20 || cfg.runners != 200 || cfg.window != 30*time.Second {
		t.Errorf("-paths scale -pools 20 -runners 200: %+v, %v", cfg, err)
	}
	if _, err := parseFlags(strings.Fields("-paths poll,scale")); err != nil {
		t.Errorf("scale last: %v", err)
	}
	for _, bad := range []string{
		"-paths scale,poll", "-paths scale -pools 0", "-paths scale -pools 501",
		"-paths scale -pools 10 -runners 9", "-paths scale -runners 10001", "-paths scale -window 1s",
	} {
		if _, err := parseFlags(strings.Fields(bad)); err == nil {
			t.Errorf("parseFlags(%q) took it", bad)
		}
	}
	// Without the scale path its flags are not checked.
	if _, err := parseFlags(strings.Fields("-paths poll -pools 0")); err != nil {
		t.Errorf("-pools 0 without the scale path: %v", err)
	}
}

func TestScaleSizes(t *testing.T) {
	if got, want := scaleSizes(50, 500), []scaleSize{{12, 125}, {25, 250}, {50, 500}}; !slices.Equal(got, want) {
		t.Errorf("scaleSizes(50, 500) = %v, want %v", got, want)
	}
	// Sizes that round alike are measured once; every pool keeps a runner.
	if got, want := scaleSizes(1, 2), []scaleSize{{1, 1}, {1, 2}}; !slices.Equal(got, want) {
		t.Errorf("scaleSizes(1, 2) = %v, want %v", got, want)
	}
	if got, want := scaleSizes(8, 8), []scaleSize{{2, 2}, {4, 4}, {8, 8}}; !slices.Equal(got, want) {
		t.Errorf("scaleSizes(8, 8) = %v, want %v", got, want)
	}
	if got := spread(10, 4); !slices.Equal(got, []int{3, 3, 2, 2}) {
		t.Errorf("spread(10, 4) = %v", got)
	}
	if scaleNodes(200) != 1 || scaleNodes(500) != 3 || scaleNodes(1) != 1 {
		t.Errorf("scaleNodes: 200 → %d, 500 → %d, 1 → %d", scaleNodes(200), scaleNodes(500), scaleNodes(1))
	}
	if poolOrg(0, 5) != "" || poolOrg(1, 5) != "scale-org-1" || poolOrg(6, 5) != "scale-org-1" || poolOrg(5, 5) != "scale-org-5" {
		t.Error("poolOrg does not put pool 0 global and the rest round the organizations")
	}
	if scaleOrgCount(1) != 0 || scaleOrgCount(3) != 2 || scaleOrgCount(50) != 5 {
		t.Error("scaleOrgCount")
	}
	if connections(1, 0) != 1 || connections(3, 5) != 3 || connections(50, 5) != 6 {
		t.Error("connections")
	}
}

func TestFitLineAndProjection(t *testing.T) {
	// y = 20 + 0.03·x exactly.
	f, ok := fitLine([]float64{100, 200, 400}, []float64{23, 26, 32})
	if !ok || f.Points != 3 || math.Abs(f.Intercept-20) > 1e-9 || math.Abs(f.Slope-0.03) > 1e-12 || math.Abs(f.At10k-320) > 1e-6 {
		t.Errorf("fitLine = %+v, %v; want 20 + 0.03x, 320 at 10000", f, ok)
	}
	// Least squares through scattered points: (0,1), (1,3), (2,2) → y = 1.5 + 0.5x.
	f, ok = fitLine([]float64{0, 1, 2}, []float64{1, 3, 2})
	if !ok || math.Abs(f.Intercept-1.5) > 1e-9 || math.Abs(f.Slope-0.5) > 1e-9 {
		t.Errorf("fitLine scattered = %+v", f)
	}
	for _, xs := range [][]float64{nil, {5}, {5, 5}} {
		if _, ok := fitLine(xs, make([]float64, len(xs))); ok {
			t.Errorf("fitLine(%v) fitted", xs)
		}
	}
	if project(10, 2, 10000) != 20010 {
		t.Error("project")
	}
}

func TestParseReconciles(t *testing.T) {
	text := `# HELP controller_runtime_reconcile_total Total number of reconciliations per controller
# TYPE controller_runtime_reconcile_total counter
controller_runtime_reconcile_total{controller="runner",result="success"} 120
controller_runtime_reconcile_total{controller="runner",result="error"} 3
controller_runtime_reconcile_total{controller="runnerpool",result="requeue_after"} 7 1700000000000
controller_runtime_reconcile_errors_total{controller="runner"} 3
`
	got, err := parseReconciles(strings.NewReader(text))
	if err != nil || !maps.Equal(got, map[string]float64{"runner": 123, "runnerpool": 7}) {
		t.Errorf("parseReconciles = %v, %v", got, err)
	}
	if _, err := parseReconciles(strings.NewReader("go_goroutines 5\n")); err == nil {
		t.Error("parseReconciles took metrics without reconciles")
	}
}

func TestPrintScale(t *testing.T) {
	r := &scaleResults{Path: pathScale, Pools: 20, Runners: 200, Orgs: 5, PollInterval: "10s", Window: "1m0s", Nodes: 1, CPUs: 2}
	for i, s := range scaleSizes(20, 200) {
		r.Steps = append(r.Steps, scaleStep{
			scaleSize: s, Connections: connections(s.Pools, 5), Complete: true, IdleAtEnd: s.Runners,
			PeakRSSMiB: 40 + float64(s.Runners)/10, RSSEndMiB: 30 + float64(s.Runners)/10, WindowMaxRSSMiB: 31,
			CPUPerMinute: float64(i + 1), ReconcilesPerSecond: map[string]float64{"runner": 1, "runnerpool": 0.5},
			JobsPollsPerInterval: 6, EndpointsPerInterval: map[string]float64{"GET /api/v1/admin/actions/runners/jobs": 1},
		})
	}
	r.Steps = append(r.Steps, scaleStep{scaleSize: scaleSize{Pools: 40, Runners: 400}, Connections: 6, IdleAtStart: 310, RampSeconds: 200})
	r.Notes = append(r.Notes, "40 pools, 400 runners: only 310 Idle")
	r.fits()
	if r.FitPeak == nil || math.Abs(r.FitPeak.Slope-0.1) > 1e-9 || math.Abs(r.FitPeak.At10k-1040) > 1e-6 {
		t.Fatalf("peak fit = %+v; want 40 + 0.1x over the complete sizes only", r.FitPeak)
	}
	var buf bytes.Buffer
	if err := printScale(&buf, r, false); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"no (310 Idle)",
		"jobs polls per interval at 20 pools: 6.00 over 6 distinct connections",
		"reconciles/s by controller: runner 1.00, runnerpool 0.50",
		"1.00  GET /api/v1/admin/actions/runners/jobs",
		"peak RSS = 40.0 MiB + 0.1000 MiB × runners (least squares over 3 sizes); projected at 10000 runners over 500 pools: 1040 MiB",
		"end RSS = 30.0 MiB",
		"note: 40 pools, 400 runners: only 310 Idle",
		"largest size run: 20 pools, 200 runners Idle over 6 connections, on 2 CPUs",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("printScale lacks %q:\n%s", want, out)
		}
	}
	buf.Reset()
	if err := printScale(&buf, &scaleResults{Steps: r.Steps[3:]}, false); err != nil {
		t.Fatal(err)
	}
	if out := buf.String(); !strings.Contains(out, "largest size run: none") || !strings.Contains(out, "peak RSS: no fit") {
		t.Errorf("printScale without a complete size:\n%s", out)
	}
	buf.Reset()
	if err := printScale(&buf, r, true); err != nil || !strings.Contains(buf.String(), `"projected_mib_at_10000_runners": 1040`) {
		t.Errorf("printScale JSON: %v\n%s", err, buf.String())
	}
}
