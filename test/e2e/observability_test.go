package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/audit"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/journal"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jsonlog"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/runnerpod"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/eventually"
)

// journalOptions makes the operator under test write its event log (with the given fsync
// policy) and audit log into a fresh directory and serve /metrics, and returns the two paths.
func journalOptions(t *testing.T, fsync jsonlog.FsyncPolicy) (eventPath, auditPath string) {
	t.Helper()
	dir := t.TempDir()
	eventPath, auditPath = filepath.Join(dir, "events.jsonl"), filepath.Join(dir, "audit.jsonl")
	savedOptions, savedMetrics := testOptions, metricsAddr
	testOptions.EventLog = jsonlog.Options{Path: eventPath, Fsync: fsync}
	testOptions.AuditLogPath = auditPath
	metricsAddr = freeAddr(t)
	t.Cleanup(func() { testOptions, metricsAddr = savedOptions, savedMetrics })
	return eventPath, auditPath
}

// TestABurstIsAccountedForEverywhere runs a burst of jobs brought by webhooks, changes and
// deletes the pool, and checks what every record says against what happened: the event log,
// the audit log, Kubernetes Events and the metrics. No token may appear in any of them, nor
// in the logs or the pool's status.
func TestABurstIsAccountedForEverywhere(t *testing.T) {
	eventPath, auditPath := journalOptions(t, jsonlog.FsyncAlways)
	// Forgejo 15 tells no one when a job starts or ends: a job is timed only if a jobs list sees
	// it running, so each runs longer than the gap between two lists.
	saved := taskDuration
	taskDuration = 1500 * time.Millisecond
	t.Cleanup(func() { taskDuration = saved })
	w := startWebhookWorld(t, time.Second)
	before := scrape(t, metricsAddr)
	tokens, runnerObjects := w.collectRunnerTokens(t)

	const pool, n = "observed", 12
	w.webhookPool(t, pool)
	w.waitReady(t, pool) // so that the webhooks, not the first poll, bring the jobs
	// Two waves, so that the pool's Kubernetes Events summarise them in separate events.
	var kubeEvents []eventsv1.Event
	summaries := func(want int) func() (bool, string) {
		return func() (bool, string) {
			kubeEvents = w.kubeEvents(t)
			created, ended, onRunners := 0, 0, 0
			for _, e := range kubeEvents {
				switch {
				case e.Regarding.Kind == "RunnerPool" && e.Regarding.Name == pool && e.Reason == "RunnersCreated":
					created += leadingCount(e.Note)
				case e.Regarding.Kind == "RunnerPool" && e.Regarding.Name == pool && e.Reason == "RunnersEnded":
					ended += leadingCount(e.Note)
				case e.Regarding.Kind == "Runner" && e.Reason == "Registered":
					onRunners++
				}
			}
			return created == want && ended == want && onRunners > 0,
				fmt.Sprintf("summaries count %d runners created and %d ended, %d Registered events on Runners; want %d, %d, >0", created, ended, onRunners, want, want)
		}
	}
	var queued []forgejosim.Job
	for wave := 1; wave <= 2; wave++ {
		jobs, err := w.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}, Count: n / 2})
		if err != nil {
			t.Fatal(err)
		}
		queued = append(queued, jobs...)
		eventually.True(t, 3*time.Minute, "every job to succeed", w.allSucceeded(queued))
		eventually.True(t, time.Minute, "nothing left", func() (bool, string) {
			regs, runners, pods := w.leftovers(t, pool)
			return regs == 0 && runners == 0 && pods == 0, fmt.Sprintf("%d registrations, %d runners, %d pods", regs, runners, pods)
		})
		// The pool's summaries, sent every few seconds, count every runner; runners have
		// their own events.
		eventually.True(t, 30*time.Second, "the pool's event summaries", summaries(len(queued)))
	}

	// A user's spec change and the pool's deletion are audited too.
	p := w.pool(t, pool)
	p.Spec.Scaling.MaxRunners = 21
	if err := w.cluster.Client.Update(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	changed := p.Generation
	eventually.True(t, 30*time.Second, "the change to be seen", func() (bool, string) {
		got := w.pool(t, pool)
		return got.Status.ObservedGeneration == changed, fmt.Sprintf("observed generation %d of %d", got.Status.ObservedGeneration, changed)
	})
	status, _ := json.Marshal(w.pool(t, pool).Status)
	after := scrape(t, metricsAddr)
	if err := w.cluster.Client.Delete(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 30*time.Second, "the pool gone", func() (bool, string) {
		err := w.cluster.Client.Get(t.Context(), client.ObjectKeyFromObject(p), p)
		return client.IgnoreNotFound(err) == nil && err != nil, fmt.Sprintf("get pool: %v", err)
	})
	w.stopOperator() // flushes and closes the files

	events := readJSONLines[journal.Event](t, eventPath)
	runners := checkEventLog(t, events, pool, n, false)
	for _, ev := range events {
		if ev.To == "Pending" && (ev.Repository != "acme/app" || ev.RepoID == 0) {
			t.Errorf("runner %s: its job's repository is not on record: %+v", ev.Runner, ev)
		}
	}
	records := checkAuditLog(t, auditPath, pool)
	checkAudited(t, records, len(runners), changed)

	// Metrics, against the event log and the simulator.
	delta := func(name string, labels ...string) float64 {
		return after.value(name, labels...) - before.value(name, labels...)
	}
	poolLabels := []string{`namespace="default"`, `pool="observed"`}
	checks := []struct {
		what      string
		got, want float64
	}{
		{"succeeded runners", delta("forgejo_runner_operator_runner_outcomes_total", append(poolLabels, `outcome="Succeeded"`)...), n},
		{"registrations timed", delta("forgejo_runner_operator_runner_registration_duration_seconds_count", poolLabels...), n},
		{"lifetimes timed", delta("forgejo_runner_operator_runner_lifetime_seconds_count", poolLabels...), n},
		{"start-ups timed", delta("forgejo_runner_operator_runner_startup_duration_seconds_count", poolLabels...), float64(countTo(events, "Idle"))},
		{"registrations made", delta("forgejo_runner_operator_forgejo_api_requests_total", `endpoint="POST /runners"`, `code="2`), n},
		{"queue waits timed", delta("forgejo_runner_operator_job_queue_wait_seconds_count"), n},
		{"executions timed", delta("forgejo_runner_operator_job_execution_seconds_count"), n},
		{"webhook deliveries accepted", delta("forgejo_runner_operator_webhook_deliveries_total", `result="accepted"`), float64(webhookDeliveries(w))},
		{"audit records", after.value("forgejo_runner_operator_audit_log_records"), float64(len(records) - 1)}, // the deletion came after the scrape
		{"live runners now", after.value("forgejo_runner_operator_runners", poolLabels...), 0},
		{"pending jobs now", after.value("forgejo_runner_operator_pending_jobs", poolLabels...), 0},
		{"pool ready", after.value("forgejo_runner_operator_pool_ready", poolLabels...), 1},
		{"record write errors", delta("forgejo_runner_operator_record_write_errors_total"), 0},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("metric: %s = %v, want %v", c.what, c.got, c.want)
		}
	}

	// No token anywhere.
	known := tokens()
	if len(known) == 0 {
		t.Fatal("no runner token was seen: the leak check would prove nothing")
	}
	known = append(known, "admin-token", webhookSecret)
	eventFile, _ := os.ReadFile(eventPath)
	auditFile, _ := os.ReadFile(auditPath)
	eventObjects, _ := json.Marshal(kubeEvents)
	places := map[string]string{
		"the event log": string(eventFile), "the audit log": string(auditFile), "the operator's logs": w.logs.String(),
		"/metrics": after.text, "Kubernetes Events": string(eventObjects), "the pool's status": string(status),
		"Runner objects": runnerObjects(),
	}
	for where, text := range places {
		if text == "" {
			t.Errorf("%s is empty: the leak check would prove nothing", where)
		}
		for _, token := range known {
			if strings.Contains(text, token) {
				t.Errorf("a token (%.4s…) appears in %s", token, where)
			}
		}
	}
}

