package jobwatch_test

import (
	"context"
	"strings"
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

// countingLister counts a connection's jobs calls to the simulator; gate, when set, holds each
// call until it is given a value.
type countingLister struct {
	c     *forgejo.Client
	calls atomic.Int64
	gate  chan struct{}
}

func (l *countingLister) ListJobs(ctx context.Context, labels ...string) ([]forgejo.Job, error) {
	l.calls.Add(1)
	if l.gate != nil {
		select {
		case <-l.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return l.c.ListJobs(ctx, labels...)
}

// triggerFixture is a watcher whose periodic poll never comes within a test, so every poll
// after the first is one a trigger asked for.
type triggerFixture struct {
	sim     *forgejosim.Server
	url     string
	watcher *jobwatch.Watcher
}

func newTriggerFixture(t *testing.T, opts jobwatch.TriggerOptions) *triggerFixture {
	t.Helper()
	f := &triggerFixture{}
	f.sim, f.url = forgejosim.NewTestServer(t, forgejosim.Options{AdminToken: "admin", Seed: 1})
	f.watcher = jobwatch.New(time.Hour, func(types.NamespacedName) {}, testr.New(t))
	f.watcher.SetTriggerOptions(opts)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = f.watcher.Start(ctx) }()
	return f
}

// register adds a pool on its own connection and waits for the connection's first poll.
func (f *triggerFixture) register(t *testing.T, name string, scope v1alpha1.Scope, connScope string, token string, fscope forgejo.Scope) (*countingLister, types.NamespacedName) {
	t.Helper()
	c, err := forgejo.New(forgejo.Config{BaseURL: f.url, Token: token, Scope: fscope})
	if err != nil {
		t.Fatal(err)
	}
	l := &countingLister{c: c}
	p := pool(name, scope, "docker")
	f.watcher.Register(p, jobwatch.NewConnection(f.url, connScope, token), l)
	waitFor(t, name+"'s first poll", func() bool { return !f.watcher.Demand(p.Key).PolledAt.IsZero() })
	return l, p.Key
}

func (f *triggerFixture) token(t *testing.T, sc forgejosim.Scope) string {
	t.Helper()
	tok, err := f.sim.CreateToken(sc)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestTriggerPollsExactlyTheCoveringConnections(t *testing.T) {
	f := newTriggerFixture(t, jobwatch.TriggerOptions{Window: 10 * time.Millisecond, FollowUps: []time.Duration{}})
	for _, repo := range []string{"acme/app", "acme/lib", "other/app"} {
		if err := f.sim.EnsureRepository(repo); err != nil {
			t.Fatal(err)
		}
	}
	global, _ := f.register(t, "global", v1alpha1.ScopeGlobal, "global", "admin", forgejo.GlobalScope())
	acme, _ := f.register(t, "acme", v1alpha1.ScopeOrganization, "organization acme",
		f.token(t, forgejosim.OrganizationScope("acme")), forgejo.OrganizationScope("acme"))
	other, _ := f.register(t, "other", v1alpha1.ScopeOrganization, "organization other",
		f.token(t, forgejosim.OrganizationScope("other")), forgejo.OrganizationScope("other"))
	app, _ := f.register(t, "app", v1alpha1.ScopeRepository, "repository acme/app",
		f.token(t, forgejosim.RepositoryScope("acme/app")), forgejo.RepositoryScope("acme", "app"))
	lib, _ := f.register(t, "lib", v1alpha1.ScopeRepository, "repository acme/lib",
		f.token(t, forgejosim.RepositoryScope("acme/lib")), forgejo.RepositoryScope("acme", "lib"))

	if n := f.watcher.Trigger(f.url+"/", jobwatch.RepositoryRef{FullName: "acme/app"}, "test"); n != 3 {
		t.Errorf("a push to acme/app asked %d connections, want 3 (global, acme, acme/app)", n)
	}
	waitFor(t, "the covering connections polled", func() bool {
		return global.calls.Load() == 2 && acme.calls.Load() == 2 && app.calls.Load() == 2
	})
	if n := f.watcher.Trigger("http://another.forgejo", jobwatch.RepositoryRef{FullName: "acme/app"}, "test"); n != 0 {
		t.Errorf("a delivery about another instance asked %d connections", n)
	}
	// Give a wrong poll time to happen before counting what did not happen.
	time.Sleep(200 * time.Millisecond)
	if other.calls.Load() != 1 || lib.calls.Load() != 1 {
		t.Errorf("connections not covering acme/app polled again: other %d, lib %d", other.calls.Load(), lib.calls.Load())
	}
}

func TestAFloodOfTriggersCostsOnePollPerWindow(t *testing.T) {
	const window = 300 * time.Millisecond
	f := newTriggerFixture(t, jobwatch.TriggerOptions{Window: window, FollowUps: []time.Duration{}})
	l, _ := f.register(t, "global", v1alpha1.ScopeGlobal, "global", "admin", forgejo.GlobalScope())
	start := time.Now()
	for range 500 {
		f.watcher.Trigger(f.url, jobwatch.RepositoryRef{FullName: "acme/app"}, "flood")
	}
	flood := time.Since(start)
	waitFor(t, "the flood's poll", func() bool { return l.calls.Load() >= 2 })
	time.Sleep(3 * window)
	// One poll per window the flood lasted, plus the one at its end.
	limit := 1 + 1 + int64(flood/window)
	if got := l.calls.Load(); got > limit {
		t.Errorf("500 deliveries in %v made %d polls, want at most %d", flood, got, limit)
	}
}

func TestATriggerDuringAPollPollsAgainAfterIt(t *testing.T) {
	f := newTriggerFixture(t, jobwatch.TriggerOptions{Window: time.Millisecond, FollowUps: []time.Duration{}})
	l, key := f.register(t, "global", v1alpha1.ScopeGlobal, "global", "admin", forgejo.GlobalScope())
	l.gate = make(chan struct{})
	f.watcher.Trigger(f.url, jobwatch.RepositoryRef{FullName: "acme/app"}, "first")
	waitFor(t, "the first triggered poll under way", func() bool { return l.calls.Load() == 2 })
	// The job is queued, and its delivery arrives, while that poll's answer is on its way.
	jobs, err := f.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}})
	if err != nil {
		t.Fatal(err)
	}
	f.watcher.Trigger(f.url, jobwatch.RepositoryRef{FullName: "acme/app"}, "second")
	l.gate <- struct{}{} // the first poll's list is taken now, after the job: release it
	close(l.gate)
	waitFor(t, "the job known", func() bool { _, ok := f.watcher.Job(key, jobs[0].Handle); return ok })
	waitFor(t, "a poll after the one under way", func() bool { return l.calls.Load() == 3 })
}

