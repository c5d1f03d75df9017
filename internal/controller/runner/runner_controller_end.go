package runner

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/audit"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/journal"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/runnerpod"
)

// RegistrationState is what Forgejo says of a runner's registration after its process ended.
type RegistrationState int

const (
	// RegistrationNotChecked: not asked (the exit code alone decides).
	RegistrationNotChecked RegistrationState = iota
	// RegistrationPresent: Forgejo still has it. Forgejo deletes an ephemeral runner as soon as
	// its task ends (routers/api/actions/runner UpdateTask, services/actions StopTask), so a
	// runner that exited 0 and is still registered ran no task.
	RegistrationPresent
	// RegistrationGone: Forgejo answers 404 for it in a scope the token can see.
	RegistrationGone
)

// End is how a runner ended, as its pool's history and event log record it.
type End struct {
	Outcome v1alpha1.RunnerOutcome
	Reason  string
	Message string
}

// EndInput is what is known when a runner's process has ended.
type EndInput struct {
	// Pod names the runner's pod.
	Pod string
	// ExitCode of the runner container; nil when the pod ended (or went) without one.
	ExitCode *int32
	// PodReason is the pod's own reason when it failed without an exit code.
	PodReason string
	// Stop is the operator's stop, if it stopped the runner.
	Stop *v1alpha1.RunnerStop
	// JobSeenRunning: the runner's job was seen running (the runner was Busy).
	JobSeenRunning bool
	// Registration is what Forgejo says of the registration now; checked for exit code 0.
	Registration RegistrationState
}

// NeedsRegistrationCheck says whether EndOf needs to know whether the registration is still
// there: only exit code 0 is ambiguous (a task ran, or the runner was stopped while it waited).
func NeedsRegistrationCheck(exitCode *int32) bool {
	return exitCode != nil && *exitCode == ExitTaskRan
}

// EndOf reads how a runner ended. forgejo-runner one-job exits 0 after a task and also when
// SIGTERM stops it while it still waits for one, 2 when it got no task, anything else on an
// error. Exit 0 is told apart by the registration: Forgejo deletes an ephemeral runner once its
// task ends, so one still registered ran nothing. A runner the operator stopped is never
// recorded as having run a job unless it did.
func EndOf(in EndInput) End {
	stopEnd := func(detail string) End {
		msg := in.Stop.Message
		if detail != "" {
			msg += " (" + detail + ")"
		}
		return End{Outcome: in.Stop.Outcome, Reason: in.Stop.Reason, Message: msg}
	}
	switch {
	case in.ExitCode == nil && in.Stop != nil:
		return stopEnd("runner pod " + in.Pod + " stopped")
	case in.ExitCode == nil:
		reason := in.PodReason
		if reason == "" {
			reason = "PodFailed"
		}
		return End{Outcome: v1alpha1.OutcomeFailed, Reason: reason, Message: fmt.Sprintf("runner pod %s failed: %s", in.Pod, reason)}
	case *in.ExitCode == ExitNoTask:
		return End{Outcome: v1alpha1.OutcomeNoJob, Reason: "NoTask", Message: fmt.Sprintf("runner pod %s ended: no task received (exit 2)", in.Pod)}
	case *in.ExitCode != ExitTaskRan && in.Stop != nil:
		return stopEnd(fmt.Sprintf("runner pod %s exited %d when stopped", in.Pod, *in.ExitCode))
	case *in.ExitCode != ExitTaskRan:
		return End{Outcome: v1alpha1.OutcomeFailed, Reason: "RunnerError", Message: fmt.Sprintf("runner pod %s ended: runner error (exit %d)", in.Pod, *in.ExitCode)}
	case in.Registration == RegistrationPresent && in.Stop != nil:
		return stopEnd("exit 0 with its registration still in Forgejo: no task ran")
	case in.Registration == RegistrationPresent:
		return End{Outcome: v1alpha1.OutcomeStopped, Reason: "StoppedWhileWaiting", Message: fmt.Sprintf(
			"runner pod %s exited 0 but its registration is still in Forgejo, which deletes an ephemeral runner once its task ends: "+
				"the runner was stopped (SIGTERM) while it waited, and ran no task", in.Pod)}
	case in.Stop != nil && in.Stop.Outcome == v1alpha1.OutcomeRegistrationGone && !in.JobSeenRunning:
		return stopEnd("")
	default:
		return End{Outcome: v1alpha1.OutcomeSucceeded, Reason: "TaskRan", Message: fmt.Sprintf("runner pod %s ended: a task ran (exit 0)", in.Pod)}
	}
}

