package runnerpool

import (
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jobwatch"
)

func TestRunnerNameForHandleIsStableAndValid(t *testing.T) {
	long := "a-pool-name-that-goes-on-and-on-well-past-what-fits-into-a-label-value-x"
	for _, pool := range []string{"p", long} {
		a, b := RunnerNameForHandle(pool, "handle-1"), RunnerNameForHandle(pool, "handle-1")
		if a != b {
			t.Fatalf("same handle gave %q and %q", a, b)
		}
		if a == RunnerNameForHandle(pool, "handle-2") {
			t.Fatalf("two handles share the name %q", a)
		}
		if errs := validation.IsDNS1123Label(a); len(errs) > 0 {
			t.Fatalf("%q is not a valid name: %v", a, errs)
		}
	}
}

func TestAddRecordKeepsNewestFirstWithinTheLimit(t *testing.T) {
	var history []v1alpha1.RunnerRecord
	for i := range 5 {
		history = AddRecord(history, v1alpha1.RunnerRecord{Name: fmt.Sprintf("r%d", i)}, 3)
	}
	if len(history) != 3 || history[0].Name != "r4" || history[2].Name != "r2" {
		t.Fatalf("history = %v", history)
	}
	// Recording the same runner twice (a retry after a crash) changes nothing.
	if again := AddRecord(history, v1alpha1.RunnerRecord{Name: "r3"}, 3); len(again) != 3 || again[0].Name != "r4" {
		t.Fatalf("duplicate record changed history: %v", again)
	}
	// A job's next runner reuses the name; as another object it gets its own record.
	retried := AddRecord(history, v1alpha1.RunnerRecord{Name: "r3", UID: "second-r3"}, 3)
	if len(retried) != 3 || retried[0].UID != "second-r3" {
		t.Fatalf("retry of r3 not recorded: %v", retried)
	}
	if none := AddRecord(nil, v1alpha1.RunnerRecord{Name: "x"}, 0); len(none) != 0 {
		t.Fatalf("limit 0 kept %v", none)
	}
}

func TestRecordCarriesTheJobAndOutcome(t *testing.T) {
	code := int32(0)
	rn := &v1alpha1.Runner{
		ObjectMeta: metav1.ObjectMeta{Name: "r"},
		Spec:       v1alpha1.RunnerSpec{Job: &v1alpha1.JobRef{ID: 9, Handle: "h"}},
		Status: v1alpha1.RunnerStatus{
			Outcome: v1alpha1.OutcomeSucceeded, ExitCode: &code,
			Registration: &v1alpha1.Registration{UUID: "u"},
			Conditions:   []metav1.Condition{{Type: "Ended", Reason: "TaskRan", Message: "m"}},
		},
	}
	rec := Record(rn)
	if rec.JobID != 9 || rec.Handle != "h" || rec.UUID != "u" || rec.Outcome != v1alpha1.OutcomeSucceeded || rec.Reason != "TaskRan" || *rec.ExitCode != 0 {
		t.Fatalf("record = %+v", rec)
	}
	if Record(&v1alpha1.Runner{}).Outcome != v1alpha1.OutcomeError {
		t.Fatalf("a runner without outcome must be recorded as Error")
	}
}

