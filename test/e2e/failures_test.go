package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/controller/runner"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/controller/runnerpool"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/runnerpod"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/eventually"
)

// unschedulable keeps a pool's runner pods Pending: their runner never runs.
func unschedulable(p *v1alpha1.RunnerPool) {
	p.Spec.Runner.NodeSelector = map[string]string{"no-such-node": "true"}
}

func (w *world) runners(t *testing.T, pool string) []v1alpha1.Runner {
	t.Helper()
	var list v1alpha1.RunnerList
	if err := w.cluster.Client.List(t.Context(), &list, client.InNamespace("default"), client.MatchingLabels{v1alpha1.PoolLabel: pool}); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func (w *world) pool(t *testing.T, name string) *v1alpha1.RunnerPool {
	t.Helper()
	var pool v1alpha1.RunnerPool
	if err := w.cluster.Client.Get(t.Context(), client.ObjectKey{Namespace: "default", Name: name}, &pool); err != nil {
		t.Fatal(err)
	}
	return &pool
}

// reachable is a condition for eventually.True: the pool's ForgejoReachable has the status and
// reason.
func (w *world) reachable(t *testing.T, pool string, status metav1.ConditionStatus, reason string) func() (bool, string) {
	return func() (bool, string) {
		c := meta.FindStatusCondition(w.pool(t, pool).Status.Conditions, runnerpool.ConditionForgejoReachable)
		if c == nil {
			return false, "no condition"
		}
		return c.Status == status && c.Reason == reason, fmt.Sprintf("%s %s: %s", c.Status, c.Reason, c.Message)
	}
}

func (w *world) leftovers(t *testing.T, pool string) (registrations, runners, pods int) {
	t.Helper()
	var podList corev1.PodList
	_ = w.cluster.Client.List(t.Context(), &podList, client.InNamespace("default"), client.MatchingLabels{runnerpod.LabelPool: pool})
	return len(w.sim.State().Runners), len(w.runners(t, pool)), len(podList.Items)
}

func TestCancelledJobEndsItsWaitingRunner(t *testing.T) {
	w := startWorld(t)
	w.createPool(t, "cancel", unschedulable)
	jobs, err := w.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}})
	if err != nil {
		t.Fatal(err)
	}
	eventually.True(t, time.Minute, "a registered runner for the job", func() (bool, string) {
		regs, runners, pods := w.leftovers(t, "cancel")
		return regs == 1 && runners == 1 && pods == 1, fmt.Sprintf("%d registrations, %d runners, %d pods", regs, runners, pods)
	})
	if _, err := w.sim.CancelJob(jobs[0].ID); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, time.Minute, "the runner, its pod and its registration to go", func() (bool, string) {
		regs, runners, pods := w.leftovers(t, "cancel")
		return regs == 0 && runners == 0 && pods == 0, fmt.Sprintf("%d registrations, %d runners, %d pods", regs, runners, pods)
	})
	history := w.pool(t, "cancel").Status.RecentRunners
	if len(history) != 1 || history[0].Reason != "JobGone" || history[0].JobID != jobs[0].ID {
		t.Fatalf("history %+v, want one JobGone record for job %d", history, jobs[0].ID)
	}
}

func TestOrphanedRegistrationIsCollectedAndOthersAreNot(t *testing.T) {
	w := startWorld(t)
	w.createPool(t, "gc", nil)
	eventually.True(t, time.Minute, "the pool to be reconciled", func() (bool, string) {
		p := w.pool(t, "gc")
		return meta.IsStatusConditionTrue(p.Status.Conditions, runnerpool.ConditionReady), "not ready"
	})
	pool := w.pool(t, "gc") // with its UID
	fj, err := forgejo.New(forgejo.Config{BaseURL: w.url, Token: "admin-token", Scope: forgejo.GlobalScope()})
	if err != nil {
		t.Fatal(err)
	}
	// A crash between registering and recording leaves a registration marked as the pool's
	// but held by no Runner.
	lost := &v1alpha1.Runner{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "gc-lost"}}
	orphan, err := fj.RegisterRunner(t.Context(), runner.RegistrationName(lost), runner.Description(pool, lost), true)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := fj.RegisterRunner(t.Context(), "hand-made", "a runner somebody registered by hand", false)
	if err != nil {
		t.Fatal(err)
	}
	eventually.True(t, time.Minute, "the orphan to be deleted", func() (bool, string) {
		_, ok := w.sim.RunnerByUUID(orphan.UUID)
		return !ok, "orphan still registered"
	})
	if _, ok := w.sim.RunnerByUUID(foreign.UUID); !ok {
		t.Fatal("a registration without the pool's marker was deleted")
	}
}

