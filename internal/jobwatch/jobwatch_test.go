package jobwatch_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jobwatch"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/matching"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/eventually"
)

type fixture struct {
	sim      *forgejosim.Server
	url      string
	watcher  *jobwatch.Watcher
	calls    atomic.Int64
	mu       sync.Mutex
	notified map[types.NamespacedName]int
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{notified: map[types.NamespacedName]int{}}
	f.sim, f.url = forgejosim.NewTestServer(t, forgejosim.Options{AdminToken: "admin", Seed: 1})
	// An hour: polls happen only at start and when a test kicks them.
	f.watcher = jobwatch.New(time.Hour, func(k types.NamespacedName) {
		f.mu.Lock()
		f.notified[k]++
		f.mu.Unlock()
	}, testr.New(t))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = f.watcher.Start(ctx) }()
	return f
}

func (f *fixture) client(t *testing.T, token string, scope forgejo.Scope) *forgejo.Client {
	t.Helper()
	c, err := forgejo.New(forgejo.Config{
		BaseURL: f.url, Token: token, Scope: scope,
		Observer: forgejo.ObserverFunc(func(endpoint, _ string, _ time.Duration) {
			if endpoint == forgejo.EndpointListJobs {
				f.calls.Add(1)
			}
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (f *fixture) timesNotified(k types.NamespacedName) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.notified[k]
}

func pool(name string, scope v1alpha1.Scope, labels ...string) matching.Pool {
	return matching.Pool{Key: types.NamespacedName{Namespace: "ci", Name: name}, Scope: scope, LabelNames: labels}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	eventually.True(t, 10*time.Second, what, func() (bool, string) { return cond(), "not yet" })
}

func TestPoolsSharingAConnectionShareOnePoller(t *testing.T) {
	f := newFixture(t)
	if _, err := f.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}, Count: 3}); err != nil {
		t.Fatal(err)
	}
	conn := jobwatch.NewConnection(f.url, "global", "admin")
	lister := f.client(t, "admin", forgejo.GlobalScope())
	var keys []types.NamespacedName
	for i := range 50 {
		p := pool(fmt.Sprintf("p%02d", i), v1alpha1.ScopeGlobal, "docker")
		keys = append(keys, p.Key)
		f.watcher.Register(p, conn, lister)
	}
	// A pool reads its demand when it reconciles; a notification only says when to look again.
	waitFor(t, "the shared poll", func() bool { return !f.watcher.Demand(keys[len(keys)-1]).PolledAt.IsZero() })
	if f.timesNotified(keys[0]) == 0 {
		t.Fatalf("the first pool was not told about its jobs")
	}
	if got := f.calls.Load(); got != 1 {
		t.Fatalf("50 pools on one connection made %d jobs calls, want 1", got)
	}
	// All three jobs go to one pool, the same one each time: p00 wins the name tie-break.
	assigned := 0
	for _, k := range keys {
		d := f.watcher.Demand(k)
		if len(d.Known) != 3 {
			t.Fatalf("%s knows %d jobs, want 3", k, len(d.Known))
		}
		if len(d.Assigned) > 0 && k.Name != "p00" {
			t.Fatalf("jobs assigned to %s, want p00", k)
		}
		assigned += len(d.Assigned)
	}
	if assigned != 3 {
		t.Fatalf("%d jobs assigned in all, want 3", assigned)
	}
}

func TestNarrowestScopeGetsTheJob(t *testing.T) {
	f := newFixture(t)
	if err := f.sim.EnsureRepository("acme/app"); err != nil {
		t.Fatal(err)
	}
	repoToken, err := f.sim.CreateToken(forgejosim.RepositoryScope("acme/app"))
	if err != nil {
		t.Fatal(err)
	}
	mine, _ := f.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}})
	other, _ := f.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/other", RunsOn: []string{"docker"}})
	gpu, _ := f.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker", "gpu"}})

	global := pool("global", v1alpha1.ScopeGlobal, "docker", "gpu")
	repo := pool("repo", v1alpha1.ScopeRepository, "docker")
	f.watcher.Register(global, jobwatch.NewConnection(f.url, "global", "admin"), f.client(t, "admin", forgejo.GlobalScope()))
	f.watcher.Register(repo, jobwatch.NewConnection(f.url, "repository acme/app", repoToken), f.client(t, repoToken, forgejo.RepositoryScope("acme", "app")))
	waitFor(t, "both connections polled", func() bool {
		return !f.watcher.Demand(global.Key).PolledAt.IsZero() && !f.watcher.Demand(repo.Key).PolledAt.IsZero()
	})

	handles := func(d jobwatch.Demand) map[string]bool {
		out := map[string]bool{}
		for _, j := range d.Assigned {
			out[j.Handle] = true
		}
		return out
	}
	r, g := handles(f.watcher.Demand(repo.Key)), handles(f.watcher.Demand(global.Key))
	if !r[mine[0].Handle] || len(r) != 1 {
		t.Errorf("repository pool got %v, want only its docker job %s", r, mine[0].Handle)
	}
	if !g[other[0].Handle] || !g[gpu[0].Handle] || g[mine[0].Handle] || len(g) != 2 {
		t.Errorf("global pool got %v, want the other repository's job and the gpu job", g)
	}
}