// TestRecordsSurviveAnOperatorRestart restarts the operator in the middle of a burst: every
// runner's life is in the event log once and whole, and the audit log's chain runs on across
// the restart.
func TestRecordsSurviveAnOperatorRestart(t *testing.T) {
	eventPath, auditPath := journalOptions(t, jsonlog.FsyncInterval) // the default
	w := startWorld(t)
	const pool, n = "restarted", 16
	w.createPool(t, pool, func(p *v1alpha1.RunnerPool) { p.Spec.Scaling.MaxRunners = 20 })
	queued, err := w.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}, Count: n})
	if err != nil {
		t.Fatal(err)
	}
	eventually.True(t, time.Minute, "the burst under way", func() (bool, string) {
		k := len(w.runners(t, pool))
		return k >= 5, fmt.Sprintf("%d runners", k)
	})
	w.stopOperator()
	linesBefore := len(readJSONLines[journal.Event](t, eventPath))
	auditBefore := len(readJSONLines[audit.Record](t, auditPath))
	w.startOperator(t)
	eventually.True(t, 3*time.Minute, "every job to succeed", w.allSucceeded(queued))
	eventually.True(t, time.Minute, "nothing left", func() (bool, string) {
		regs, runners, pods := w.leftovers(t, pool)
		return regs == 0 && runners == 0 && pods == 0, fmt.Sprintf("%d registrations, %d runners, %d pods", regs, runners, pods)
	})
	w.stopOperator()

	events := readJSONLines[journal.Event](t, eventPath)
	if linesBefore == 0 || len(events) <= linesBefore {
		t.Fatalf("%d event lines before the restart, %d after: the restart did not fall in the burst", linesBefore, len(events))
	}
	runners := checkEventLog(t, events, pool, n, false)
	records := checkAuditLog(t, auditPath, pool)
	if auditBefore == 0 || len(records) <= auditBefore {
		t.Fatalf("%d audit records before the restart, %d after", auditBefore, len(records))
	}
	if created := checkRegistrationsPaired(t, records); created < len(runners) {
		t.Errorf("%d registrations created on record for %d runners", created, len(runners))
	}
}

