package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/controller/runnerpool"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/eventually"
)

// jobsFailing reads the pool's JobsFailing condition.
func (w *world) jobsFailing(t *testing.T, pool string) *metav1.Condition {
	t.Helper()
	return meta.FindStatusCondition(w.pool(t, pool).Status.Conditions, runnerpool.ConditionJobsFailing)
}

// givenUpEvent finds the pool's JobGivenUp Warning Event.
func (w *world) givenUpEvent(t *testing.T, pool string) *eventsv1.Event {
	t.Helper()
	for _, e := range w.kubeEvents(t) {
		if e.Regarding.Kind == "RunnerPool" && e.Regarding.Name == pool && e.Reason == "JobGivenUp" {
			return &e
		}
	}
	return nil
}

// A job whose runners keep failing gets spec.failures.maxPerJob runners and no more, whatever the
// history limit; the pool says so in JobsFailing and a Warning Event.
func TestAJobIsGivenUpAfterMaxFailures(t *testing.T) {
	w := startWorld(t)
	w.createPool(t, "capped", func(p *v1alpha1.RunnerPool) {
		p.Spec.Failures.MaxPerJob = 2
		p.Spec.History.Limit = new(int32) // the count must not depend on the history
	})
	if err := w.sim.SetFaults(forgejosim.Faults{Endpoints: []forgejosim.Fault{{Endpoint: forgejosim.EndpointDeclare, ErrorRate: 1, StatusCode: 500}}}); err != nil {
		t.Fatal(err)
	}
	jobs, err := w.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}})
	if err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 2*time.Minute, "JobsFailing=True", func() (bool, string) {
		c := w.jobsFailing(t, "capped")
		if c == nil {
			return false, "no condition"
		}
		return c.Status == metav1.ConditionTrue, string(c.Status) + " " + c.Reason + ": " + c.Message
	})
	c := w.jobsFailing(t, "capped")
	if !strings.Contains(c.Message, fmt.Sprintf("job %d", jobs[0].ID)) {
		t.Errorf("JobsFailing message %q does not name job %d", c.Message, jobs[0].ID)
	}
	regs := w.registrationsMade(t)
	// Past two more backoffs: no third runner.
	time.Sleep(25 * time.Second)
	if now := w.registrationsMade(t) - 1; now != regs {
		t.Errorf("%d registrations made after the pool gave up", now-regs)
	}
	if rs := w.runners(t, "capped"); len(rs) != 0 {
		t.Errorf("%d runners live after the pool gave up", len(rs))
	}
	if failures := w.pool(t, "capped").Status.JobFailures; len(failures) != 1 || failures[0].Failures != 2 {
		t.Errorf("jobFailures %+v, want the job with 2", failures)
	}
	eventually.True(t, time.Minute, "the JobGivenUp Event", func() (bool, string) {
		return w.givenUpEvent(t, "capped") != nil, "no Event"
	})
	if got, _ := w.sim.Job(jobs[0].ID); got.Status != forgejosim.JobWaiting {
		t.Errorf("job %s, want it left waiting", got.Status)
	}
}

// A runner that cannot start (here: no node takes its pod) is ended Failed at the start
// deadline with the reason, and counts as a failure of its job.
func TestARunnerThatCannotStartMeetsItsDeadline(t *testing.T) {
	w := startWorld(t)
	w.createPool(t, "stuck", func(p *v1alpha1.RunnerPool) {
		unschedulable(p)
		p.Spec.Failures.StartDeadline = &metav1.Duration{Duration: 3 * time.Second}
		p.Spec.Failures.MaxPerJob = 1
	})
	jobs, err := w.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}})
	if err != nil {
		t.Fatal(err)
	}
	eventually.True(t, time.Minute, "the stuck runner recorded as Failed", func() (bool, string) {
		for _, rec := range w.pool(t, "stuck").Status.RecentRunners {
			if rec.Handle == jobs[0].Handle {
				return true, ""
			}
		}
		return false, "no record"
	})
	rec := w.pool(t, "stuck").Status.RecentRunners[0]
	if rec.Outcome != v1alpha1.OutcomeFailed || rec.Reason != "StartDeadlineExceeded" || !strings.Contains(rec.Message, "not scheduled") {
		t.Errorf("record %+v, want Failed StartDeadlineExceeded saying the pod was not scheduled", rec)
	}
	eventually.True(t, time.Minute, "JobsFailing=True after the one allowed failure", func() (bool, string) {
		c := w.jobsFailing(t, "stuck")
		return c != nil && c.Status == metav1.ConditionTrue, "not yet"
	})
	if regs, runners, pods := w.leftovers(t, "stuck"); regs != 0 || runners != 0 || pods != 0 {
		t.Errorf("left: %d registrations, %d runners, %d pods", regs, runners, pods)
	}
}
