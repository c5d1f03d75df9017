package jobwatch_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jobwatch"
)

// repositoryWithAJob makes acme/app with a waiting docker job, and a token of that repository.
func (f *fixture) repositoryWithAJob(t *testing.T) (repoToken, handle string) {
	t.Helper()
	if err := f.sim.EnsureRepository("acme/app"); err != nil {
		t.Fatal(err)
	}
	repoToken, err := f.sim.CreateToken(forgejosim.RepositoryScope("acme/app"))
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := f.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}})
	if err != nil {
		t.Fatal(err)
	}
	return repoToken, jobs[0].Handle
}

func assignedHandles(d jobwatch.Demand) map[string]bool {
	out := map[string]bool{}
	for _, j := range d.Assigned {
		out[j.Handle] = true
	}
	return out
}

// failingLister fails every list once broken is set, as a revoked token does.
type failingLister struct {
	jobwatch.JobLister
	broken atomic.Bool
}

func (l *failingLister) ListJobs(ctx context.Context, labels ...string) ([]forgejo.Job, error) {
	if l.broken.Load() {
		return nil, errors.New("401 Unauthorized: token revoked")
	}
	return l.JobLister.ListJobs(ctx, labels...)
}

// A repository pool whose polls start failing (its token was revoked) keeps the jobs it listed
// last; it must not keep taking them from the global pool that can serve them (issue #11: "a
// failing pool captures jobs").
func TestAFailingPoolDoesNotCaptureJobs(t *testing.T) {
	f := newFixture(t)
	repoToken, handle := f.repositoryWithAJob(t)
	global := pool("global", v1alpha1.ScopeGlobal, "docker")
	repo := pool("repo", v1alpha1.ScopeRepository, "docker")
	revocable := &failingLister{JobLister: f.client(t, repoToken, forgejo.RepositoryScope("acme", "app"))}
	f.watcher.Register(repo, jobwatch.NewConnection(f.url, "repository acme/app", repoToken), revocable)
	f.watcher.Register(global, jobwatch.NewConnection(f.url, "global", "admin"), f.client(t, "admin", forgejo.GlobalScope()))
	waitFor(t, "the narrower pool's job", func() bool { return assignedHandles(f.watcher.Demand(repo.Key))[handle] })

	revocable.broken.Store(true)
	f.watcher.Poll(repo.Key)
	waitFor(t, "the repository pool's failing poll", func() bool { return f.watcher.Demand(repo.Key).Err != nil })
	if got := assignedHandles(f.watcher.Demand(global.Key)); !got[handle] {
		t.Errorf("global pool got %v, want the job its failing rival cannot serve", got)
	}
	if got := assignedHandles(f.watcher.Demand(repo.Key)); len(got) != 0 {
		t.Errorf("the failing repository pool still has %v", got)
	}
}

// Once a pool claims a job (to make its Runner), the job stays with it, although a narrower pool
// that lists it later would win the rule (issue #11: "two runners for one job").
func TestAClaimedJobStaysWithItsPool(t *testing.T) {
	f := newFixture(t)
	repoToken, handle := f.repositoryWithAJob(t)
	global := pool("global", v1alpha1.ScopeGlobal, "docker")
	repo := pool("repo", v1alpha1.ScopeRepository, "docker")
	f.watcher.Register(global, jobwatch.NewConnection(f.url, "global", "admin"), f.client(t, "admin", forgejo.GlobalScope()))
	waitFor(t, "the global pool's job", func() bool { return assignedHandles(f.watcher.Demand(global.Key))[handle] })
	if !f.watcher.Claim(handle, global.Key) {
		t.Fatal("the global pool could not claim its job")
	}
	f.watcher.Register(repo, jobwatch.NewConnection(f.url, "repository acme/app", repoToken), f.client(t, repoToken, forgejo.RepositoryScope("acme", "app")))
	waitFor(t, "the repository pool's first poll", func() bool { return !f.watcher.Demand(repo.Key).PolledAt.IsZero() })
	if got := assignedHandles(f.watcher.Demand(repo.Key)); got[handle] {
		t.Errorf("the repository pool was given a job the global pool holds")
	}
	if !assignedHandles(f.watcher.Demand(global.Key))[handle] {
		t.Errorf("the global pool lost its claimed job")
	}
	if f.watcher.Claim(handle, repo.Key) {
		t.Errorf("a second pool claimed a held job")
	}
	// The pool's Runners list still lacks the new Runner (a stale cache): the claim stands.
	f.watcher.Hold(global.Key, nil)
	if f.watcher.Claim(handle, repo.Key) {
		t.Errorf("a fresh claim was dropped by a stale list of Runners")
	}
	// Without a Runner and without a claim, the rule decides again: the narrower pool.
	f.watcher.Unclaim(handle, global.Key)
	if !assignedHandles(f.watcher.Demand(repo.Key))[handle] {
		t.Errorf("an unclaimed job did not go to the narrowest pool")
	}
}