// checkRegistrationsPaired checks that every registration created is on record as created once
// and deleted once, and returns how many there were.
func checkRegistrationsPaired(t *testing.T, records []audit.Record) int {
	t.Helper()
	created, deleted := map[string]int{}, map[string]int{}
	for _, r := range records {
		switch r.Action {
		case audit.ActionRegistrationCreated:
			created[r.Object]++
		case audit.ActionRegistrationDeleted:
			deleted[r.Object]++
		}
	}
	for reg, k := range created {
		if k != 1 || deleted[reg] != 1 {
			t.Errorf("%s: created %d times and deleted %d times on record, want once each", reg, k, deleted[reg])
		}
	}
	return len(created)
}

// waitReady waits until the pool's Forgejo connection is up.
func (w *world) waitReady(t *testing.T, name string) {
	t.Helper()
	eventually.True(t, 30*time.Second, "pool "+name+" ready", func() (bool, string) {
		p := w.pool(t, name)
		for _, c := range p.Status.Conditions {
			if c.Type == "Ready" {
				return c.Status == "True", c.Reason + ": " + c.Message
			}
		}
		return false, "no Ready condition"
	})
}

// webhookDeliveries counts the deliveries the simulator made to the operator with a 2xx answer.
func webhookDeliveries(w *world) int {
	n := 0
	for _, d := range w.sim.State().Deliveries {
		if d.LastStatusCode == http.StatusAccepted {
			n++
		}
	}
	return n
}

