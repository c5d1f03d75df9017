package runnerpool

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/controller/runner"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jobwatch"
)

func TestJobFailuresBackOffThenGiveUp(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	at := func(ago time.Duration) *metav1.Time { t := metav1.NewTime(now.Add(-ago)); return &t }
	n := 0
	failed := func(handle string, outcome v1alpha1.RunnerOutcome, ago time.Duration) v1alpha1.RunnerRecord {
		n++
		return v1alpha1.RunnerRecord{Handle: handle, JobID: 42, UID: types.UID(fmt.Sprint("uid-", n)), Outcome: outcome, FinishedAt: at(ago)}
	}
	pool := &v1alpha1.RunnerPool{}
	pool.Spec.Failures.MaxPerJob = 3
	record := func(rec v1alpha1.RunnerRecord) bool {
		var reached bool
		pool.Status.JobFailures, reached = RecordFailure(pool.Status.JobFailures, rec, maxFailuresPerJob(pool))
		return reached
	}
	delay := func(handle string) (time.Duration, bool) { return jobRetryDelay(pool, handle, now) }

	if d, given := delay("h"); d != 0 || given {
		t.Fatalf("no failures: delay %s, given %v", d, given)
	}
	// Neither a success nor the operator's own removal is a failure.
	record(failed("h", v1alpha1.OutcomeSucceeded, 0))
	record(failed("h", v1alpha1.OutcomeDeleted, 0))
	if d, _ := delay("h"); d != 0 {
		t.Fatalf("success and deletion counted: delay %s", d)
	}
	first := failed("h", v1alpha1.OutcomeFailed, 0)
	if record(first) {
		t.Fatal("gave up after one failure of three")
	}
	record(first) // the same runner again, after a reconcile that did not get to delete it
	if d, _ := delay("h"); d != 5*time.Second {
		t.Fatalf("one failure just now: delay %s, want 5s", d)
	}
	record(failed("other", v1alpha1.OutcomeNoJob, 0))
	record(failed("h", v1alpha1.OutcomeError, time.Second))
	if d, _ := delay("h"); d != 10*time.Second {
		t.Fatalf("two failures, the later just now: delay %s, want 10s", d)
	}
	if !record(failed("h", v1alpha1.OutcomeStopped, 0)) {
		t.Fatal("the third failure did not reach the limit")
	}
	if _, given := delay("h"); !given {
		t.Fatal("the pool did not give up after three failures")
	}
	if record(failed("h", v1alpha1.OutcomeFailed, 0)) {
		t.Fatal("giving up announced twice")
	}
	status := &v1alpha1.RunnerPoolStatus{JobFailures: pool.Status.JobFailures}
	setJobsFailing(status, pool)
	if c := status.Conditions[0]; c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "job 42") {
		t.Errorf("JobsFailing %+v, want True naming job 42", c)
	}
	// A job that left the list is forgotten; one still listed is not.
	kept := ForgetFailures(pool.Status.JobFailures, map[string]jobwatch.Job{"other": {}})
	if len(kept) != 1 || kept[0].Handle != "other" {
		t.Errorf("kept %+v, want only the listed job", kept)
	}
	status.JobFailures = nil
	setJobsFailing(status, pool)
	if c := status.Conditions[0]; c.Status != metav1.ConditionFalse {
		t.Errorf("JobsFailing %+v once nothing is given up, want False", c)
	}
	// The backoff is capped.
	pool.Spec.Failures.MaxPerJob = 100
	for range 30 {
		record(failed("many", v1alpha1.OutcomeFailed, 0))
	}
	if d, _ := delay("many"); d != retryCap {
		t.Errorf("30 failures: delay %s, want the cap %s", d, retryCap)
	}
}

func TestStartDeadlineStopSaysWhy(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	pool := &v1alpha1.RunnerPool{}
	pool.Spec.Failures.StartDeadline = &metav1.Duration{Duration: time.Minute}
	runnerAged := func(age time.Duration, phase v1alpha1.RunnerPhase) *v1alpha1.Runner {
		rn := &v1alpha1.Runner{}
		rn.CreationTimestamp = metav1.NewTime(now.Add(-age))
		rn.Status.Phase = phase
		return rn
	}
	unscheduled := &corev1.Pod{Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
		Reason: "Unschedulable", Message: "0/2 nodes are available"}}}}
	pulling := &corev1.Pod{Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: "runner",
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "pull access denied"}}}}}}
	refused := runnerAged(2*time.Minute, v1alpha1.RunnerPending)
	refused.Status.Conditions = []metav1.Condition{{Type: runner.ConditionRegistered, Status: metav1.ConditionFalse, Reason: "TokenScopeMissing", Message: "the token lacks write:admin"}}
	started := runnerAged(2*time.Minute, v1alpha1.RunnerIdle)
	startedAt := metav1.NewTime(now.Add(-time.Minute))
	started.Status.StartedAt = &startedAt

	for _, tc := range []struct {
		name string
		rn   *v1alpha1.Runner
		pod  *corev1.Pod
		want string // "" for no stop
	}{
		{"young", runnerAged(30*time.Second, v1alpha1.RunnerStarting), unscheduled, ""},
		{"started", started, nil, ""},
		{"unschedulable", runnerAged(2*time.Minute, v1alpha1.RunnerStarting), unscheduled, "not scheduled (Unschedulable): 0/2 nodes are available"},
		{"image pull", runnerAged(2*time.Minute, v1alpha1.RunnerStarting), pulling, "container runner waiting (ImagePullBackOff): pull access denied"},
		{"registration refused", refused, nil, "Forgejo refused its registration: the token lacks write:admin"},
		{"no pod, no reason", runnerAged(2*time.Minute, v1alpha1.RunnerRegistered), nil, "its runner container was not running"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stop := StartDeadlineStop(pool, tc.rn, tc.pod, now)
			if tc.want == "" {
				if stop != nil {
					t.Fatalf("stopped: %+v", stop)
				}
				return
			}
			if stop == nil || stop.Outcome != v1alpha1.OutcomeFailed || stop.Reason != "StartDeadlineExceeded" || !strings.Contains(stop.Message, tc.want) {
				t.Fatalf("stop %+v, want Failed StartDeadlineExceeded saying %q", stop, tc.want)
			}
		})
	}
}