func TestForgejoErrorsShowInConditionsAndThePoolRecovers(t *testing.T) {
	w := startWorld(t)
	w.createPool(t, "errs", nil)
	secret := &corev1.Secret{}
	if err := w.cluster.Client.Get(t.Context(), client.ObjectKey{Namespace: "default", Name: "errs-token"}, secret); err != nil {
		t.Fatal(err)
	}
	secret.Data = map[string][]byte{"token": []byte("revoked-token")}
	if err := w.cluster.Client.Update(t.Context(), secret); err != nil {
		t.Fatal(err)
	}
	reachable := func(status metav1.ConditionStatus, reason string) func() (bool, string) {
		return w.reachable(t, "errs", status, reason)
	}
	eventually.True(t, time.Minute, "ForgejoReachable=False Unauthorized", reachable(metav1.ConditionFalse, "Unauthorized"))
	if c := meta.FindStatusCondition(w.pool(t, "errs").Status.Conditions, runnerpool.ConditionReady); c == nil || c.Status != metav1.ConditionFalse {
		t.Fatalf("Ready is %+v while Forgejo refuses the token", c)
	}
	jobs, err := w.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}})
	if err != nil {
		t.Fatal(err)
	}

	secret.Data = map[string][]byte{"token": []byte("admin-token")}
	if err := w.cluster.Client.Update(t.Context(), secret); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, time.Minute, "the job to run once the token is fixed", func() (bool, string) {
		got, _ := w.sim.Job(jobs[0].ID)
		return got.Status == forgejosim.JobSuccess, string(got.Status)
	})

	// Forgejo failing: the condition says so, and the pool's warm runner is not deleted.
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		p := w.pool(t, "errs")
		p.Spec.Scaling.MinIdle = 1
		return w.cluster.Client.Update(t.Context(), p)
	}); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, time.Minute, "one warm runner and nothing else", func() (bool, string) {
		rs := w.runners(t, "errs")
		return len(rs) == 1 && rs[0].Spec.Job == nil && rs[0].Status.Phase == v1alpha1.RunnerIdle, fmt.Sprintf("%d runners", len(rs))
	})
	warm := w.runners(t, "errs")[0].Name
	if err := w.sim.SetFaults(forgejosim.Faults{Endpoints: []forgejosim.Fault{{Endpoint: forgejosim.EndpointListJobs, ErrorRate: 1, StatusCode: 503}}}); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, time.Minute, "ForgejoReachable=False ForgejoError", reachable(metav1.ConditionFalse, "ForgejoError"))
	if rs := w.runners(t, "errs"); len(rs) != 1 || rs[0].Name != warm {
		t.Fatalf("runners changed while Forgejo failed: %v", rs)
	}
	w.sim.ClearFaults()
	eventually.True(t, time.Minute, "ForgejoReachable=True again", reachable(metav1.ConditionTrue, "JobsListed"))
}

func TestMaxRunnersHoldsUnderABurst(t *testing.T) {
	w := startWorld(t)
	w.createPool(t, "capped", func(p *v1alpha1.RunnerPool) {
		unschedulable(p)
		p.Spec.Scaling.MaxRunners = 3
	})
	if _, err := w.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}, Count: 10}); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, time.Minute, "three runners", func() (bool, string) {
		n := len(w.runners(t, "capped"))
		return n == 3, fmt.Sprintf("%d runners", n)
	})
	// Several reconciles later (resync 2 s, polls every 200 ms) there are still three.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if n := len(w.runners(t, "capped")); n > 3 {
			t.Fatalf("%d runners, past maxRunners 3", n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if p := w.pool(t, "capped"); p.Status.PendingJobs != 10 || p.Status.Current != 3 || p.Status.Desired != 3 {
		t.Fatalf("status pending=%d current=%d desired=%d, want 10, 3, 3", p.Status.PendingJobs, p.Status.Current, p.Status.Desired)
	}
}

