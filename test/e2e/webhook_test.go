package e2e

import (
	"fmt"
	"net"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/controller/runnerpool"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/operator"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/eventually"
)

const webhookSecret = "hook-secret"

// startWebhookWorld runs the operator with its webhook receiver on a free port and the given
// poll interval, and points a signed instance-wide hook of the simulator at it.
func startWebhookWorld(t *testing.T, poll time.Duration) *world {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	saved := testOptions
	testOptions.PollInterval = poll
	testOptions.WebhookAddr = addr
	t.Cleanup(func() { testOptions = saved })

	w := startWorld(t)
	if _, err := w.sim.AddHook(forgejosim.HookConfig{
		URL: "http://" + addr + operator.WebhookPath, Secret: webhookSecret, Scope: forgejosim.InstanceScope(),
	}); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *world) webhookPool(t *testing.T, name string) {
	t.Helper()
	secret := webhookSecretObject(name)
	if err := w.cluster.Client.Create(t.Context(), secret); err != nil {
		t.Fatal(err)
	}
	w.createPool(t, name, func(p *v1alpha1.RunnerPool) {
		p.Spec.Scaling.MaxRunners = 20
		p.Spec.Forgejo.WebhookSecretRef = &v1alpha1.SecretKeySelector{Name: secret.Name, Key: "secret"}
	})
}

func (w *world) allSucceeded(jobs []forgejosim.Job) func() (bool, string) {
	return func() (bool, string) {
		done := 0
		for _, j := range jobs {
			if got, _ := w.sim.Job(j.ID); got.Status == forgejosim.JobSuccess {
				done++
			}
		}
		return done == len(jobs), fmt.Sprintf("%d of %d jobs succeeded", done, len(jobs))
	}
}

// A newer server (Gitea 1.24+, a later Forgejo) also sends workflow_job events: with polls an
// hour apart, only they can bring the jobs to the operator, and they carry the jobs' results.
func TestJobEventsOfNewerServersServeJobs(t *testing.T) {
	saved := testSimOptions
	testSimOptions.JobEvents = true
	t.Cleanup(func() { testSimOptions = saved })
	w := startWebhookWorld(t, time.Hour)
	w.webhookPool(t, "hooked")
	// The pool's first poll happens when it is registered; wait for it before queueing, so
	// that the jobs can only come by webhook.
	eventually.True(t, time.Minute, "the pool's first poll", func() (bool, string) {
		return meta.IsStatusConditionTrue(w.pool(t, "hooked").Status.Conditions, runnerpool.ConditionForgejoReachable), "not polled"
	})
	jobs, err := w.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}, Count: 5})
	if err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 2*time.Minute, "every job to succeed through webhooks", w.allSucceeded(jobs))
	accepted := 0
	for _, d := range w.sim.State().Deliveries {
		if d.Event == "workflow_job_waiting" && d.LastStatusCode == 202 {
			accepted++
		}
	}
	if accepted < len(jobs) {
		t.Fatalf("%d waiting deliveries accepted, want %d", accepted, len(jobs))
	}
	// The completed events tell the job's result; a runner that ended before its event came
	// has none, but none may have a wrong one.
	eventually.True(t, time.Minute, "every runner recorded", func() (bool, string) {
		n := len(w.pool(t, "hooked").Status.RecentRunners)
		return n == len(jobs), fmt.Sprintf("%d records", n)
	})
	withResult := 0
	for _, rec := range w.pool(t, "hooked").Status.RecentRunners {
		switch rec.JobResult {
		case "success":
			withResult++
		case "":
		default:
			t.Errorf("runner %s recorded job result %q, want success", rec.Name, rec.JobResult)
		}
	}
	if withResult == 0 {
		t.Errorf("no runner recorded its job's result from the completed events")
	}
}

// With every webhook dropped, the poller still serves every job.
func TestPollerServesJobsWhenWebhooksAreLost(t *testing.T) {
	w := startWebhookWorld(t, 200*time.Millisecond)
	if err := w.sim.SetFaults(forgejosim.Faults{Webhooks: forgejosim.WebhookFaults{DropRate: 1}}); err != nil {
		t.Fatal(err)
	}
	w.webhookPool(t, "dropped")
	jobs, err := w.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}, Count: 5})
	if err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 2*time.Minute, "every job to succeed by polling", w.allSucceeded(jobs))
}

func webhookSecretObject(pool string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: pool + "-webhook", Namespace: "default"},
		StringData: map[string]string{"secret": webhookSecret},
	}
}

// registrationsMade counts the registrations ever made in the simulator, which numbers them in
// order: one more registration shows the count.
func (w *world) registrationsMade(t *testing.T) int64 {
	t.Helper()
	fj, err := forgejo.New(forgejo.Config{BaseURL: w.url, Token: "admin-token", Scope: forgejo.GlobalScope()})
	if err != nil {
		t.Fatal(err)
	}
	probe, err := fj.RegisterRunner(t.Context(), "probe", "counts registrations", true)
	if err != nil {
		t.Fatal(err)
	}
	return probe.ID - 1
}
