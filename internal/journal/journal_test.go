package journal

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jsonlog"
)

func testRunner(name string) *v1alpha1.Runner {
	return &v1alpha1.Runner{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "ci", Name: name, UID: types.UID("uid-" + name),
			CreationTimestamp: metav1.NewTime(time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)),
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "forgejo.brooktrails.org/v1alpha1", Kind: "RunnerPool", Name: "linux", UID: "pool-uid", Controller: ptr.To(true),
			}},
		},
		Spec: v1alpha1.RunnerSpec{PoolName: "linux", Mode: v1alpha1.ModeEphemeral,
			Job: &v1alpha1.JobRef{ID: 7, Handle: "h-7", Repository: "acme/app", RepoID: 3}},
	}
}

func TestTransitionCarriesTheRunnerAndItsJob(t *testing.T) {
	rn := testRunner("linux-1")
	rn.Status.Phase = v1alpha1.RunnerRegistered
	rn.Status.Registration = &v1alpha1.Registration{ID: 4, UUID: "8d2a", Name: "ci.linux-1"}
	ev := Transition(rn, string(v1alpha1.RunnerStarting), "PodCreated", "created pod").WithDuration(DurationStartup, 1500*time.Millisecond)
	want := Event{ID: "uid-linux-1:Starting", Namespace: "ci", Pool: "linux", Runner: "linux-1", RunnerUID: "uid-linux-1",
		UUID: "8d2a", JobID: 7, Handle: "h-7", Repository: "acme/app", RepoID: 3, From: "Registered", To: "Starting",
		Reason: "PodCreated", Message: "created pod", Durations: map[string]float64{"startup": 1.5}}
	if fmt.Sprint(ev) != fmt.Sprint(want) {
		t.Fatalf("event\n%+v\nwant\n%+v", ev, want)
	}
	if ev2 := ev.WithDuration(DurationLifetime, 0); len(ev2.Durations) != 1 {
		t.Fatalf("a zero duration was added: %v", ev2.Durations)
	}
	// A second registration (the token was lost) is a distinct event.
	rn.Status.Phase = v1alpha1.RunnerPending
	if a, b := Transition(rn, "Registered", "", "").ID, Transition(rn, "Starting", "", "").ID; a == b || !strings.HasSuffix(a, ":8d2a") {
		t.Fatalf("registered id %q, starting id %q", a, b)
	}
	del := Deleted(rn, "ScaledDown", "", rn.CreationTimestamp.Add(90*time.Second))
	if del.Outcome != "Deleted" || del.Durations[DurationLifetime] != 90 || del.To != PhaseDeleted {
		t.Fatalf("deleted event %+v", del)
	}
}

// kubeRecorder keeps the events it is given, as the API server would.
type kubeRecorder struct {
	mu     sync.Mutex
	events []string
}

func (k *kubeRecorder) Eventf(regarding runtime.Object, _ runtime.Object, eventtype, reason, action, note string, args ...interface{}) {
	k.mu.Lock()
	defer k.mu.Unlock()
	obj := regarding.(metav1.Object)
	k.events = append(k.events, fmt.Sprintf("%T %s %s %s %s", regarding, obj.GetName(), eventtype, reason, fmt.Sprintf(note, args...)))
}

func TestEventFileHoldsEachTransitionOnceAcrossRestarts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	open := func() *Journal {
		j := New(Options{EventLog: jsonlog.Options{Path: path, Fsync: jsonlog.FsyncAlways}, Log: logr.Discard()})
		return j
	}
	rn := testRunner("linux-1")
	j := open()
	j.Runner(rn, Transition(rn, "Pending", "JobWaiting", ""))
	j.Runner(rn, Transition(rn, "Pending", "Created", "")) // the Runner controller's repeat
	rn.Status.Phase = v1alpha1.RunnerPending
	j.Runner(rn, Transition(rn, "Registered", "Registered", ""))
	closeJournal(t, j)

	j = open()
	j.Runner(rn, Transition(rn, "Registered", "Registered", "")) // retried after the restart
	rn.Status.Phase = v1alpha1.RunnerRegistered
	j.Runner(rn, Transition(rn, "Starting", "PodCreated", ""))
	closeJournal(t, j)

	var got []string
	for _, ev := range readEvents(t, path) {
		got = append(got, ev.From+">"+ev.To+":"+ev.Reason)
	}
	if want := []string{">Pending:JobWaiting", "Pending>Registered:Registered", "Registered>Starting:PodCreated"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events %v, want %v", got, want)
	}
}

func closeJournal(t *testing.T, j *Journal) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := j.Start(ctx); err != nil {
		t.Fatal(err)
	}
}

