package webhook_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/webhook"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/eventually"
)

// simEnv wires a Handler behind a real HTTP server and the simulator's webhook delivery to it.
// With jobEvents the simulator plays a newer server that sends workflow_job events; without, it
// is Forgejo 15.
func simEnv(t *testing.T, faults forgejosim.WebhookFaults, jobEvents bool) (*env, *forgejosim.Server) {
	t.Helper()
	e := newEnv(t, func(o *webhook.Options) { o.Now = nil })
	receiver := httptest.NewServer(e.h)
	// Registered before the simulator's cleanup, so it runs after it: the simulator stops
	// delivering before the receiver goes away.
	t.Cleanup(receiver.Close)
	sim, _ := forgejosim.NewTestServer(t, forgejosim.Options{AdminToken: "admin", Seed: 1, WebhookMaxAttempts: 1, JobEvents: jobEvents})
	if err := sim.SetFaults(forgejosim.Faults{Webhooks: faults}); err != nil {
		t.Fatalf("set faults: %v", err)
	}
	if _, err := sim.AddHook(forgejosim.HookConfig{
		URL: receiver.URL + "/webhook", Secret: secret, Scope: forgejosim.OrganizationScope("acme"),
	}); err != nil {
		t.Fatalf("add hook: %v", err)
	}
	return e, sim
}

// TestSimulatorForgejo15Push: a queued run is announced the only way Forgejo 15 can, by the push
// that started it, and that names the repository to poll.
func TestSimulatorForgejo15Push(t *testing.T) {
	e, sim := simEnv(t, forgejosim.WebhookFaults{}, false)
	jobs, err := sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}})
	if err != nil {
		t.Fatalf("queue jobs: %v", err)
	}
	eventually.True(t, 10*time.Second, "the push delivery", func() (bool, string) {
		return len(e.snk.gotRepos()) == 1, "no delivery yet"
	})
	ev := e.snk.gotRepos()[0]
	if ev.Event != "push" || ev.Repository != "acme/app" || ev.RepoID != jobs[0].RepoID || ev.OwnerID != jobs[0].OwnerID {
		t.Errorf("event %+v, want a push for acme/app (repo %d, owner %d)", ev, jobs[0].RepoID, jobs[0].OwnerID)
	}
	if len(e.snk.got()) != 0 {
		t.Errorf("Forgejo 15 sent job events: %+v", e.snk.got())
	}
	ds := sim.Deliveries()
	if len(ds) != 1 || ev.DeliveryID != ds[0].ID || ds[0].Status != forgejosim.DeliveryDelivered || ds[0].LastStatusCode != 202 {
		t.Errorf("deliveries %+v, want one delivered with id %s and answer 202", ds, ev.DeliveryID)
	}
}

func TestSimulatorPayload(t *testing.T) {
	e, sim := simEnv(t, forgejosim.WebhookFaults{}, true)
	jobs, err := sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker", "arm64"}})
	if err != nil {
		t.Fatalf("queue jobs: %v", err)
	}
	job := jobs[0]
	eventually.True(t, 10*time.Second, "the waiting event", func() (bool, string) {
		return len(e.snk.got()) == 1, "no event yet"
	})
	ev := e.snk.got()[0]
	if ev.Event != webhook.EventWorkflowJobWaiting || ev.Action != webhook.ActionNewJobAttempt {
		t.Errorf("event %s action %s, want workflow_job_waiting new_job_attempt", ev.Event, ev.Action)
	}
	if ev.Job.ID != job.ID || ev.Job.RunID != job.RunID || ev.Job.Attempt != job.Attempt || ev.Job.Handle != job.Handle ||
		ev.Job.Handle == "" || ev.Job.Status != "waiting" || ev.Job.RepoID != job.RepoID || ev.Job.OwnerID != job.OwnerID ||
		ev.Job.Name != job.Name {
		t.Errorf("job %+v, simulator has %+v", ev.Job, job)
	}
	if len(ev.Job.RunsOn) != 2 || ev.Job.RunsOn[0] != "docker" || ev.Job.RunsOn[1] != "arm64" {
		t.Errorf("runs_on %q, want [docker arm64]", ev.Job.RunsOn)
	}
	if ev.Repository != "acme/app" || ev.Owner != "acme" {
		t.Errorf("repository %q owner %q, want acme/app and acme", ev.Repository, ev.Owner)
	}
	var waiting []forgejosim.Delivery
	for _, d := range sim.Deliveries() {
		if d.Event == webhook.EventWorkflowJobWaiting {
			waiting = append(waiting, d)
		}
	}
	if len(waiting) != 1 || ev.DeliveryID != waiting[0].ID || waiting[0].Status != forgejosim.DeliveryDelivered || waiting[0].LastStatusCode != 202 {
		t.Errorf("waiting deliveries %+v, want one delivered with id %s and answer 202", waiting, ev.DeliveryID)
	}
}

func TestSimulatorDuplicateDelivery(t *testing.T) {
	e, sim := simEnv(t, forgejosim.WebhookFaults{DuplicateRate: 1}, false)
	if _, err := sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}}); err != nil {
		t.Fatalf("queue jobs: %v", err)
	}
	eventually.True(t, 10*time.Second, "the duplicate delivery", func() (bool, string) {
		ds := sim.Deliveries()
		return len(ds) == 1 && ds[0].Duplicates == 1, "not yet"
	})
	if n := len(e.snk.gotRepos()); n != 1 {
		t.Errorf("sink got %d events, want 1", n)
	}
	if e.obs.count(webhook.ResultDuplicate) != 1 {
		t.Errorf("duplicates counted %d, want 1", e.obs.count(webhook.ResultDuplicate))
	}
}

// A body Forgejo delivered, captured and sent again under a fresh delivery id (as an onlooker
// could, or as Redeliver in the hook's settings does), is a replay.
func TestSimulatorCapturedBodyReplayed(t *testing.T) {
	e, sim := simEnv(t, forgejosim.WebhookFaults{}, false)
	if _, err := sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}}); err != nil {
		t.Fatalf("queue jobs: %v", err)
	}
	eventually.True(t, 10*time.Second, "the push delivery", func() (bool, string) {
		return len(e.snk.gotRepos()) == 1, "no delivery yet"
	})
	ds := sim.Deliveries()
	if len(ds) != 1 {
		t.Fatalf("deliveries %+v, want one", ds)
	}
	body := []byte(ds[0].Payload)
	rec := e.send(t, delivery{body: body, headers: forgejoHeaders(secret, ds[0].ID+"-replayed", ds[0].Event, body)})
	if rec.Code != http.StatusOK || strings.TrimSpace(rec.Body.String()) != string(webhook.ResultDuplicate) {
		t.Errorf("replayed body: %d %q, want 200 duplicate", rec.Code, strings.TrimSpace(rec.Body.String()))
	}
	if n := len(e.snk.gotRepos()); n != 1 {
		t.Errorf("sink got %d events, want 1", n)
	}
}
