package e2e

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/controller/runnerpool"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/operator"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/eventually"
)

// forgejo15World is a webhook world whose periodic poll is ten minutes away: every job these
// tests see served was found by a poll a Forgejo 15 delivery or a runner's end asked for.
func forgejo15World(t *testing.T, task time.Duration, sim forgejosim.Options) (*world, string) {
	t.Helper()
	savedTask, savedSim := taskDuration, testSimOptions
	taskDuration, testSimOptions = task, sim
	t.Cleanup(func() { taskDuration, testSimOptions = savedTask, savedSim })
	w := startWebhookWorld(t, 10*time.Minute)
	w.webhookPool(t, "f15")
	eventually.True(t, time.Minute, "the pool's first poll", func() (bool, string) {
		return meta.IsStatusConditionTrue(w.pool(t, "f15").Status.Conditions, runnerpool.ConditionForgejoReachable), "not polled"
	})
	var receiver string
	for _, h := range w.sim.State().Hooks {
		receiver = h.URL
	}
	return w, receiver
}

// pushes are the simulator's push deliveries the operator accepted.
func (w *world) pushes() []forgejosim.Delivery {
	var out []forgejosim.Delivery
	for _, d := range w.sim.Deliveries() {
		if d.Event == "push" && d.LastStatusCode == http.StatusAccepted {
			out = append(out, d)
		}
	}
	return out
}

// recordsOf are the pool's history records of the runners for one job handle.
func (w *world) recordsOf(t *testing.T, pool, handle string) []v1alpha1.RunnerRecord {
	t.Helper()
	var out []v1alpha1.RunnerRecord
	for _, rec := range w.pool(t, pool).Status.RecentRunners {
		if rec.Handle == handle {
			out = append(out, rec)
		}
	}
	return out
}

func (w *world) jobsSucceeded(ids ...int64) func() (bool, string) {
	return func() (bool, string) {
		var states []string
		done := 0
		for _, id := range ids {
			j, _ := w.sim.Job(id)
			states = append(states, fmt.Sprintf("%d:%s", id, j.Status))
			if j.Status == forgejosim.JobSuccess {
				done++
			}
		}
		return done == len(ids), strings.Join(states, " ")
	}
}