// registrationState asks Forgejo whether the runner's registration is still there. A 404 is
// believed only once the scope itself is seen to be visible: a token that lost its permission
// also gets 404s.
func (r *Reconciler) registrationState(ctx context.Context, fj *lazyForgejo, runner *v1alpha1.Runner) (RegistrationState, error) {
	reg := runner.Status.Registration
	if reg == nil {
		return RegistrationGone, nil
	}
	c, err := fj.get()
	if err != nil {
		return RegistrationNotChecked, err
	}
	got, err := c.GetRunner(ctx, reg.ID)
	if err == nil && got.UUID == reg.UUID {
		return RegistrationPresent, nil
	}
	if err == nil {
		r.registrationGone.Store(runner.UID, true)
		return RegistrationGone, nil // the id names another runner: ours is gone
	}
	if err = c.ClassifyNotFound(ctx, err); errors.Is(err, forgejo.ErrGone) {
		r.registrationGone.Store(runner.UID, true)
		return RegistrationGone, nil
	}
	return RegistrationNotChecked, fmt.Errorf("check registration %s of runner %s: %w", reg.UUID, runner.Name, err)
}

// recordEnd records how the runner ended and moves it to Finished or Failed; cleanUp follows.
func (r *Reconciler) recordEnd(ctx context.Context, fj *lazyForgejo, runner *v1alpha1.Runner, in EndInput) error {
	in.Stop = runner.Status.Stop
	in.JobSeenRunning = runner.Status.Phase == v1alpha1.RunnerBusy
	if NeedsRegistrationCheck(in.ExitCode) {
		state, err := r.registrationState(ctx, fj, runner)
		if err != nil {
			return err
		}
		in.Registration = state
	}
	end := EndOf(in)
	now := metav1.NewTime(r.Now())
	runner.Status.FinishedAt = &now
	runner.Status.ExitCode = in.ExitCode
	runner.Status.Outcome = end.Outcome
	if r.Jobs != nil && runner.Spec.Job != nil {
		if result, ok := r.Jobs.Result(types.NamespacedName{Namespace: runner.Namespace, Name: runner.Spec.PoolName}, runner.Spec.Job.Handle); ok {
			runner.Status.JobResult = result
		}
	}
	phase := v1alpha1.RunnerFinished
	if end.Outcome == v1alpha1.OutcomeFailed || end.Outcome == v1alpha1.OutcomeError {
		phase = v1alpha1.RunnerFailed
	}
	r.Journal.Runner(runner, journal.Transition(runner, string(phase), end.Reason, end.Message).
		WithDuration(journal.DurationExecution, now.Sub(r.runningSince(runner))))
	r.podCreated.Delete(runner.UID)
	runner.Status.Phase = phase
	meta.SetStatusCondition(&runner.Status.Conditions, metav1.Condition{
		Type: "Ended", Status: metav1.ConditionTrue, Reason: end.Reason, ObservedGeneration: runner.Generation,
		Message: truncateMessage(end.Message),
	})
	if err := r.Client.Status().Update(ctx, runner); err != nil {
		return fmt.Errorf("record end of runner %s: %w", runner.Name, err)
	}
	return r.cleanUp(ctx, fj, runner)
}

func truncateMessage(s string) string {
	const limit = 32 * 1024 // metav1.Condition's message limit
	if len(s) > limit {
		return s[:limit]
	}
	return s
}

// stopInterval is how often a runner being stopped is looked at until its pod is gone.
const stopInterval = time.Second

// stop carries out the operator's stop of a runner: it deletes the pod (forgejo-runner gets
// SIGTERM) and, once the pod has ended or gone, records the end the stop explains.
func (r *Reconciler) stop(ctx context.Context, fj *lazyForgejo, runner *v1alpha1.Runner) (ctrl.Result, error) {
	var pod corev1.Pod
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: runner.Namespace, Name: runnerpod.PodName(runner)}, &pod)
	if err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, fmt.Errorf("get pod of runner %s: %w", runner.Name, err)
	}
	if apierrors.IsNotFound(err) || !metav1.IsControlledBy(&pod, runner) {
		// No pod of its own (never made, or gone): the stop is the end.
		return ctrl.Result{}, r.recordEnd(ctx, fj, runner, EndInput{Pod: runnerpod.PodName(runner)})
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return ctrl.Result{}, r.recordEnd(ctx, fj, runner, podEnd(&pod))
	}
	if pod.DeletionTimestamp.IsZero() {
		trigger := "runner stopped: " + runner.Status.Stop.Reason
		if err := r.Client.Delete(ctx, &pod, client.Preconditions{UID: &pod.UID}); client.IgnoreNotFound(err) != nil && !apierrors.IsConflict(err) {
			return ctrl.Result{}, fmt.Errorf("stop runner %s: delete pod: %w", runner.Name, err)
		}
		r.audit(runner, audit.ActionPodDeleted, "pod.deleted:"+string(pod.UID), "pod "+pod.Namespace+"/"+pod.Name, trigger)
		logf.FromContext(ctx).Info("stopping runner", "runner", runner.Name, "reason", runner.Status.Stop.Reason)
	}
	return ctrl.Result{RequeueAfter: stopInterval}, nil
}

// podEnd reads an ended pod's runner container exit code, or the pod's reason without one.
func podEnd(pod *corev1.Pod) EndInput {
	in := EndInput{Pod: pod.Name, PodReason: pod.Status.Reason}
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == RunnerContainer && cs.State.Terminated != nil {
			code := cs.State.Terminated.ExitCode
			in.ExitCode = &code
		}
	}
	return in
}
