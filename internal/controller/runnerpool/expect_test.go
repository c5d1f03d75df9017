package runnerpool

import (
	"testing"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jobwatch"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/journal"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/cluster"
)

// scaleUpFixture is a pool on the real API server and a Reconciler to scale it up with.
func scaleUpFixture(t *testing.T, scaling v1alpha1.Scaling, now func() time.Time) (*Reconciler, *v1alpha1.RunnerPool, *cluster.Cluster) {
	t.Helper()
	c := cluster.StartForTest(t, cluster.Options{APIServerOnly: true})
	pool := &v1alpha1.RunnerPool{
		ObjectMeta: metav1.ObjectMeta{Name: "scaled", Namespace: "default"},
		Spec: v1alpha1.RunnerPoolSpec{
			Forgejo: v1alpha1.ForgejoConnection{URL: "http://forgejo.invalid", Scope: v1alpha1.ScopeGlobal,
				TokenSecretRef: v1alpha1.SecretKeySelector{Name: "t"}},
			Labels:  []string{"docker"},
			Scaling: scaling,
		},
	}
	if err := c.Client.Create(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	r := &Reconciler{
		Client:  c.Client,
		Watcher: jobwatch.New(time.Hour, func(types.NamespacedName) {}, logr.Discard()),
		Journal: journal.New(journal.Options{Log: logr.Discard()}),
		Now:     now,
	}
	return r, pool, c
}

func TestCreationsAreCountedUntilListedOrOld(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	var c creations
	pool := types.UID("pool")
	c.add(pool, "a", false, now)
	c.add(pool, "w", true, now)
	c.add(pool, "old", true, now.Add(-2*creationMemory))
	c.add("other-pool", "x", true, now)
	names, warm := c.pending(pool, nil, now)
	if len(names) != 2 || !names["a"] || !names["w"] || warm != 1 {
		t.Fatalf("pending %v (warm %d), want a and w, one warm", names, warm)
	}
	listed := []v1alpha1.Runner{{ObjectMeta: metav1.ObjectMeta{Name: "a"}}}
	if names, warm = c.pending(pool, listed, now); len(names) != 1 || !names["w"] || warm != 1 {
		t.Fatalf("pending %v (warm %d) once a is listed, want w", names, warm)
	}
	// Once listed, a runner is counted from the listing; gone from it later, it is not pending again.
	if names, _ = c.pending(pool, nil, now); names["a"] {
		t.Fatalf("a listed once is pending again")
	}
	c.forget(pool)
	if names, _ = c.pending(pool, nil, now); len(names) != 0 {
		t.Fatalf("forgotten pool still has %v", names)
	}
	deleting := metav1.NewTime(now)
	if n := terminating([]v1alpha1.Runner{{}, {ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &deleting}}}); n != 1 {
		t.Fatalf("terminating = %d, want 1", n)
	}
}

// Two reconciles on a cache that does not yet show the first one's Runners create no more than
// maxRunners between them.
func TestMaxRunnersHoldsOnAStaleCache(t *testing.T) {
	r, pool, c := scaleUpFixture(t, v1alpha1.Scaling{MaxRunners: 3, MinIdle: 2}, time.Now)
	ctx := t.Context()
	// First the warm runners (their names are made by the API server), then two jobs.
	first, _, err := r.scaleUp(ctx, pool, nil, nil, jobwatch.Demand{})
	if err != nil {
		t.Fatal(err)
	}
	demand := jobwatch.Demand{Assigned: []jobwatch.Job{{ID: 1, Handle: "ha", Status: "waiting"}, {ID: 2, Handle: "hb", Status: "waiting"}}}
	second, _, err := r.scaleUp(ctx, pool, nil, nil, demand) // the cache still shows none
	if err != nil {
		t.Fatal(err)
	}
	var list v1alpha1.RunnerList
	if err := c.Client.List(ctx, &list, client.InNamespace("default")); err != nil {
		t.Fatal(err)
	}
	if len(first) != 2 || len(second) != 1 || len(list.Items) != 3 {
		t.Fatalf("created %d warm then %d for jobs, %d in all; want 2, 1 and maxRunners 3", len(first), len(second), len(list.Items))
	}
}

// An idle warm runner will take the oldest waiting job: that job gets no runner of its own for a
// while, and then it does, should the warm runner not have taken it.
func TestIdleWarmRunnersServeTheOldestJobsFirst(t *testing.T) {
	now := time.Now()
	r, pool, _ := scaleUpFixture(t, v1alpha1.Scaling{MaxRunners: 10, MinIdle: 1}, func() time.Time { return now })
	ctx := t.Context()
	warm := v1alpha1.Runner{ObjectMeta: metav1.ObjectMeta{Name: "warm-idle-x"}, Status: v1alpha1.RunnerStatus{Phase: v1alpha1.RunnerIdle}}
	oldest := jobwatch.Job{ID: 1, Handle: "h-old", Status: "waiting", SeenAt: now.Add(-time.Second)}
	newer := jobwatch.Job{ID: 2, Handle: "h-new", Status: "waiting", SeenAt: now}
	created, retryIn, err := r.scaleUp(ctx, pool, []v1alpha1.Runner{warm}, []v1alpha1.Runner{warm}, jobwatch.Demand{Assigned: []jobwatch.Job{oldest, newer}})
	if err != nil {
		t.Fatal(err)
	}
	if len(created) != 1 || created[0].Spec.Job == nil || created[0].Spec.Job.Handle != "h-new" {
		t.Fatalf("created %d runners (%+v), want one, for the newer job", len(created), created)
	}
	if retryIn != warmServesWithin-time.Second {
		t.Errorf("the pool looks again in %s, want when the oldest job's wait for the warm runner ends", retryIn)
	}
	// The warm runner did not take it in time: now the job gets its own.
	now = now.Add(warmServesWithin)
	created, _, err = r.scaleUp(ctx, pool, []v1alpha1.Runner{warm}, []v1alpha1.Runner{warm}, jobwatch.Demand{Assigned: []jobwatch.Job{oldest}})
	if err != nil {
		t.Fatal(err)
	}
	if len(created) != 1 || created[0].Spec.Job.Handle != "h-old" {
		t.Fatalf("created %+v, want a runner for the job the warm runner left", created)
	}
}