func TestWarmRunnersAndPoolDeletionLeaveNothing(t *testing.T) {
	w := startWorld(t)
	pool := w.createPool(t, "warm", func(p *v1alpha1.RunnerPool) {
		p.Spec.Scaling.MinIdle = 2
		p.Spec.History.Limit = ptr.To[int32](5)
	})
	eventually.True(t, time.Minute, "two warm registered runners", func() (bool, string) {
		regs, runners, pods := w.leftovers(t, "warm")
		return regs == 2 && runners == 2 && pods == 2, fmt.Sprintf("%d registrations, %d runners, %d pods", regs, runners, pods)
	})
	if err := w.cluster.Client.Delete(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, time.Minute, "pool, runners, pods and registrations gone", func() (bool, string) {
		regs, runners, pods := w.leftovers(t, "warm")
		err := w.cluster.Client.Get(t.Context(), client.ObjectKeyFromObject(pool), &v1alpha1.RunnerPool{})
		return regs == 0 && runners == 0 && pods == 0 && client.IgnoreNotFound(err) == nil && err != nil,
			fmt.Sprintf("%d registrations, %d runners, %d pods, pool: %v", regs, runners, pods, err)
	})
}

func TestOperatorRestartMidBurstDuplicatesAndLeaksNothing(t *testing.T) {
	w := startWorld(t)
	w.createPool(t, "restart", func(p *v1alpha1.RunnerPool) { p.Spec.Scaling.MaxRunners = 30 })
	const n = 20
	queued, err := w.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}, Count: n})
	if err != nil {
		t.Fatal(err)
	}
	eventually.True(t, time.Minute, "the burst under way", func() (bool, string) {
		k := len(w.runners(t, "restart"))
		return k >= 5, fmt.Sprintf("%d runners", k)
	})
	w.stopOperator()
	w.startOperator(t)

	eventually.True(t, 3*time.Minute, "every job to succeed", w.allSucceeded(queued))
	eventually.True(t, time.Minute, "nothing left", func() (bool, string) {
		regs, runners, pods := w.leftovers(t, "restart")
		return regs == 0 && runners == 0 && pods == 0, fmt.Sprintf("%d registrations, %d runners, %d pods", regs, runners, pods)
	})
	perJob := map[int64]int{}
	for _, task := range w.sim.State().Tasks {
		perJob[task.JobID]++
	}
	for _, j := range queued {
		if perJob[j.ID] != 1 {
			t.Errorf("job %d ran %d times", j.ID, perJob[j.ID])
		}
	}
}

func TestFailedRunnerIsReplacedWithBackoff(t *testing.T) {
	w := startWorld(t)
	w.createPool(t, "retry", nil)
	// Forgejo refuses the runner's Declare: every runner for the job fails (exit 1). A refused
	// fetch would not do: forgejo-runner one-job --wait retries every fetch error.
	if err := w.sim.SetFaults(forgejosim.Faults{Endpoints: []forgejosim.Fault{{Endpoint: forgejosim.EndpointDeclare, ErrorRate: 1, StatusCode: 500}}}); err != nil {
		t.Fatal(err)
	}
	jobs, err := w.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}})
	if err != nil {
		t.Fatal(err)
	}
	failures := func() []v1alpha1.RunnerRecord {
		var out []v1alpha1.RunnerRecord
		for _, rec := range w.pool(t, "retry").Status.RecentRunners {
			if rec.Handle == jobs[0].Handle && rec.Outcome == v1alpha1.OutcomeFailed {
				out = append(out, rec)
			}
		}
		return out
	}
	eventually.True(t, time.Minute, "two failed runners for the job", func() (bool, string) {
		n := len(failures())
		return n >= 2, fmt.Sprintf("%d failures", n)
	})
	// Newest first: the second runner was created no sooner than the backoff after the first
	// failure ended.
	f := failures()
	second, first := f[len(f)-2], f[len(f)-1]
	if gap := second.CreatedAt.Sub(first.FinishedAt.Time); gap < 4*time.Second {
		t.Errorf("the retry came %s after the failure, want the 5 s backoff (to the second)", gap)
	}
	w.sim.ClearFaults()
	eventually.True(t, 2*time.Minute, "the job to run once Forgejo serves it", func() (bool, string) {
		got, _ := w.sim.Job(jobs[0].ID)
		return got.Status == forgejosim.JobSuccess, string(got.Status)
	})
}