// checkEventLog checks that every runner's life is in the log once, whole and in order, and
// returns the runners' uids.
// With crashed, a runner may register more than once: a registration made just before a
// crash, whose token was not stored, cannot be recovered.
func checkEventLog(t *testing.T, events []journal.Event, pool string, jobs int, crashed bool) map[string]bool {
	t.Helper()
	ids := map[string]bool{}
	lives := map[string][]journal.Event{}
	for _, ev := range events {
		if ids[ev.ID] {
			t.Errorf("event %s is in the log twice", ev.ID)
		}
		ids[ev.ID] = true
		lives[string(ev.RunnerUID)] = append(lives[string(ev.RunnerUID)], ev)
	}
	if len(lives) != jobs {
		t.Errorf("the event log tells of %d runners, want %d (one per job)", len(lives), jobs)
	}
	runners := map[string]bool{}
	for uid, life := range lives {
		runners[uid] = true
		var path []string
		for _, ev := range life {
			path = append(path, ev.To)
		}
		got := strings.Join(path, ">")
		// Idle and Busy may be skipped by a runner quicker than the controller looks.
		want := regexp.MustCompile(`^Pending>Registered>Starting(>Idle)?(>Busy)?>Finished>Deleted$`)
		if crashed {
			want = regexp.MustCompile(`^Pending(>Registered)+>Starting(>Idle)?(>Busy)?>Finished>Deleted$`)
		}
		if !want.MatchString(got) {
			t.Errorf("runner %s (%s): transitions %s", life[0].Runner, uid, got)
			continue
		}
		first, last := life[0], life[len(life)-1]
		if first.JobID == 0 || first.Handle == "" || first.RepoID == 0 || last.Outcome != "Succeeded" || last.Reason != "Retired" {
			t.Errorf("runner %s: first event %+v, last %+v", first.Runner, first, last)
		}
		for _, ev := range life {
			if ev.Pool != pool || ev.Namespace != "default" || ev.Time.IsZero() {
				t.Errorf("event without its pool or time: %+v", ev)
			}
			if ev.To != "Pending" && ev.UUID == "" {
				t.Errorf("event after registration without the registration's uuid: %+v", ev)
			}
		}
		if _, ok := last.Duration(journal.DurationLifetime); !ok {
			t.Errorf("runner %s: Deleted event without a lifetime: %+v", first.Runner, last)
		}
		for _, ev := range life {
			if _, ok := ev.Duration(journal.DurationRegistration); ev.Reason == "Registered" && !ok {
				t.Errorf("runner %s: Registered event without a registration duration: %+v", first.Runner, ev)
			}
		}
	}
	return runners
}

// checkAuditLog verifies the audit log's chain and that every record names the operator, and
// returns the records.
func checkAuditLog(t *testing.T, path, pool string) []audit.Record {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	report, err := audit.Verify(f, audit.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if report.Problem != nil {
		t.Fatalf("audit log does not verify: line %d: %s", report.Problem.Line, report.Problem.Message)
	}
	records := readJSONLines[audit.Record](t, path)
	for _, r := range records {
		if !strings.Contains(r.Actor.Identity, "forgejo-runner-operator") || r.Actor.Trigger == "" {
			t.Errorf("record %d names the actor %+v, want the operator's user and a trigger", r.Seq, r.Actor)
		}
		if r.Pool != pool {
			t.Errorf("record %d is about pool %q, want %q", r.Seq, r.Pool, pool)
		}
	}
	return records
}

// checkAudited checks that each registration and pod of the runners has its creation and
// deletion on record, and the pool its whole life, with the triggers that caused them.
func checkAudited(t *testing.T, records []audit.Record, runners int, generation int64) {
	t.Helper()
	count := map[string]int{}
	webhook := false
	for _, r := range records {
		count[r.Action]++
		if r.Action == audit.ActionRegistrationCreated && strings.Contains(r.Actor.Trigger, "seen by poll after webhook delivery ") {
			webhook = true
		}
		if r.Action == audit.ActionPoolChanged && !strings.Contains(r.Actor.Trigger, fmt.Sprintf("spec change (generation %d) by ", generation)) {
			t.Errorf("spec change trigger %q does not name generation %d and who made it", r.Actor.Trigger, generation)
		}
	}
	want := map[string]int{
		audit.ActionRegistrationCreated: runners, audit.ActionRegistrationDeleted: runners,
		audit.ActionPodCreated: runners, audit.ActionPodDeleted: runners,
		audit.ActionPoolCreated: 1, audit.ActionPoolChanged: 1, audit.ActionPoolDeleted: 1,
	}
	for action, n := range want {
		if count[action] != n {
			t.Errorf("audit log has %d %s records, want %d", count[action], action, n)
		}
	}
	if !webhook {
		t.Error("no registration names a webhook delivery as its trigger")
	}
	if last := records[len(records)-1]; last.Action != audit.ActionPoolDeleted {
		t.Errorf("last record %+v, want the pool's deletion", last)
	}
}

func countTo(events []journal.Event, to string) int {
	n := 0
	for _, ev := range events {
		if ev.To == to {
			n++
		}
	}
	return n
}

func leadingCount(note string) int {
	n, _ := strconv.Atoi(strings.SplitN(note, " ", 2)[0])
	return n
}

func readJSONLines[T any](t *testing.T, path string) []T {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	var out []T
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var v T
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatalf("%s: line %q: %v", path, sc.Text(), err)
		}
		out = append(out, v)
	}
	return out
}