func TestCancelledJobLeavesDemand(t *testing.T) {
	f := newFixture(t)
	jobs, _ := f.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}, Count: 2})
	p := pool("p", v1alpha1.ScopeGlobal, "docker")
	f.watcher.Register(p, jobwatch.NewConnection(f.url, "global", "admin"), f.client(t, "admin", forgejo.GlobalScope()))
	waitFor(t, "two assigned jobs", func() bool { return len(f.watcher.Demand(p.Key).Assigned) == 2 })

	if _, err := f.sim.CancelJob(jobs[0].ID); err != nil {
		t.Fatal(err)
	}
	before := f.timesNotified(p.Key)
	f.watcher.Poll(p.Key)
	waitFor(t, "a notification after the cancel", func() bool { return f.timesNotified(p.Key) > before })
	d := f.watcher.Demand(p.Key)
	if len(d.Assigned) != 1 || d.Assigned[0].Handle != jobs[1].Handle {
		t.Fatalf("assigned %v after cancelling %s", d.Assigned, jobs[0].Handle)
	}
	if _, known := d.Known[jobs[0].Handle]; known {
		t.Fatalf("cancelled job still known")
	}
	if _, gone := d.Gone[jobs[0].Handle]; !gone {
		t.Fatalf("cancelled job not reported gone")
	}
	if _, gone := d.Gone[jobs[1].Handle]; gone {
		t.Fatalf("waiting job reported gone")
	}
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }

func TestPollErrorsAreReported(t *testing.T) {
	f := newFixture(t)
	p := pool("p", v1alpha1.ScopeGlobal, "docker")
	f.watcher.Register(p, jobwatch.NewConnection(f.url, "global", "wrong"), f.client(t, "wrong", forgejo.GlobalScope()))
	waitFor(t, "the poll error", func() bool { return f.watcher.Demand(p.Key).Err != nil })
	if err := f.watcher.Demand(p.Key).Err; !errorsIs(err, forgejo.ErrUnauthorized) {
		t.Fatalf("error %v, want unauthorized", err)
	}
}

func TestWebhookOffersAreIdempotentAndToleratePoorOrder(t *testing.T) {
	f := newFixture(t)
	p := pool("p", v1alpha1.ScopeGlobal, "docker")
	f.watcher.Register(p, jobwatch.NewConnection(f.url, "global", "admin"), f.client(t, "admin", forgejo.GlobalScope()))
	waitFor(t, "the first poll", func() bool { return !f.watcher.Demand(p.Key).PolledAt.IsZero() })

	waiting := jobwatch.Job{ID: 1, Handle: "h1", RunsOn: []string{"docker"}, Status: "waiting"}
	if !f.watcher.Offer(f.url, "acme/app", waiting) {
		t.Fatal("a new waiting job changed nothing")
	}
	if f.watcher.Offer(f.url+"/", "acme/app", waiting) {
		t.Fatal("the same waiting job offered twice changed something")
	}
	if d := f.watcher.Demand(p.Key); len(d.Assigned) != 1 || d.Assigned[0].Handle != "h1" {
		t.Fatalf("assigned %v, want h1", d.Assigned)
	}

	// Running before waiting: the late waiting event must not make the job demand again.
	f.watcher.Offer(f.url, "acme/app", jobwatch.Job{ID: 2, Handle: "h2", RunsOn: []string{"docker"}, Status: "running"})
	f.watcher.Offer(f.url, "acme/app", jobwatch.Job{ID: 2, Handle: "h2", RunsOn: []string{"docker"}, Status: "waiting"})
	// Completed before waiting: likewise.
	f.watcher.Offer(f.url, "acme/app", jobwatch.Job{ID: 3, Handle: "h3", RunsOn: []string{"docker"}, Status: "success"})
	f.watcher.Offer(f.url, "acme/app", jobwatch.Job{ID: 3, Handle: "h3", RunsOn: []string{"docker"}, Status: "waiting"})
	d := f.watcher.Demand(p.Key)
	if len(d.Assigned) != 1 {
		t.Fatalf("assigned %v, want only h1", d.Assigned)
	}
	if _, gone := d.Gone["h3"]; !gone {
		t.Fatal("a completed job is not gone")
	}

	// Another instance's events do not touch this one.
	if f.watcher.Offer("http://elsewhere.example", "acme/app", jobwatch.Job{ID: 4, Handle: "h4", RunsOn: []string{"docker"}, Status: "waiting"}) {
		t.Fatal("an event of another instance was taken")
	}
}