func TestFollowUpsFindJobsThatCameAfterTheDelivery(t *testing.T) {
	f := newTriggerFixture(t, jobwatch.TriggerOptions{Window: 10 * time.Millisecond, FollowUps: []time.Duration{300 * time.Millisecond}})
	l, key := f.register(t, "global", v1alpha1.ScopeGlobal, "global", "admin", forgejo.GlobalScope())
	f.watcher.Trigger(f.url, jobwatch.RepositoryRef{FullName: "acme/app", ID: 77}, "webhook delivery d-1 (push)")
	waitFor(t, "the immediate poll", func() bool { return l.calls.Load() == 2 })
	// Forgejo queued the delivery before it inserted the jobs: they show up after the first poll.
	jobs, err := f.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the follow-up poll to find the job", func() bool { _, ok := f.watcher.Job(key, jobs[0].Handle); return ok })
	job, _ := f.watcher.Job(key, jobs[0].Handle)
	if job.Via != "webhook delivery d-1 (push)" {
		t.Errorf("job seen via %q, want the delivery that asked for the poll", job.Via)
	}
	if job.RepoID == 77 && job.Repository != "acme/app" {
		t.Errorf("job of repository %d named %q, want the name the delivery gave", job.RepoID, job.Repository)
	}
	if got := l.calls.Load(); got != 3 {
		t.Errorf("%d polls, want the first, the immediate and one follow-up", got)
	}
}

