package jobwatch_test

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jobwatch"
)

// A delivery signed with a pool's own secret asks only that pool's connection, and only where
// it covers the repository.
func TestTriggerPoolsAsksOnlyTheNamedPoolsConnections(t *testing.T) {
	f := newTriggerFixture(t, jobwatch.TriggerOptions{Window: 10 * time.Millisecond, FollowUps: []time.Duration{}})
	for _, repo := range []string{"acme/app", "other/app"} {
		if err := f.sim.EnsureRepository(repo); err != nil {
			t.Fatal(err)
		}
	}
	_, global := f.register(t, "global", v1alpha1.ScopeGlobal, "global", "admin", forgejo.GlobalScope())
	_, acme := f.register(t, "acme", v1alpha1.ScopeOrganization, "organization acme",
		f.token(t, forgejosim.OrganizationScope("acme")), forgejo.OrganizationScope("acme"))
	_, other := f.register(t, "other", v1alpha1.ScopeOrganization, "organization other",
		f.token(t, forgejosim.OrganizationScope("other")), forgejo.OrganizationScope("other"))
	app := jobwatch.RepositoryRef{FullName: "acme/app"}
	cases := []struct {
		name  string
		pools []types.NamespacedName
		want  int
	}{
		{"a pool that does not cover the repository", []types.NamespacedName{other}, 0},
		{"one covering pool among others", []types.NamespacedName{other, acme}, 1},
		{"the same pool twice", []types.NamespacedName{acme, acme}, 1},
		{"two covering pools", []types.NamespacedName{global, acme}, 2},
		{"an unknown pool", []types.NamespacedName{{Namespace: "ci", Name: "gone"}}, 0},
		{"no pool", nil, 0},
	}
	for _, c := range cases {
		if n := f.watcher.TriggerPools(c.pools, app, "test"); n != c.want {
			t.Errorf("%s: asked %d connections, want %d", c.name, n, c.want)
		}
	}
}

// A repository's name from a delivery signed with a pool's secret labels the jobs of that pool's
// connection only: another connection that lists the same job (by repo_id) learns no name from
// it, so a pool owner cannot name another tenant's repositories in their records.
func TestTriggerPoolsNamesTheRepositoryForItsConnectionsOnly(t *testing.T) {
	f := newTriggerFixture(t, jobwatch.TriggerOptions{Window: 10 * time.Millisecond, FollowUps: []time.Duration{}})
	jobs, err := f.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}, Count: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, global := f.register(t, "global", v1alpha1.ScopeGlobal, "global", "admin", forgejo.GlobalScope())
	_, acme := f.register(t, "acme", v1alpha1.ScopeOrganization, "organization acme",
		f.token(t, forgejosim.OrganizationScope("acme")), forgejo.OrganizationScope("acme"))
	ref := jobwatch.RepositoryRef{ID: jobs[0].RepoID, FullName: "acme/app"}
	if n := f.watcher.TriggerPools([]types.NamespacedName{acme}, ref, "push signed by acme's secret"); n != 1 {
		t.Fatalf("asked %d connections, want 1", n)
	}
	f.watcher.Poll(global)
	named := func(pool types.NamespacedName) (string, bool) {
		j, ok := f.watcher.Demand(pool).Known[jobs[0].Handle]
		return j.Repository, ok
	}
	// The first polls, at registration, may list the job before the delivery; the triggered
	// poll names it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		acmeName, _ := named(acme)
		globalName, globalSaw := named(global)
		if acmeName == "acme/app" && globalSaw {
			if globalName != "" {
				t.Errorf("a connection the delivery did not ask learnt the name %q from it", globalName)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("acme's connection names the job's repository %q after the triggered poll, want acme/app (global listed it: %v)", acmeName, globalSaw)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A job event under a pool's secret moves on only a job that pool's connection listed: it never
// adds one (a waiting event, or any event of a job the connection does not list), and the
// result it brings is kept for that connection alone.
func TestOfferPoolsMovesOnlyListedJobs(t *testing.T) {
	f := newTriggerFixture(t, jobwatch.TriggerOptions{Window: 10 * time.Millisecond, FollowUps: []time.Duration{}})
	jobs, err := f.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}, Count: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.sim.EnsureRepository("other/app"); err != nil {
		t.Fatal(err)
	}
	_, acme := f.register(t, "acme", v1alpha1.ScopeOrganization, "organization acme",
		f.token(t, forgejosim.OrganizationScope("acme")), forgejo.OrganizationScope("acme"))
	_, other := f.register(t, "other", v1alpha1.ScopeOrganization, "organization other",
		f.token(t, forgejosim.OrganizationScope("other")), forgejo.OrganizationScope("other"))
	handle := jobs[0].Handle
	deadline := time.Now().Add(30 * time.Second)
	for f.watcher.Demand(acme).PolledAt.IsZero() || f.watcher.Demand(other).PolledAt.IsZero() {
		if time.Now().After(deadline) {
			t.Fatal("the first polls did not come")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, listed := f.watcher.Demand(acme).Known[handle]; !listed {
		t.Fatal("acme's connection does not list its job")
	}

	forged := jobwatch.Job{ID: 999, Handle: "forged", Status: "waiting", RunsOn: []string{"docker"}, RepoID: jobs[0].RepoID, OwnerID: jobs[0].OwnerID}
	if f.watcher.OfferPools([]types.NamespacedName{other, acme}, forged) {
		t.Error("a waiting job from an event was added")
	}
	forged.Status = "running"
	if f.watcher.OfferPools([]types.NamespacedName{other, acme}, forged) {
		t.Error("a running job no connection lists was added")
	}
	if f.watcher.OfferPools([]types.NamespacedName{other}, jobwatch.Job{Handle: handle, Status: "success"}) {
		t.Error("a connection that does not list the job took its end")
	}
	if got, ok := f.watcher.Result(acme, handle); ok {
		t.Errorf("acme's job has the result %q another pool's event brought", got)
	}
	if !f.watcher.OfferPools([]types.NamespacedName{acme}, jobwatch.Job{Handle: handle, Status: "running"}) {
		t.Error("acme's listed job did not move on to running")
	}
	if !f.watcher.OfferPools([]types.NamespacedName{acme}, jobwatch.Job{Handle: handle, Status: "failure"}) {
		t.Error("acme's listed job did not end")
	}
	if got, ok := f.watcher.Result(acme, handle); !ok || got != "failure" {
		t.Errorf("acme's job result %q, %v; want failure", got, ok)
	}
	if _, known := f.watcher.Demand(acme).Known["forged"]; known {
		t.Error("the forged job is known")
	}
}
