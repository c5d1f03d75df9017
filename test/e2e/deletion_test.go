package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/audit"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/controller/runner"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jsonlog"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/opmetrics"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/runnerpod"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/tokenkeep"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/eventually"
)

// markedRegistrations are the simulator's registrations that carry the pool's marker.
func (w *world) markedRegistrations(pool *v1alpha1.RunnerPool) []forgejosim.Runner {
	var out []forgejosim.Runner
	for _, reg := range w.sim.State().Runners {
		if strings.Contains(reg.Description, "pool-uid="+string(pool.UID)+";") {
			out = append(out, reg)
		}
	}
	return out
}

// Deleting a namespace deletes the pool's token Secret along with the pool, its Runners and
// their pods, in whatever order the namespace controller takes them; here the Secret goes first,
// as it may, and the operator restarts before the namespace is deleted, so it holds nothing of
// the token in memory. The namespace must still go (the finalizers must not wait for a token that
// is gone for good), and the registrations of its live runners, busy and waiting, must not be
// left in Forgejo: the operator deregisters with the copy of the token the pool keeps.
func TestNamespaceDeletionWithLiveRunnersCompletes(t *testing.T) {
	savedOptions, savedTask := testOptions, taskDuration
	// Long enough that the test would fail by its own timeout rather than pass by giving up.
	testOptions.DeregisterDeadline = 10 * time.Minute
	taskDuration = 10 * time.Minute // the runners that took a job are still busy when the namespace goes
	t.Cleanup(func() { testOptions, taskDuration = savedOptions, savedTask })
	w := startWorld(t)
	ctx := t.Context()

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "doomed"}}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "token", Namespace: ns.Name}, StringData: map[string]string{"token": "admin-token"}}
	pool := &v1alpha1.RunnerPool{
		ObjectMeta: metav1.ObjectMeta{Name: "dind", Namespace: ns.Name},
		Spec: v1alpha1.RunnerPoolSpec{
			Forgejo: v1alpha1.ForgejoConnection{URL: w.url, Scope: v1alpha1.ScopeGlobal, TokenSecretRef: v1alpha1.SecretKeySelector{Name: secret.Name}},
			Labels:  []string{"docker:host"},
			Scaling: v1alpha1.Scaling{MinIdle: 1, MaxRunners: 5},
		},
	}
	for _, obj := range []client.Object{ns, secret, pool} {
		if err := w.cluster.Client.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}, Count: 2}); err != nil {
		t.Fatal(err)
	}
	var live []v1alpha1.Runner
	eventually.True(t, 2*time.Minute, "live runners: busy with a job, or waiting", func() (bool, string) {
		var list v1alpha1.RunnerList
		if err := w.cluster.Client.List(ctx, &list, client.InNamespace(ns.Name)); err != nil {
			return false, err.Error()
		}
		live = list.Items
		busy, waiting := 0, 0
		var phases []string
		for _, rn := range live {
			phases = append(phases, string(rn.Status.Phase))
			switch rn.Status.Phase {
			case v1alpha1.RunnerBusy:
				busy++
			case v1alpha1.RunnerIdle:
				waiting++
			}
		}
		return busy >= 1 && waiting >= 1 && busy+waiting >= 3, fmt.Sprintf("runners %v", phases)
	})
	if err := w.cluster.Client.Get(ctx, client.ObjectKeyFromObject(pool), pool); err != nil {
		t.Fatal(err)
	}
	if regs := w.markedRegistrations(pool); len(regs) < len(live) {
		t.Fatalf("%d registrations of the pool for %d live runners", len(regs), len(live))
	}

	if err := w.cluster.Client.Delete(ctx, secret); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 30*time.Second, "the token Secret to be gone", func() (bool, string) {
		err := w.cluster.Client.Get(ctx, client.ObjectKeyFromObject(secret), &corev1.Secret{})
		return apierrors.IsNotFound(err), fmt.Sprintf("%v", err)
	})
	kept := &corev1.Secret{}
	if err := w.cluster.Client.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: tokenkeep.Name(pool)}, kept); err != nil {
		t.Fatalf("the pool keeps no copy of its token: %v", err)
	}
	if token, ok := tokenkeep.Token(kept, pool); !ok || token != "admin-token" {
		t.Fatalf("the pool's kept copy is not its token: %+v", kept.ObjectMeta)
	}
	w.stopOperator()
	w.startOperator(t)
	if err := w.cluster.Client.Delete(ctx, ns); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 3*time.Minute, "the namespace to be gone", func() (bool, string) {
		var got corev1.Namespace
		err := w.cluster.Client.Get(ctx, client.ObjectKeyFromObject(ns), &got)
		if apierrors.IsNotFound(err) {
			return true, ""
		}
		var runners v1alpha1.RunnerList
		_ = w.cluster.Client.List(ctx, &runners, client.InNamespace(ns.Name))
		return false, fmt.Sprintf("namespace %s, %d Runners left, conditions %+v", got.Status.Phase, len(runners.Items), got.Status.Conditions)
	})
	if regs := w.markedRegistrations(pool); len(regs) != 0 {
		t.Fatalf("registrations of the deleted pool left in Forgejo: %+v", regs)
	}
	if strings.Contains(w.logs.String(), "deregistration deadline passed") {
		t.Error("a runner was let go at its deadline: the namespace's deletion should deregister them all")
	}
}