func TestARunnerEndPollsItsConnection(t *testing.T) {
	f := newTriggerFixture(t, jobwatch.TriggerOptions{Window: 10 * time.Millisecond, RunnerEndFollowUps: []time.Duration{200 * time.Millisecond}})
	l, key := f.register(t, "global", v1alpha1.ScopeGlobal, "global", "admin", forgejo.GlobalScope())
	f.watcher.Poll(key)
	waitFor(t, "the poll and its follow-up", func() bool { return l.calls.Load() == 3 })
	jobs, err := f.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}})
	if err != nil {
		t.Fatal(err)
	}
	f.watcher.Poll(key)
	waitFor(t, "the job", func() bool { _, ok := f.watcher.Job(key, jobs[0].Handle); return ok })
	if job, _ := f.watcher.Job(key, jobs[0].Handle); !strings.Contains(job.Via, "runner of ci/global ended") {
		t.Errorf("job seen via %q, want the runner's end", job.Via)
	}
}

func TestUserScopeLearnsItsOwnerFromJobs(t *testing.T) {
	f := newTriggerFixture(t, jobwatch.TriggerOptions{Window: 10 * time.Millisecond, FollowUps: []time.Duration{}})
	if err := f.sim.EnsureUser("alice"); err != nil {
		t.Fatal(err)
	}
	if err := f.sim.EnsureRepository("alice/dots"); err != nil {
		t.Fatal(err)
	}
	jobs, err := f.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "alice/dots", RunsOn: []string{"docker"}})
	if err != nil {
		t.Fatal(err)
	}
	ownerID := jobs[0].OwnerID
	tok := f.token(t, forgejosim.UserScope("alice"))
	// Before any job was listed the user connection would be polled for any repository; this
	// one lists alice's job at once, and from then on only alice's repositories poll it.
	l, _ := f.register(t, "mine", v1alpha1.ScopeUser, "user", tok, forgejo.UserScope())
	if n := f.watcher.Trigger(f.url, jobwatch.RepositoryRef{FullName: "bob/x", OwnerID: ownerID + 1000}, "bob"); n != 0 {
		t.Errorf("a delivery for another owner asked %d connections", n)
	}
	if n := f.watcher.Trigger(f.url, jobwatch.RepositoryRef{FullName: "alice/dots", OwnerID: ownerID}, "alice"); n != 1 {
		t.Errorf("a delivery for alice's repository asked %d connections, want 1", n)
	}
	waitFor(t, "alice's connection polled", func() bool { return l.calls.Load() == 2 })
}

// A poll wanted a little before one already planned takes its place: a runner's end is not made
// to wait for a webhook's later follow-up.
func TestAnEarlierWishBringsAPlannedPollForward(t *testing.T) {
	f := newTriggerFixture(t, jobwatch.TriggerOptions{Window: time.Second, FollowUps: []time.Duration{1800 * time.Millisecond},
		RunnerEndFollowUps: []time.Duration{}})
	l, key := f.register(t, "global", v1alpha1.ScopeGlobal, "global", "admin", forgejo.GlobalScope())
	time.Sleep(time.Second) // past the first poll's window
	f.watcher.Trigger(f.url, jobwatch.RepositoryRef{FullName: "acme/app"}, "webhook delivery d-1 (push)")
	waitFor(t, "the immediate poll", func() bool { return l.calls.Load() == 2 })
	jobs, err := f.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}})
	if err != nil {
		t.Fatal(err)
	}
	// Wanted now, so at the end of the window: before the follow-up, which it replaces.
	f.watcher.Poll(key)
	waitFor(t, "the job", func() bool { _, ok := f.watcher.Job(key, jobs[0].Handle); return ok })
	if job, _ := f.watcher.Job(key, jobs[0].Handle); !strings.Contains(job.Via, "ended") {
		t.Errorf("job seen via %q, want the runner's end, whose poll comes first", job.Via)
	}
}