func (w *world) kubeEvents(t *testing.T) []eventsv1.Event {
	t.Helper()
	var list eventsv1.EventList
	if err := w.cluster.Client.List(t.Context(), &list, client.InNamespace("default")); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// collectRunnerTokens watches the runners' token Secrets and the Runners while the test runs,
// and returns functions that give the tokens seen and the Runners' JSON.
func (w *world) collectRunnerTokens(t *testing.T) (tokens func() []string, runners func() string) {
	var mu sync.Mutex
	seen := map[string]bool{}
	var runnerJSON strings.Builder
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			var secrets corev1.SecretList
			if err := w.cluster.Client.List(t.Context(), &secrets, client.MatchingLabels{runnerpod.LabelAppName: runnerpod.AppName}); err == nil {
				mu.Lock()
				for _, s := range secrets.Items {
					if tok := string(s.Data[runnerpod.TokenKey]); tok != "" {
						seen[tok] = true
					}
				}
				mu.Unlock()
			}
			var list v1alpha1.RunnerList
			if err := w.cluster.Client.List(t.Context(), &list); err == nil {
				data, _ := json.Marshal(list.Items)
				mu.Lock()
				runnerJSON.Write(data)
				mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	tokens = func() []string {
		mu.Lock()
		defer mu.Unlock()
		var out []string
		for tok := range seen {
			out = append(out, tok)
		}
		return out
	}
	runners = func() string {
		mu.Lock()
		defer mu.Unlock()
		return runnerJSON.String()
	}
	return tokens, runners
}

// scraped is one scrape of /metrics.
type scraped struct{ text string }

func scrape(t *testing.T, addr string) scraped {
	t.Helper()
	var body string
	eventually.True(t, 30*time.Second, "/metrics to answer", func() (bool, string) {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false, err.Error()
		}
		defer func() { _ = resp.Body.Close() }()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			return false, fmt.Sprintf("%d %v", resp.StatusCode, err)
		}
		body = string(b)
		return true, ""
	})
	return scraped{text: body}
}

// value sums the samples of the metric whose labels include all of labels (`name="value"`).
func (s scraped) value(name string, labels ...string) float64 {
	total := 0.0
	for _, line := range strings.Split(s.text, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		i := strings.LastIndexByte(line, ' ') // label values may hold spaces
		if i < 0 {
			continue
		}
		series, value := line[:i], line[i+1:]
		matches := true
		for _, l := range labels {
			matches = matches && strings.Contains(series, l)
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil && matches {
			total += v
		}
	}
	return total
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().String()
}