// After a restart the watcher knows who holds which job from the Runners before it dispatches.
func TestHeldJobsAreReadBeforeTheFirstDispatch(t *testing.T) {
	sim, url := forgejosim.NewTestServer(t, forgejosim.Options{AdminToken: "admin", Seed: 1})
	if err := sim.EnsureRepository("acme/app"); err != nil {
		t.Fatal(err)
	}
	repoToken, err := sim.CreateToken(forgejosim.RepositoryScope("acme/app"))
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}})
	if err != nil {
		t.Fatal(err)
	}
	global := pool("global", v1alpha1.ScopeGlobal, "docker")
	repo := pool("repo", v1alpha1.ScopeRepository, "docker")
	w := jobwatch.New(time.Hour, func(types.NamespacedName) {}, testr.New(t))
	w.SetHeldSource(func(context.Context) (map[string]types.NamespacedName, error) {
		return map[string]types.NamespacedName{jobs[0].Handle: global.Key}, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = w.Start(ctx) }()
	client := func(token string, scope forgejo.Scope) *forgejo.Client {
		c, err := forgejo.New(forgejo.Config{BaseURL: url, Token: token, Scope: scope})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	w.Register(repo, jobwatch.NewConnection(url, "repository acme/app", repoToken), client(repoToken, forgejo.RepositoryScope("acme", "app")))
	w.Register(global, jobwatch.NewConnection(url, "global", "admin"), client("admin", forgejo.GlobalScope()))
	waitFor(t, "both polled", func() bool {
		return !w.Demand(repo.Key).PolledAt.IsZero() && !w.Demand(global.Key).PolledAt.IsZero()
	})
	if got := assignedHandles(w.Demand(repo.Key)); len(got) != 0 {
		t.Errorf("the repository pool was given %v, held by the global pool's Runner", got)
	}
	if !assignedHandles(w.Demand(global.Key))[jobs[0].Handle] {
		t.Errorf("the global pool does not have the job its Runner holds")
	}
}

// A change in one connection's jobs tells the pools whose share of the waiting jobs moved, and
// the connection's own pools; not every pool on the instance.
func TestOnlyPoolsWhoseShareMovedAreTold(t *testing.T) {
	f := newFixture(t)
	if err := f.sim.EnsureOrganization("other"); err != nil {
		t.Fatal(err)
	}
	otherToken, err := f.sim.CreateToken(forgejosim.OrganizationScope("other"))
	if err != nil {
		t.Fatal(err)
	}
	global := pool("global", v1alpha1.ScopeGlobal, "docker")
	other := pool("other", v1alpha1.ScopeOrganization, "docker")
	f.watcher.Register(global, jobwatch.NewConnection(f.url, "global", "admin"), f.client(t, "admin", forgejo.GlobalScope()))
	f.watcher.Register(other, jobwatch.NewConnection(f.url, "organization other", otherToken), f.client(t, otherToken, forgejo.OrganizationScope("other")))
	waitFor(t, "both polled", func() bool {
		return !f.watcher.Demand(global.Key).PolledAt.IsZero() && !f.watcher.Demand(other.Key).PolledAt.IsZero()
	})
	before := f.timesNotified(other.Key)
	jobs, err := f.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}})
	if err != nil {
		t.Fatal(err)
	}
	f.watcher.Trigger(f.url, jobwatch.RepositoryRef{FullName: "acme/app"}, "push")
	waitFor(t, "the global pool's job", func() bool { return assignedHandles(f.watcher.Demand(global.Key))[jobs[0].Handle] })
	waitFor(t, "the global pool told", func() bool { return f.timesNotified(global.Key) >= 2 })
	if got := f.timesNotified(other.Key); got != before {
		t.Errorf("the other organization's pool was told %d more times about a job that is not its", got-before)
	}
	// A job of its own organization moves its share: it is told.
	if _, err := f.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "other/app", RunsOn: []string{"docker"}}); err != nil {
		t.Fatal(err)
	}
	f.watcher.Trigger(f.url, jobwatch.RepositoryRef{FullName: "other/app"}, "push")
	waitFor(t, "the other pool told", func() bool { return f.timesNotified(other.Key) > before })
}