// TestForgejo15WebhooksServeJobs is issue #10's promise: with the periodic poll ten minutes away,
// the deliveries Forgejo 15 really sends and the ends of runners move every job along.
func TestForgejo15WebhooksServeJobs(t *testing.T) {
	w, receiver := forgejo15World(t, 2*time.Second, forgejosim.Options{})

	var pushJob forgejosim.Job
	t.Run("a signed push makes its waiting job's runner", func(t *testing.T) {
		jobs, err := w.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}})
		if err != nil {
			t.Fatal(err)
		}
		pushJob = jobs[0]
		eventually.True(t, 2*time.Minute, "the pushed job to succeed", w.jobsSucceeded(pushJob.ID))
		if n := len(w.pushes()); n != 1 {
			t.Errorf("%d push deliveries accepted, want 1", n)
		}
		for _, d := range w.sim.Deliveries() {
			if strings.HasPrefix(d.Event, "workflow_job") {
				t.Errorf("the Forgejo 15 simulator sent a %s delivery", d.Event)
			}
		}
		eventually.True(t, time.Minute, "the runner recorded", func() (bool, string) {
			recs := w.recordsOf(t, "f15", pushJob.Handle)
			return len(recs) == 1 && recs[0].Outcome == v1alpha1.OutcomeSucceeded, fmt.Sprintf("%+v", recs)
		})
	})

	t.Run("a second identical delivery makes nothing more", func(t *testing.T) {
		pushes := w.pushes()
		if len(pushes) == 0 {
			t.Fatal("no push delivery to repeat")
		}
		d := pushes[0]
		regs := w.registrationsMade(t)
		// The same delivery again (a replay), then as Forgejo's "redeliver" sends it: the same
		// body under a new delivery id. Both are known by their verified body for an hour and
		// acknowledged as duplicates.
		for _, c := range []struct {
			id   string
			want int
		}{{d.ID, http.StatusOK}, {d.ID + "-redelivered", http.StatusOK}} {
			if got := postDelivery(t, receiver, c.id, "push", d.Payload); got != c.want {
				t.Errorf("delivery %s answered %d, want %d", c.id, got, c.want)
			}
		}
		// Past the follow-up polls a delivery asks for.
		time.Sleep(7 * time.Second)
		if now := w.registrationsMade(t) - 1; now != regs {
			t.Errorf("%d registrations after the repeats, want %d: a repeat made a runner", now, regs)
		}
		if n := len(w.recordsOf(t, "f15", pushJob.Handle)); n != 1 {
			t.Errorf("%d runners for the pushed job, want 1", n)
		}
		if rs := w.runners(t, "f15"); len(rs) != 0 {
			t.Errorf("%d runners live after the repeats, want none", len(rs))
		}
	})

	t.Run("a three-job needs chain finishes", func(t *testing.T) {
		pushesBefore := len(w.pushes())
		run, err := w.sim.QueueRun(forgejosim.QueueRunRequest{Repo: "acme/app", Jobs: []forgejosim.RunJobSpec{
			{Name: "build", RunsOn: []string{"docker"}},
			{Name: "test", RunsOn: []string{"docker"}, Needs: []string{"build"}},
			{Name: "deploy", RunsOn: []string{"docker"}, Needs: []string{"test"}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		var ids []int64
		for _, j := range run.Jobs {
			ids = append(ids, j.ID)
		}
		eventually.True(t, 3*time.Minute, "the chain to finish", w.jobsSucceeded(ids...))
		if n := len(w.pushes()) - pushesBefore; n != 1 {
			t.Errorf("%d push deliveries for the run, want 1: the released jobs came without a webhook", n)
		}
		eventually.True(t, time.Minute, "one runner recorded for each job of the chain", func() (bool, string) {
			var counts []string
			ok := true
			for _, j := range run.Jobs {
				n := len(w.recordsOf(t, "f15", j.Handle))
				counts = append(counts, fmt.Sprintf("%s:%d", j.Name, n))
				ok = ok && n == 1
			}
			return ok, strings.Join(counts, " ")
		})
		// No job got a second runner after its first was recorded.
		time.Sleep(3 * time.Second)
		for _, j := range run.Jobs {
			if recs := w.recordsOf(t, "f15", j.Handle); len(recs) != 1 {
				t.Errorf("job %s had %d runners, want 1", j.Name, len(recs))
			}
		}
	})

	t.Run("a concurrency-held job keeps its runner until the group frees", func(t *testing.T) {
		first, err := w.sim.QueueRun(forgejosim.QueueRunRequest{Repo: "acme/app", Concurrency: "deploy-prod",
			Jobs: []forgejosim.RunJobSpec{{Name: "deploy", RunsOn: []string{"docker"}}}})
		if err != nil {
			t.Fatal(err)
		}
		second, err := w.sim.QueueRun(forgejosim.QueueRunRequest{Repo: "acme/app", Concurrency: "deploy-prod",
			Jobs: []forgejosim.RunJobSpec{{Name: "deploy", RunsOn: []string{"docker"}}}})
		if err != nil {
			t.Fatal(err)
		}
		x, y := first.Jobs[0], second.Jobs[0]
		// The held job is listed waiting, so it gets its runner at once; that runner can take
		// nothing until the first run ends.
		eventually.True(t, time.Minute, "the held job's runner while the first job is not done", func() (bool, string) {
			for _, rn := range w.runners(t, "f15") {
				if rn.Spec.Job != nil && rn.Spec.Job.Handle == y.Handle {
					if got, _ := w.sim.Job(x.ID); got.Status.Done() {
						t.Fatalf("the first job ended (%s) before the held job had a runner", got.Status)
					}
					return true, ""
				}
			}
			return false, "no runner for the held job"
		})
		if got, _ := w.sim.Job(y.ID); got.Status != forgejosim.JobWaiting {
			t.Errorf("the held job is %s while the group is busy, want waiting", got.Status)
		}
		eventually.True(t, 3*time.Minute, "both jobs to succeed, one after the other", w.jobsSucceeded(x.ID, y.ID))
		gx, _ := w.sim.Job(x.ID)
		gy, _ := w.sim.Job(y.ID)
		if gy.Started.Before(gx.Stopped) {
			t.Errorf("the held job started at %v, before the first ended at %v", gy.Started, gx.Stopped)
		}
		eventually.True(t, time.Minute, "the held job's runner recorded", func() (bool, string) {
			return len(w.recordsOf(t, "f15", y.Handle)) == 1, "not yet"
		})
		if recs := w.recordsOf(t, "f15", y.Handle); len(recs) != 1 || recs[0].Outcome != v1alpha1.OutcomeSucceeded {
			t.Errorf("the held job's runners: %+v; want one that succeeded, neither failed nor replaced", recs)
		}
	})

	for _, rec := range w.pool(t, "f15").Status.RecentRunners {
		if rec.Outcome != v1alpha1.OutcomeSucceeded {
			t.Errorf("runner %s of job %d ended %s (%s: %s)", rec.Name, rec.JobID, rec.Outcome, rec.Reason, rec.Message)
		}
	}
}

// A push delivered before its run's jobs are listed (Forgejo queues the delivery and inserts the
// jobs in one request) is caught by the follow-up polls.
func TestADeliveryThatBeatsItsJobsIsFollowedUp(t *testing.T) {
	w, _ := forgejo15World(t, taskDuration, forgejosim.Options{DeliveryRaceProbability: 1, DeliveryRaceDelay: time.Second})
	jobs, err := w.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}, Count: 3})
	if err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 2*time.Minute, "every raced job to succeed", w.allSucceeded(jobs))
}

// postDelivery sends a body to the receiver as Forgejo would, signed with the hooks' secret.
func postDelivery(t *testing.T, url, id, event string, body []byte) int {
	t.Helper()
	m := hmac.New(sha256.New, []byte(webhookSecret))
	m.Write(body)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Forgejo-Delivery", id)
	req.Header.Set("X-Forgejo-Event", event)
	req.Header.Set("X-Forgejo-Event-Type", event)
	req.Header.Set("X-Forgejo-Signature", hex.EncodeToString(m.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

var _ = operator.WebhookPath