func TestSpecChangesApplyToNewRunnersOnly(t *testing.T) {
	w := startWorld(t)
	w.createPool(t, "image", unschedulable)
	if _, err := w.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}}); err != nil {
		t.Fatal(err)
	}
	podImages := func() map[string]string {
		var pods corev1.PodList
		_ = w.cluster.Client.List(t.Context(), &pods, client.InNamespace("default"), client.MatchingLabels{runnerpod.LabelPool: "image"})
		images := map[string]string{}
		for _, p := range pods.Items {
			for _, c := range p.Spec.Containers {
				if c.Name == runnerpod.RunnerContainerName {
					images[p.Name] = c.Image
				}
			}
		}
		return images
	}
	eventually.True(t, time.Minute, "the first runner pod", func() (bool, string) {
		return len(podImages()) == 1, fmt.Sprintf("%v", podImages())
	})
	const newImage = "data.forgejo.org/forgejo/runner:12.13.0"
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		p := w.pool(t, "image")
		p.Spec.Runner.Image = newImage
		return w.cluster.Client.Update(t.Context(), p)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}}); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, time.Minute, "a second runner pod with the new image beside the old one", func() (bool, string) {
		images := podImages()
		old, updated := 0, 0
		for _, img := range images {
			switch img {
			case v1alpha1.DefaultRunnerImage:
				old++
			case newImage:
				updated++
			}
		}
		return old == 1 && updated == 1, fmt.Sprintf("%v", images)
	})
}

func TestScopeAndVersionProblemsSayWhatToFix(t *testing.T) {
	w := startWorld(t)
	if err := w.sim.EnsureRepository("acme/app"); err != nil {
		t.Fatal(err)
	}
	otherRepoToken, err := w.sim.CreateToken(forgejosim.RepositoryScope("acme/other"))
	if err != nil {
		t.Fatal(err)
	}
	w.createPool(t, "scoped", func(p *v1alpha1.RunnerPool) {
		p.Spec.Forgejo.Scope = v1alpha1.ScopeRepository
		p.Spec.Forgejo.Repository = "acme/app"
	})
	secret := &corev1.Secret{}
	if err := w.cluster.Client.Get(t.Context(), client.ObjectKey{Namespace: "default", Name: "scoped-token"}, secret); err != nil {
		t.Fatal(err)
	}
	secret.Data = map[string][]byte{"token": []byte(otherRepoToken)}
	if err := w.cluster.Client.Update(t.Context(), secret); err != nil {
		t.Fatal(err)
	}
	reason := func(want string) func() (bool, string) { return w.reachable(t, "scoped", metav1.ConditionFalse, want) }
	// A token for another repository sees nothing of acme/app: Forgejo 15 answers 404.
	eventually.True(t, time.Minute, "ScopeNotVisible", reason("ScopeNotVisible"))
	c := meta.FindStatusCondition(w.pool(t, "scoped").Status.Conditions, runnerpool.ConditionForgejoReachable)
	if !strings.Contains(c.Message, "scoped-token") || !strings.Contains(c.Message, "repository") || strings.Contains(c.Message, otherRepoToken) {
		t.Fatalf("message %q should name the Secret and the scope, and never the token", c.Message)
	}

	// An older Forgejo has no runner API at all: the message says to upgrade.
	w.sim.SetVersion("11.0.0")
	eventually.True(t, time.Minute, "ForgejoTooOld", reason("ForgejoTooOld"))
}

// Between polls the operator's list of waiting jobs is old; a job a runner has already run must
// not get a second runner from it.
func TestFinishedJobGetsNoSecondRunnerFromAnOldPoll(t *testing.T) {
	saved := testOptions
	testOptions.PollInterval = 6 * time.Second
	t.Cleanup(func() { testOptions = saved })
	w := startWorld(t)
	jobs, err := w.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}, Count: 3})
	if err != nil {
		t.Fatal(err)
	}
	// No history: the pool cannot look up in its records which jobs its runners ran.
	w.createPool(t, "stale", func(p *v1alpha1.RunnerPool) { p.Spec.History.Limit = ptr.To[int32](0) })
	eventually.True(t, time.Minute, "the jobs to succeed", w.allSucceeded(jobs))
	// Past the next poll and the grace period, anything extra would have been made and ended.
	eventually.True(t, time.Minute, "nothing left", func() (bool, string) {
		regs, runners, pods := w.leftovers(t, "stale")
		return regs == 0 && runners == 0 && pods == 0, fmt.Sprintf("%d registrations, %d runners, %d pods", regs, runners, pods)
	})
	time.Sleep(testOptions.PollInterval) // one more poll: a duplicate would be created from the old one before it
	if made := w.registrationsMade(t); made != int64(len(jobs)) {
		t.Fatalf("%d registrations were made for %d jobs, want one each", made, len(jobs))
	}
}