func TestBuildRunner(t *testing.T) {
	pool := &v1alpha1.RunnerPool{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ci"}}
	pool.Spec.Scaling.MinIdle = 2
	rn := BuildRunner(pool, "p-1", &jobwatch.Job{ID: 3, Handle: "h", RunsOn: []string{"docker"}, RepoID: 7, Repository: "acme/app", Via: "webhook delivery d-1"})
	if rn.Spec.Mode != v1alpha1.ModeEphemeral || rn.Spec.Job.Handle != "h" || rn.Labels[v1alpha1.PoolLabel] != "p" || rn.Namespace != "ci" ||
		rn.Spec.Job.Repository != "acme/app" || rn.Spec.Job.RepoID != 7 {
		t.Fatalf("runner = %+v", rn)
	}
	if want := "job 3 waiting, seen by webhook delivery d-1"; rn.Spec.Trigger != want {
		t.Errorf("trigger %q, want %q", rn.Spec.Trigger, want)
	}
	idle := BuildRunner(pool, "", nil)
	if idle.Spec.Job != nil {
		t.Fatalf("idle runner has a job")
	}
	if want := "pool minIdle 2 (generation 0)"; idle.Spec.Trigger != want {
		t.Errorf("idle runner's trigger %q, want %q", idle.Spec.Trigger, want)
	}
}

func TestJobGone(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	grace := 15 * time.Second
	runner := func(created time.Duration, phase v1alpha1.RunnerPhase) *v1alpha1.Runner {
		return &v1alpha1.Runner{
			ObjectMeta: metav1.ObjectMeta{CreationTimestamp: metav1.NewTime(now.Add(-created))},
			Spec:       v1alpha1.RunnerSpec{Job: &v1alpha1.JobRef{ID: 1, Handle: "h"}},
			Status:     v1alpha1.RunnerStatus{Phase: phase},
		}
	}
	listed := jobwatch.Demand{PolledAt: now, Known: map[string]jobwatch.Job{"h": {Handle: "h", Status: "running"}}}
	goneNow := jobwatch.Demand{PolledAt: now, Gone: map[string]time.Time{"h": now}}
	goneLongAgo := jobwatch.Demand{PolledAt: now, Gone: map[string]time.Time{"h": now.Add(-time.Minute)}}
	neverSeen := jobwatch.Demand{PolledAt: now}
	cases := []struct {
		name   string
		runner *v1alpha1.Runner
		demand jobwatch.Demand
		want   bool
	}{
		{"job still listed", runner(time.Hour, v1alpha1.RunnerIdle), listed, false},
		{"job just left: give the runner time to exit", runner(time.Hour, v1alpha1.RunnerIdle), goneNow, false},
		{"job left a while ago", runner(time.Hour, v1alpha1.RunnerIdle), goneLongAgo, true},
		{"never listed since start, runner old", runner(time.Hour, v1alpha1.RunnerIdle), neverSeen, true},
		{"never listed, runner brand new", runner(time.Second, v1alpha1.RunnerPending), neverSeen, false},
		{"already ended", runner(time.Hour, v1alpha1.RunnerFinished), goneLongAgo, false},
		{"idle runner has no job", &v1alpha1.Runner{}, goneLongAgo, false},
	}
	for _, c := range cases {
		if got := jobGone(c.runner, c.demand, now, grace); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	// The pool looks again exactly when a grace period ends, not at its next resync.
	for _, c := range []struct {
		name   string
		runner *v1alpha1.Runner
		demand jobwatch.Demand
		want   time.Duration
	}{
		{"job still listed", runner(time.Hour, v1alpha1.RunnerIdle), listed, 0},
		{"job just left", runner(time.Hour, v1alpha1.RunnerIdle), goneNow, grace},
		{"job left 10 s ago", runner(time.Hour, v1alpha1.RunnerIdle), jobwatch.Demand{PolledAt: now, Gone: map[string]time.Time{"h": now.Add(-10 * time.Second)}}, 5 * time.Second},
		{"grace over", runner(time.Hour, v1alpha1.RunnerIdle), goneLongAgo, 0},
		{"never listed, runner a second old", runner(time.Second, v1alpha1.RunnerPending), neverSeen, grace - time.Second},
	} {
		if got := graceLeft(c.runner, c.demand, now, grace); got != c.want {
			t.Errorf("grace left, %s: %s, want %s", c.name, got, c.want)
		}
	}
}

// The audit log names who wrote a pool's spec from its managed fields: the earliest writer for
// its creation, the latest for a change; writers of status or metadata only do not count.
func TestFieldManagerNamesWhoWroteTheSpec(t *testing.T) {
	at := func(minute int) *metav1.Time {
		tm := metav1.NewTime(time.Date(2026, 11, 25, 10, minute, 0, 0, time.UTC))
		return &tm
	}
	fields := func(raw string) *metav1.FieldsV1 {
		f := metav1.FieldsV1{}
		f.SetRawBytes([]byte(raw))
		return &f
	}
	pool := &v1alpha1.RunnerPool{ObjectMeta: metav1.ObjectMeta{ManagedFields: []metav1.ManagedFieldsEntry{
		{Manager: "kubectl-client-side-apply", Operation: metav1.ManagedFieldsOperationUpdate, Time: at(1), FieldsV1: fields(`{"f:spec":{"f:labels":{}}}`)},
		{Manager: "forgejo-runner-operator", Operation: metav1.ManagedFieldsOperationUpdate, Time: at(2), FieldsV1: fields(`{"f:metadata":{"f:finalizers":{}}}`)},
		{Manager: "forgejo-runner-operator", Operation: metav1.ManagedFieldsOperationUpdate, Time: at(3), Subresource: "status", FieldsV1: fields(`{"f:status":{}}`)},
		{Manager: "argocd-controller", Operation: metav1.ManagedFieldsOperationApply, Time: at(4), FieldsV1: fields(`{"f:spec":{"f:scaling":{}}}`)},
	}}}
	if got := fieldManager(pool, false); got != "kubectl-client-side-apply" {
		t.Errorf("creator %q, want kubectl-client-side-apply", got)
	}
	if got := fieldManager(pool, true); got != "argocd-controller" {
		t.Errorf("last writer %q, want argocd-controller", got)
	}
	if got := fieldManager(&v1alpha1.RunnerPool{}, true); got != "an unknown field manager" {
		t.Errorf("without managed fields %q", got)
	}
}

func TestWarmRunnersBackOffAfterFailures(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	rec := func(handle string, outcome v1alpha1.RunnerOutcome, ago time.Duration) v1alpha1.RunnerRecord {
		at := metav1.NewTime(now.Add(-ago))
		return v1alpha1.RunnerRecord{Handle: handle, Outcome: outcome, FinishedAt: &at}
	}
	cases := []struct {
		name    string
		history []v1alpha1.RunnerRecord // newest first
		want    time.Duration
	}{
		{"no history", nil, 0},
		{"one refused pod a second ago", []v1alpha1.RunnerRecord{rec("", v1alpha1.OutcomeError, time.Second)}, 4 * time.Second},
		{"three failures in a row", []v1alpha1.RunnerRecord{
			rec("", v1alpha1.OutcomeError, time.Second), rec("", v1alpha1.OutcomeFailed, 10*time.Second), rec("", v1alpha1.OutcomeError, 20*time.Second),
		}, 19 * time.Second},
		{"a job runner's failure does not count", []v1alpha1.RunnerRecord{rec("h", v1alpha1.OutcomeFailed, time.Second)}, 0},
		{"a warm runner that ran a job ends the run", []v1alpha1.RunnerRecord{
			rec("", v1alpha1.OutcomeSucceeded, time.Second), rec("", v1alpha1.OutcomeError, 2*time.Second),
		}, 0},
		{"waited out", []v1alpha1.RunnerRecord{rec("", v1alpha1.OutcomeError, time.Minute)}, 0},
	}
	for _, c := range cases {
		if got := warmRetryDelay(c.history, now); got != c.want {
			t.Errorf("%s: wait %s, want %s", c.name, got, c.want)
		}
	}
}