// A Runner whose deregistration keeps failing (Forgejo answers 503 to every read and delete of
// a runner) has its pod deleted at once, and goes at its deadline with a Warning Event, an audit
// record and the metric. The registration it leaves behind is the pool's garbage collection's,
// once Forgejo answers again.
func TestDeregistrationThatKeepsFailingEndsAtTheDeadline(t *testing.T) {
	_, auditPath := journalOptions(t, jsonlog.FsyncAlways)
	const deadline = 6 * time.Second
	saved := testOptions
	testOptions.DeregisterDeadline = deadline
	t.Cleanup(func() { testOptions = saved })
	w := startWorld(t)
	ctx := t.Context()
	pool := w.createPool(t, "stuck", func(p *v1alpha1.RunnerPool) { p.Spec.Scaling.MinIdle = 1 })

	var rn v1alpha1.Runner
	eventually.True(t, time.Minute, "a warm runner waiting", func() (bool, string) {
		rs := w.runners(t, "stuck")
		if len(rs) != 1 || rs[0].Status.Phase != v1alpha1.RunnerIdle || rs[0].Status.Registration == nil {
			return false, fmt.Sprintf("%d runners", len(rs))
		}
		rn = rs[0]
		return true, ""
	})
	if err := w.cluster.Client.Get(ctx, client.ObjectKeyFromObject(pool), pool); err != nil {
		t.Fatal(err)
	}
	reg := rn.Status.Registration
	if err := w.sim.SetFaults(forgejosim.Faults{Endpoints: []forgejosim.Fault{
		{Endpoint: forgejosim.EndpointDeleteRunner, ErrorRate: 1, StatusCode: 503},
		{Endpoint: forgejosim.EndpointGetRunner, ErrorRate: 1, StatusCode: 503},
	}}); err != nil {
		t.Fatal(err)
	}
	if err := w.cluster.Client.Delete(ctx, &rn); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()

	// The pod goes first, while the Runner waits for its deregistration.
	podKey := client.ObjectKey{Namespace: rn.Namespace, Name: runnerpod.PodName(&rn)}
	eventually.True(t, deadline-time.Second, "the pod gone while the Runner waits", func() (bool, string) {
		var pod corev1.Pod
		err := w.cluster.Client.Get(ctx, podKey, &pod)
		return apierrors.IsNotFound(err), fmt.Sprintf("pod: %v", err)
	})
	if err := w.cluster.Client.Get(ctx, client.ObjectKeyFromObject(&rn), &v1alpha1.Runner{}); err != nil {
		t.Fatalf("the Runner went before its deadline with Forgejo failing: %v", err)
	}
	eventually.True(t, time.Minute, "the Runner to go at its deadline", func() (bool, string) {
		err := w.cluster.Client.Get(ctx, client.ObjectKeyFromObject(&rn), &v1alpha1.Runner{})
		return apierrors.IsNotFound(err), fmt.Sprintf("runner: %v", err)
	})
	// The deletion timestamp has whole seconds.
	if took := time.Since(deleted); took < deadline-time.Second {
		t.Errorf("the Runner went %s after its deletion, before its deadline of %s", took, deadline)
	}
	if _, ok := w.sim.RunnerByUUID(reg.UUID); !ok {
		t.Fatal("the registration is gone though Forgejo refused every delete")
	}

	eventually.True(t, 30*time.Second, "a Warning Event on the Runner", func() (bool, string) {
		for _, ev := range w.kubeEvents(t) {
			if ev.Reason == runner.ReasonDeregistrationAbandoned && ev.Regarding.Name == rn.Name {
				ok := ev.Type == corev1.EventTypeWarning && strings.Contains(ev.Note, "garbage collection") && strings.Contains(ev.Note, reg.UUID)
				return ok, fmt.Sprintf("%s: %s", ev.Type, ev.Note)
			}
		}
		return false, "no event"
	})
	metrics := scrape(t, metricsAddr)
	if got := metrics.value(opmetrics.DeregistrationsAbandoned, `pool="stuck"`, `reason="ForgejoError"`); got != 1 {
		t.Errorf("%s{pool=stuck,reason=ForgejoError} = %v, want 1", opmetrics.DeregistrationsAbandoned, got)
	}
	var abandoned []audit.Record
	for _, r := range readJSONLines[audit.Record](t, auditPath) {
		if r.Action == audit.ActionRegistrationAbandoned {
			abandoned = append(abandoned, r)
		}
	}
	if len(abandoned) != 1 || !strings.Contains(abandoned[0].Object, reg.UUID) || !strings.Contains(abandoned[0].Details["result"], "garbage collection") {
		t.Errorf("audit records of abandoned registrations %+v, want one for %s that names the garbage collection", abandoned, reg.UUID)
	}

	// Forgejo answers again: the registration left behind is the pool's garbage collection's.
	if err := w.sim.SetFaults(forgejosim.Faults{}); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, time.Minute, "the pool's garbage collection to delete the registration left behind", func() (bool, string) {
		_, ok := w.sim.RunnerByUUID(reg.UUID)
		return !ok, "still registered"
	})
}