func TestWarmRunnersAboveMinIdleAreScaledDown(t *testing.T) {
	w := startWorld(t)
	w.createPool(t, "shrink", func(p *v1alpha1.RunnerPool) {
		p.Spec.Scaling.MinIdle = 3
		p.Spec.Scaling.ScaleDownDelay = &metav1.Duration{Duration: time.Second}
	})
	eventually.True(t, time.Minute, "three warm runners", func() (bool, string) {
		regs, runners, _ := w.leftovers(t, "shrink")
		return regs == 3 && runners == 3, fmt.Sprintf("%d registrations, %d runners", regs, runners)
	})
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		p := w.pool(t, "shrink")
		p.Spec.Scaling.MinIdle = 1
		return w.cluster.Client.Update(t.Context(), p)
	}); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, time.Minute, "one warm runner left, two deregistered", func() (bool, string) {
		regs, runners, pods := w.leftovers(t, "shrink")
		return regs == 1 && runners == 1 && pods == 1, fmt.Sprintf("%d registrations, %d runners, %d pods", regs, runners, pods)
	})
	scaled := 0
	for _, rec := range w.pool(t, "shrink").Status.RecentRunners {
		if rec.Reason == "ScaledDown" {
			scaled++
		}
	}
	if scaled != 2 {
		t.Fatalf("%d ScaledDown records, want 2", scaled)
	}
}

func TestRunnerIsBusyWhileItsJobRuns(t *testing.T) {
	saved := taskDuration
	taskDuration = 20 * time.Second
	t.Cleanup(func() { taskDuration = saved })
	w := startWorld(t)
	w.createPool(t, "busy", nil)
	jobs, err := w.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}})
	if err != nil {
		t.Fatal(err)
	}
	eventually.True(t, time.Minute, "the runner Busy with its job, and the pool counting it", func() (bool, string) {
		rs := w.runners(t, "busy")
		if len(rs) != 1 {
			return false, fmt.Sprintf("%d runners", len(rs))
		}
		picked := meta.IsStatusConditionTrue(rs[0].Status.Conditions, "JobPicked")
		busy := w.pool(t, "busy").Status.Busy
		return rs[0].Status.Phase == v1alpha1.RunnerBusy && picked && busy == 1,
			fmt.Sprintf("phase %s, picked %v, pool busy %d", rs[0].Status.Phase, picked, busy)
	})
	eventually.True(t, time.Minute, "the job to succeed", w.allSucceeded(jobs))
}