func TestConnectionCovers(t *testing.T) {
	cases := []struct {
		scope, repo string
		want        bool
	}{
		{"global", "acme/app", true},
		{"organization acme", "acme/app", true},
		{"organization acme", "ACME/app", true},
		{"organization other", "acme/app", false},
		{"repository acme/app", "acme/app", true},
		{"repository acme/app", "acme/other", false},
		{"user", "acme/app", false},
	}
	for _, c := range cases {
		if got := (jobwatch.Connection{Scope: c.scope}).Covers(c.repo); got != c.want {
			t.Errorf("%q covers %q = %v, want %v", c.scope, c.repo, got, c.want)
		}
	}
}

type recordedTimings struct {
	mu         sync.Mutex
	waits, run []time.Duration
}

func (r *recordedTimings) ObserveQueueWait(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.waits = append(r.waits, d)
}

func (r *recordedTimings) ObserveExecution(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.run = append(r.run, d)
}

func TestJobTimingsAreObservedOncePerJob(t *testing.T) {
	f := newFixture(t)
	timings := &recordedTimings{}
	f.watcher.SetTimings(timings)
	// Two connections on one instance see the same jobs: each job still counts once.
	p1, p2 := pool("p1", v1alpha1.ScopeGlobal, "docker"), pool("p2", v1alpha1.ScopeOrganization, "docker")
	orgToken, err := f.sim.CreateToken(forgejosim.OrganizationScope("acme"))
	if err != nil {
		t.Fatal(err)
	}
	f.watcher.Register(p1, jobwatch.NewConnection(f.url, "global", "admin"), f.client(t, "admin", forgejo.GlobalScope()))
	f.watcher.Register(p2, jobwatch.NewConnection(f.url, "organization acme", orgToken), f.client(t, orgToken, forgejo.OrganizationScope("acme")))
	waitFor(t, "first polls", func() bool {
		return !f.watcher.Demand(p1.Key).PolledAt.IsZero() && !f.watcher.Demand(p2.Key).PolledAt.IsZero()
	})

	job := jobwatch.Job{ID: 1, Handle: "h", RunsOn: []string{"docker"}, Status: "waiting"}
	f.watcher.Offer(f.url, "acme/app", job)
	job.Status = "running"
	f.watcher.Offer(f.url, "acme/app", job)
	f.watcher.Offer(f.url, "acme/app", job) // a repeat
	job.Status = "success"
	f.watcher.Offer(f.url, "acme/app", job)

	timings.mu.Lock()
	defer timings.mu.Unlock()
	if len(timings.waits) != 1 || len(timings.run) != 1 {
		t.Fatalf("observed %d waits and %d runs, want one each", len(timings.waits), len(timings.run))
	}
	if timings.waits[0] < 0 || timings.run[0] < 0 {
		t.Fatalf("negative timings %v %v", timings.waits, timings.run)
	}
}

func TestPrometheusTimingsRegisterOnce(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, err := jobwatch.NewPrometheusTimings(reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jobwatch.NewPrometheusTimings(reg); err != nil {
		t.Fatalf("second registration: %v", err)
	}
	a.ObserveQueueWait(2 * time.Second)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, fam := range families {
		if fam.GetName() == "forgejo_runner_operator_job_queue_wait_seconds" && fam.Metric[0].GetHistogram().GetSampleCount() == 1 {
			found = true
		}
	}
	if !found {
		t.Fatal("queue wait histogram missing or empty")
	}
}

func TestFinishedJobStopsBeingDemandAtOnce(t *testing.T) {
	f := newFixture(t)
	jobs, err := f.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}})
	if err != nil {
		t.Fatal(err)
	}
	p := pool("p", v1alpha1.ScopeGlobal, "docker")
	f.watcher.Register(p, jobwatch.NewConnection(f.url, "global", "admin"), f.client(t, "admin", forgejo.GlobalScope()))
	waitFor(t, "the job as demand", func() bool { return len(f.watcher.Demand(p.Key).Assigned) == 1 })
	f.watcher.Finished(p.Key, jobs[0].Handle)
	if d := f.watcher.Demand(p.Key); len(d.Assigned) != 0 {
		t.Fatalf("a finished job is still demand: %v", d.Assigned)
	}
}
