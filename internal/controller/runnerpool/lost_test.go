package runnerpool

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jobwatch"
)

func liveRunner(name string, id int64, phase v1alpha1.RunnerPhase, handle string) v1alpha1.Runner {
	rn := v1alpha1.Runner{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name)}}
	rn.Status.Phase = phase
	if id != 0 {
		rn.Status.Registration = &v1alpha1.Registration{ID: id, UUID: "uuid-" + name}
	}
	if handle != "" {
		rn.Spec.Job = &v1alpha1.JobRef{Handle: handle}
	}
	return rn
}

// Only a runner that should be waiting, whose registration a complete listing lacks, is a
// candidate: not one still starting, busy, already being stopped or not yet registered.
func TestLostCandidates(t *testing.T) {
	stopped := liveRunner("stopped", 5, v1alpha1.RunnerIdle, "")
	stopped.Status.Stop = &v1alpha1.RunnerStop{Reason: "RegistrationGone"}
	live := []v1alpha1.Runner{
		liveRunner("listed", 1, v1alpha1.RunnerIdle, ""),
		liveRunner("lost", 2, v1alpha1.RunnerIdle, "h"),
		liveRunner("starting", 3, v1alpha1.RunnerStarting, ""),
		liveRunner("busy", 4, v1alpha1.RunnerBusy, "h2"),
		stopped,
		liveRunner("unregistered", 0, v1alpha1.RunnerIdle, ""),
	}
	got := LostCandidates(live, map[int64]bool{1: true})
	if len(got) != 1 || got[0].Name != "lost" {
		t.Fatalf("candidates %v, want only lost", got)
	}
}

func TestLostTrackerWaitsBeforeConfirming(t *testing.T) {
	var l lostTracker
	t0 := time.Unix(1000, 0)
	rn := liveRunner("lost", 2, v1alpha1.RunnerIdle, "")
	l.suspect(rn.UID, t0)
	l.suspect(rn.UID, t0.Add(5*time.Second)) // a later pass does not restart the wait
	if due, next := l.due([]v1alpha1.Runner{rn}, t0.Add(time.Second)); len(due) != 0 || next != lostConfirmDelay-time.Second {
		t.Fatalf("due %v next %s, want none for %s", due, next, lostConfirmDelay-time.Second)
	}
	if due, _ := l.due([]v1alpha1.Runner{rn}, t0.Add(lostConfirmDelay)); len(due) != 1 {
		t.Fatalf("due %v, want the runner", due)
	}
	l.clear(rn.UID)
	if due, next := l.due([]v1alpha1.Runner{rn}, t0.Add(time.Hour)); len(due) != 0 || next != 0 {
		t.Fatalf("cleared runner still due: %v %s", due, next)
	}
}

// A warm runner that has just fetched a task reads idle in Forgejo: while a fitting job has
// started lately with no runner of the pool bound to it, or waits, no warm runner goes.
func TestMayHaveTakenAJob(t *testing.T) {
	now := time.Unix(1000, 0)
	pool := &v1alpha1.RunnerPool{}
	pool.Spec.Labels = []string{"docker:docker://node:22"}
	live := []v1alpha1.Runner{liveRunner("bound", 1, v1alpha1.RunnerBusy, "mine"), liveRunner("warm", 2, v1alpha1.RunnerIdle, "")}
	job := func(status string, runningFor time.Duration, runsOn ...string) jobwatch.Job {
		j := jobwatch.Job{Status: status, RunsOn: runsOn}
		if status == "running" {
			j.RunningSince = now.Add(-runningFor)
		}
		return j
	}
	for _, tc := range []struct {
		name  string
		known map[string]jobwatch.Job
		want  bool
	}{
		{"nothing", nil, false},
		{"just started, unbound", map[string]jobwatch.Job{"x": job("running", time.Second, "docker")}, true},
		{"just started, bound to the pool's runner", map[string]jobwatch.Job{"mine": job("running", time.Second, "docker")}, false},
		{"running long", map[string]jobwatch.Job{"x": job("running", time.Minute, "docker")}, false},
		{"just started, other labels", map[string]jobwatch.Job{"x": job("running", time.Second, "gpu")}, false},
		{"waiting, fits", map[string]jobwatch.Job{"x": job("waiting", 0, "docker")}, true},
	} {
		if got := MayHaveTakenAJob(pool, live, jobwatch.Demand{Known: tc.known}, now); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestIdleLooksNeedTwoLooksApart(t *testing.T) {
	var l idleLooks
	t0 := time.Unix(1000, 0)
	if l.confirmed("a", true, t0) || l.confirmed("a", true, t0.Add(idleConfirmDelay-time.Millisecond)) {
		t.Fatal("confirmed before two looks idleConfirmDelay apart")
	}
	if !l.confirmed("a", true, t0.Add(idleConfirmDelay)) {
		t.Fatal("not confirmed after two idle looks")
	}
	// An active look in between starts the row again.
	l.confirmed("a", false, t0.Add(idleConfirmDelay+time.Second))
	if l.confirmed("a", true, t0.Add(idleConfirmDelay+2*time.Second)) {
		t.Fatal("confirmed right after an active look")
	}
}