func readEvents(t *testing.T, path string) []Event {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	var out []Event
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var ev Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		out = append(out, ev)
	}
	return out
}

func TestKubernetesEventsOfABurstAreSummarisedPerPool(t *testing.T) {
	rec := &kubeRecorder{}
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	j := New(Options{Kube: rec, Log: logr.Discard(), Now: func() time.Time { return now }})
	const burst = 200
	for i := range burst {
		rn := testRunner(fmt.Sprintf("linux-%d", i))
		j.Runner(rn, Transition(rn, "Pending", "JobWaiting", ""))
		rn.Status.Phase, rn.Status.Outcome = v1alpha1.RunnerBusy, v1alpha1.OutcomeSucceeded
		if i%50 == 0 {
			rn.Status.Outcome = v1alpha1.OutcomeFailed
			j.Runner(rn, Transition(rn, "Failed", "RunnerError", ""))
		} else {
			j.Runner(rn, Transition(rn, "Finished", "TaskRan", ""))
		}
	}
	j.kube.flush()

	runnerEvents, summaries := 0, map[string]string{}
	for _, e := range rec.events {
		f := strings.Fields(e)
		if strings.HasSuffix(f[0], "Runner") {
			runnerEvents++
		} else {
			summaries[f[3]] = e
		}
	}
	// The clock stands still: the Runners' events stop at the burst allowance, while the
	// pool's two summaries count every runner.
	if runnerEvents != RunnerEventsBurst {
		t.Errorf("%d events on Runners, want the burst allowance %d", runnerEvents, RunnerEventsBurst)
	}
	if len(summaries) != 2 {
		t.Fatalf("summaries %v, want RunnersCreated and RunnersEnded", summaries)
	}
	if s := summaries["RunnersCreated"]; !strings.Contains(s, "*v1alpha1.RunnerPool linux Normal RunnersCreated 200 runners created: 200 JobWaiting (linux-0, linux-1, linux-2, linux-3, linux-4 and 195 more)") {
		t.Errorf("created summary %q", s)
	}
	if s := summaries["RunnersEnded"]; !strings.Contains(s, "Warning RunnersEnded 200 runners ended: 196 Succeeded, 4 Failed") {
		t.Errorf("ended summary %q", s)
	}
	// Time refills the allowance.
	now = now.Add(2 * time.Second)
	rn := testRunner("late")
	j.Runner(rn, Transition(rn, "Pending", "JobWaiting", ""))
	if last := rec.events[len(rec.events)-1]; !strings.Contains(last, "Runner late Normal Pending") {
		t.Errorf("after a pause, last event %q", last)
	}
}

func TestDeletionReasonIsSharedBetweenControllers(t *testing.T) {
	j := New(Options{Log: logr.Discard()})
	rn := testRunner("linux-1")
	if got := j.DeletionReason(rn.UID); got != "" {
		t.Fatalf("reason before any deletion %q", got)
	}
	j.Runner(rn, Deleted(rn, "JobGone", "", time.Now()))
	j.Runner(rn, Deleted(rn, "RunnerDeleted", "", time.Now()))
	if got := j.DeletionReason(rn.UID); got != "JobGone" {
		t.Fatalf("reason %q, want the first one, JobGone", got)
	}
	var nilJournal *Journal
	nilJournal.Runner(rn, Deleted(rn, "x", "", time.Now())) // records nothing, does not panic
}

// A transition whose write failed reaches the log, metrics and Kubernetes at once; when the
// controller retries it and the file takes it, they must not hear of it a second time.
func TestARetriedTransitionReachesTheOtherSinksOnce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "not-yet")
	rec := &kubeRecorder{}
	j := New(Options{EventLog: jsonlog.Options{Path: filepath.Join(dir, "events.jsonl"), Fsync: jsonlog.FsyncAlways}, Kube: rec, Log: logr.Discard()})
	rn := testRunner("linux-1")
	ev := Transition(rn, "Pending", "JobWaiting", "")
	j.Runner(rn, ev) // the directory is missing: the file loses it
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	j.Runner(rn, ev)
	closeJournal(t, j)
	// The Runner's event, and the pool's summary of one runner created.
	if got := strings.Join(rec.events, "\n"); len(rec.events) != 2 || !strings.Contains(got, "RunnersCreated 1 runner created") {
		t.Errorf("Kubernetes Events for one transition:\n%s", got)
	}
	if got := len(readEvents(t, filepath.Join(dir, "events.jsonl"))); got != 1 {
		t.Errorf("%d lines in the file, want the retried one", got)
	}
}
