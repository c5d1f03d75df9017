package runnerpool

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/controller/runner"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jobwatch"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/runnerpod"
)

// Defaults of spec.failures.
const (
	DefaultMaxFailuresPerJob = 5
	DefaultStartDeadline     = 10 * time.Minute
	// ConditionJobsFailing is True while the pool has given up on some jobs.
	ConditionJobsFailing = "JobsFailing"
	// maxJobFailureEntries bounds status.jobFailures; the oldest entries go first.
	maxJobFailureEntries = 500
)

func maxFailuresPerJob(pool *v1alpha1.RunnerPool) int32 {
	if n := pool.Spec.Failures.MaxPerJob; n > 0 {
		return n
	}
	return DefaultMaxFailuresPerJob
}

func startDeadline(pool *v1alpha1.RunnerPool) time.Duration {
	if d := pool.Spec.Failures.StartDeadline; d != nil && d.Duration > 0 {
		return d.Duration
	}
	return DefaultStartDeadline
}

// countsAsFailure reports whether an ended runner of a job failed it: it ended without running
// the job, and not because the operator took it away (scale-down, the job gone).
func countsAsFailure(rec v1alpha1.RunnerRecord) bool {
	return rec.Handle != "" && rec.Outcome != v1alpha1.OutcomeSucceeded && rec.Outcome != v1alpha1.OutcomeDeleted
}

// RecordFailure counts a failed runner of a job; it reports whether the job has just reached
// max, so that giving up is announced once.
func RecordFailure(failures []v1alpha1.JobFailure, rec v1alpha1.RunnerRecord, max int32) ([]v1alpha1.JobFailure, bool) {
	if !countsAsFailure(rec) {
		return failures, false
	}
	at := rec.FinishedAt
	i := slices.IndexFunc(failures, func(f v1alpha1.JobFailure) bool { return f.Handle == rec.Handle })
	if i < 0 {
		failures = append(failures, v1alpha1.JobFailure{Handle: rec.Handle, JobID: rec.JobID})
		i = len(failures) - 1
	}
	if rec.UID != "" && failures[i].LastRunnerUID == rec.UID {
		return failures, false // counted already, by a reconcile that did not get to delete it
	}
	failures[i].Failures++
	failures[i].LastRunnerUID = rec.UID
	if at != nil && (failures[i].LastFailureAt == nil || at.After(failures[i].LastFailureAt.Time)) {
		failures[i].LastFailureAt = at.DeepCopy()
	}
	reached := failures[i].Failures == max
	if len(failures) > maxJobFailureEntries {
		failures = failures[len(failures)-maxJobFailureEntries:]
	}
	return failures, reached
}

// ForgetFailures drops the counts of jobs Forgejo no longer lists: they ran, or were cancelled,
// or a re-run made a new attempt with a new handle.
func ForgetFailures(failures []v1alpha1.JobFailure, listed map[string]jobwatch.Job) []v1alpha1.JobFailure {
	kept := failures[:0:0]
	for _, f := range failures {
		if _, ok := listed[f.Handle]; ok {
			kept = append(kept, f)
		}
	}
	if len(kept) == 0 {
		return nil
	}
	return kept
}

// failuresOf is the count of a job's failed runners and when the last ended.
func failuresOf(failures []v1alpha1.JobFailure, handle string) (int32, time.Time) {
	for _, f := range failures {
		if f.Handle == handle {
			var last time.Time
			if f.LastFailureAt != nil {
				last = f.LastFailureAt.Time
			}
			return f.Failures, last
		}
	}
	return 0, time.Time{}
}

// jobRetryDelay says how long a waiting job must wait for a new runner after earlier ones failed
// it: 5 s, doubling with each failure, at most 5 min, counted from the last failure; given
// reports that the pool has given up on it.
func jobRetryDelay(pool *v1alpha1.RunnerPool, handle string, now time.Time) (wait time.Duration, given bool) {
	n, last := failuresOf(pool.Status.JobFailures, handle)
	if n >= maxFailuresPerJob(pool) {
		return 0, true
	}
	return backoff(int(n), last, now), false
}

// setJobsFailing sets JobsFailing from the jobs given up on.
func setJobsFailing(status *v1alpha1.RunnerPoolStatus, pool *v1alpha1.RunnerPool) {
	max := maxFailuresPerJob(pool)
	var given []string
	for _, f := range status.JobFailures {
		if f.Failures >= max {
			given = append(given, fmt.Sprintf("job %d (%d runners failed)", f.JobID, f.Failures))
		}
	}
	cond := metav1.Condition{Type: ConditionJobsFailing, Status: metav1.ConditionFalse, Reason: "NoJobGivenUp",
		Message: "no job's runners failed spec.failures.maxPerJob times", ObservedGeneration: pool.Generation}
	if len(given) > 0 {
		shown := given[:min(len(given), 10)]
		cond.Status, cond.Reason = metav1.ConditionTrue, "JobsGivenUp"
		cond.Message = fmt.Sprintf("no more runners are made for %s: see status.recentRunners for why they failed; the job can be re-run in Forgejo once that is fixed",
			strings.Join(shown, ", "))
		if len(given) > len(shown) {
			cond.Message += fmt.Sprintf(" (and %d more)", len(given)-len(shown))
		}
	}
	meta.SetStatusCondition(&status.Conditions, cond)
}