// A pod admission refuses (here PodSecurity "restricted" against the privileged Docker sidecar)
// ends its runner with the outcome Error and the API server's reason, rather than retrying the
// same pod for ever; once the pool no longer asks for what is refused, the job runs.
func TestRejectedPodEndsItsRunnerWithTheReason(t *testing.T) {
	w := startWorld(t)
	ctx := t.Context()
	// The admin allows Privileged DinD here, and yet Pod Security refuses its pods.
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "locked", Labels: map[string]string{
		"pod-security.kubernetes.io/enforce": "restricted", v1alpha1.AllowPrivilegedDinDLabel: "true",
	}}}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "token", Namespace: ns.Name}, StringData: map[string]string{"token": "admin-token"}}
	pool := &v1alpha1.RunnerPool{
		ObjectMeta: metav1.ObjectMeta{Name: "dind", Namespace: ns.Name},
		Spec: v1alpha1.RunnerPoolSpec{
			Forgejo: v1alpha1.ForgejoConnection{URL: w.url, Scope: v1alpha1.ScopeGlobal, TokenSecretRef: v1alpha1.SecretKeySelector{Name: secret.Name}},
			Labels:  []string{"docker:docker://node:22-bookworm"},
			DinD:    v1alpha1.DinD{Mode: v1alpha1.DinDPrivileged},
		},
	}
	for _, obj := range []client.Object{ns, secret, pool} {
		if err := w.cluster.Client.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	jobs, err := w.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}})
	if err != nil {
		t.Fatal(err)
	}
	var rejected v1alpha1.RunnerRecord
	eventually.True(t, time.Minute, "the runner ended with the rejection", func() (bool, string) {
		var got v1alpha1.RunnerPool
		if err := w.cluster.Client.Get(ctx, client.ObjectKeyFromObject(pool), &got); err != nil {
			return false, err.Error()
		}
		for _, rec := range got.Status.RecentRunners {
			if rec.Handle == jobs[0].Handle && rec.Outcome == v1alpha1.OutcomeError {
				rejected = rec
				return true, ""
			}
		}
		return false, fmt.Sprintf("history %+v", got.Status.RecentRunners)
	})
	if rejected.Reason != "PodRejected" || !strings.Contains(rejected.Message, "PodSecurity") || !strings.Contains(rejected.Message, "privileged") {
		t.Errorf("record of the rejected runner %+v: want reason PodRejected and the API server's PodSecurity message", rejected)
	}

	// The registration made for it is gone, and without the sidecar the job runs.
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := w.cluster.Client.Get(ctx, client.ObjectKeyFromObject(pool), pool); err != nil {
			return err
		}
		// Without a daemon, the job's label runs on the runner itself (the host scheme).
		pool.Spec.DinD.Mode = v1alpha1.DinDNone
		pool.Spec.Labels = []string{"docker:host"}
		return w.cluster.Client.Update(ctx, pool)
	}); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 2*time.Minute, "the job to run in a pod the namespace admits", func() (bool, string) {
		got, _ := w.sim.Job(jobs[0].ID)
		return got.Status == forgejosim.JobSuccess, string(got.Status)
	})
	eventually.True(t, time.Minute, "no registration left", func() (bool, string) {
		n := len(w.sim.State().Runners)
		return n == 0, fmt.Sprintf("%d registrations", n)
	})
}

// A token that may list jobs (read:admin) but not register runners (write:admin) must not leave
// the pool looking healthy while no runner starts: ForgejoReachable names the missing scope, and
// the pool recovers once the token is replaced.
func TestTokenThatCannotRegisterSaysWhatToFix(t *testing.T) {
	w := startWorld(t)
	readOnly, err := w.sim.CreateToken(forgejosim.Scope{Kind: forgejosim.ScopeInstance, TokenScopes: []string{"read:admin"}})
	if err != nil {
		t.Fatal(err)
	}
	w.createPool(t, "readonly", nil)
	secret := &corev1.Secret{}
	if err := w.cluster.Client.Get(t.Context(), client.ObjectKey{Namespace: "default", Name: "readonly-token"}, secret); err != nil {
		t.Fatal(err)
	}
	secret.Data = map[string][]byte{"token": []byte(readOnly)}
	if err := w.cluster.Client.Update(t.Context(), secret); err != nil {
		t.Fatal(err)
	}
	jobs, err := w.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}})
	if err != nil {
		t.Fatal(err)
	}
	condition := func(status metav1.ConditionStatus, reason string) func() (bool, string) {
		return w.reachable(t, "readonly", status, reason)
	}
	eventually.True(t, time.Minute, "ForgejoReachable=False TokenScopeMissing", condition(metav1.ConditionFalse, "TokenScopeMissing"))
	c := meta.FindStatusCondition(w.pool(t, "readonly").Status.Conditions, runnerpool.ConditionForgejoReachable)
	if !strings.Contains(c.Message, "registering runners") || !strings.Contains(c.Message, "write:admin") ||
		!strings.Contains(c.Message, "readonly-token") || strings.Contains(c.Message, readOnly) {
		t.Errorf("message %q should say registering failed, name write:admin and the Secret, and never the token", c.Message)
	}
	if ready := meta.FindStatusCondition(w.pool(t, "readonly").Status.Conditions, runnerpool.ConditionReady); ready == nil || ready.Status != metav1.ConditionFalse {
		t.Errorf("pool Ready %+v while no runner can be registered", ready)
	}

	secret.Data = map[string][]byte{"token": []byte("admin-token")}
	if err := w.cluster.Client.Update(t.Context(), secret); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 2*time.Minute, "the job to succeed with the new token", w.allSucceeded(jobs))
	eventually.True(t, time.Minute, "ForgejoReachable=True again", condition(metav1.ConditionTrue, "JobsListed"))
}