// StartDeadlineStop is the stop of a runner that did not start within the pool's deadline, with
// the reason that holds it back where one is known: a pod no node takes, an image that cannot be
// pulled, a registration Forgejo refuses. nil when the runner started or has time left.
func StartDeadlineStop(pool *v1alpha1.RunnerPool, rn *v1alpha1.Runner, pod *corev1.Pod, now time.Time) *v1alpha1.RunnerStop {
	if rn.Status.Stop != nil || rn.Status.StartedAt != nil || !rn.DeletionTimestamp.IsZero() {
		return nil
	}
	switch rn.Status.Phase {
	case "", v1alpha1.RunnerPending, v1alpha1.RunnerRegistered, v1alpha1.RunnerStarting:
	default:
		return nil
	}
	deadline := startDeadline(pool)
	if now.Sub(rn.CreationTimestamp.Time) < deadline {
		return nil
	}
	why := "its runner container was not running"
	if c := meta.FindStatusCondition(rn.Status.Conditions, runner.ConditionRegistered); c != nil && c.Status == metav1.ConditionFalse {
		why = "Forgejo refused its registration: " + c.Message
	} else if pod != nil {
		why = podHoldUp(pod, why)
	}
	return &v1alpha1.RunnerStop{
		Reason:      "StartDeadlineExceeded",
		Outcome:     v1alpha1.OutcomeFailed,
		Message:     truncate(fmt.Sprintf("not started within spec.failures.startDeadline (%s): %s", deadline, why), 1024),
		RequestedAt: metav1.NewTime(now),
	}
}

// podHoldUp names what keeps a pod from running, from its scheduling condition and its
// containers' waiting reasons.
func podHoldUp(pod *corev1.Pod, fallback string) string {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			return fmt.Sprintf("pod %s not scheduled (%s): %s", pod.Name, c.Reason, c.Message)
		}
	}
	statuses := append(slices.Clone(pod.Status.InitContainerStatuses), pod.Status.ContainerStatuses...)
	for _, cs := range statuses {
		if w := cs.State.Waiting; w != nil && w.Reason != "" && w.Reason != "PodInitializing" && w.Reason != "ContainerCreating" {
			return fmt.Sprintf("container %s waiting (%s): %s", cs.Name, w.Reason, w.Message)
		}
	}
	return fallback
}

// stopUnstarted stops the runners that missed the start deadline; it returns when the next
// deadline of a runner still starting falls, 0 for none.
func (r *Reconciler) stopUnstarted(ctx context.Context, pool *v1alpha1.RunnerPool, live []v1alpha1.Runner) (time.Duration, error) {
	now := r.Now()
	var next time.Duration
	for i := range live {
		rn := &live[i]
		if rn.Status.StartedAt != nil || rn.Status.Stop != nil || !rn.DeletionTimestamp.IsZero() {
			continue
		}
		if left := rn.CreationTimestamp.Add(startDeadline(pool)).Sub(now); left > 0 {
			// Its pod is read only once the deadline is past, to say what held it.
			if next == 0 || left < next {
				next = left
			}
			continue
		}
		var pod *corev1.Pod
		var p corev1.Pod
		if err := r.Client.Get(ctx, client.ObjectKey{Namespace: rn.Namespace, Name: runnerpod.PodName(rn)}, &p); err == nil {
			pod = &p
		}
		stop := StartDeadlineStop(pool, rn, pod, now)
		if stop == nil {
			continue
		}
		if err := r.requestStop(ctx, rn, stop); err != nil {
			return 0, err
		}
		logf.FromContext(ctx).Info("runner missed its start deadline", "runner", rn.Name, "why", stop.Message)
	}
	return next, nil
}

// announceGivenUp tells, with a Warning Event on the pool, that no more runners are made for a job.
func (r *Reconciler) announceGivenUp(pool *v1alpha1.RunnerPool, rec v1alpha1.RunnerRecord) {
	if r.Recorder == nil {
		return
	}
	r.Recorder.Eventf(pool, nil, corev1.EventTypeWarning, "JobGivenUp", "Dispatch",
		"job %d: %d runners failed (the last: %s %s); no more runners are made for it, see status.recentRunners",
		rec.JobID, maxFailuresPerJob(pool), rec.Outcome, truncate(rec.Reason, 64))
}
