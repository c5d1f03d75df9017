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
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/runnerpod"
)

// ConditionDeregistered is True once the runner's Forgejo registration is known to be gone.
const ConditionDeregistered = "Deregistered"

// RunnerContainer is the container whose exit code is the runner's.
const RunnerContainer = "runner"

// Forgejo-runner's exit codes (`one-job`, 12.8.2 and later).
const (
	ExitTaskRan = 0
	ExitNoTask  = 2
)

// ensureRegistration registers the runner with Forgejo and writes its token to the runner's
// Secret, once. A registration whose token was lost before it reached the Secret is deleted
// and made again: the token is shown only once.
func (r *Reconciler) ensureRegistration(ctx context.Context, fj *lazyForgejo, pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner) error {
	log := logf.FromContext(ctx)
	secretKey := client.ObjectKey{Namespace: runner.Namespace, Name: runnerpod.SecretName(runner)}
	if runner.Status.Registration != nil {
		err := r.Client.Get(ctx, secretKey, &corev1.Secret{})
		if err == nil || !apierrors.IsNotFound(err) {
			return client.IgnoreNotFound(err)
		}
		log.Info("runner token lost before it was stored; registering anew", "uuid", runner.Status.Registration.UUID)
		if err := deregister(ctx, fj, runner); err != nil {
			return err
		}
		runner.Status.Registration = nil
		meta.RemoveStatusCondition(&runner.Status.Conditions, ConditionDeregistered)
	}

	c, err := fj.get()
	if err != nil {
		return err
	}
	reg, err := c.RegisterRunner(ctx, RegistrationName(runner), Description(pool, runner), runner.Spec.Mode == v1alpha1.ModeEphemeral)
	if err != nil {
		return fmt.Errorf("register runner %s: %w", runner.Name, err)
	}
	secret, err := runnerpod.BuildSecret(pool, runner, reg.Token)
	if err != nil {
		return fmt.Errorf("build token Secret of runner %s: %w", runner.Name, err)
	}
	// A Secret left by an earlier attempt holds a token of a deleted registration.
	if err := r.Client.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: secret.Namespace, Name: secret.Name}}); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("delete stale token Secret %s: %w", secret.Name, err)
	}
	if err := r.Client.Create(ctx, secret); err != nil {
		return fmt.Errorf("create token Secret %s: %w", secret.Name, err)
	}
	now := metav1.NewTime(r.Now())
	runner.Status.Registration = &v1alpha1.Registration{ID: reg.ID, UUID: reg.UUID, Name: RegistrationName(runner), RegisteredAt: &now}
	runner.Status.CredentialsSecret = secret.Name
	runner.Status.Phase = v1alpha1.RunnerRegistered
	runner.Status.ObservedGeneration = runner.Generation
	if err := r.Client.Status().Update(ctx, runner); err != nil {
		return fmt.Errorf("record registration of runner %s: %w", runner.Name, err)
	}
	log.Info("registered runner", "uuid", reg.UUID, "forgejoID", reg.ID)
	return nil
}

// ensurePod creates the runner's pod unless it exists, and returns it.
func (r *Reconciler) ensurePod(ctx context.Context, pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner) (*corev1.Pod, error) {
	var pod corev1.Pod
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: runner.Namespace, Name: runnerpod.PodName(runner)}, &pod)
	if err == nil || !apierrors.IsNotFound(err) {
		return &pod, err
	}
	built, err := runnerpod.BuildPod(pool, runner)
	if err != nil {
		return nil, fmt.Errorf("build pod of runner %s: %w", runner.Name, err)
	}
	if err := r.Client.Create(ctx, built); err != nil {
		return nil, fmt.Errorf("create pod of runner %s: %w", runner.Name, err)
	}
	runner.Status.Workload = built.Name
	runner.Status.Phase = v1alpha1.RunnerStarting
	if err := r.Client.Status().Update(ctx, runner); err != nil {
		return nil, fmt.Errorf("record pod of runner %s: %w", runner.Name, err)
	}
	logf.FromContext(ctx).Info("created runner pod", "pod", built.Name)
	return built, nil
}

// observePod moves the runner along with its pod: started when it runs, ended when it ends.
func (r *Reconciler) observePod(ctx context.Context, fj *lazyForgejo, runner *v1alpha1.Runner, pod *corev1.Pod) error {
	switch pod.Status.Phase {
	case corev1.PodRunning:
		if runner.Status.StartedAt != nil {
			return nil
		}
		now := metav1.NewTime(r.Now())
		runner.Status.StartedAt = &now
		runner.Status.Phase = v1alpha1.RunnerIdle
		if err := r.Client.Status().Update(ctx, runner); err != nil {
			return fmt.Errorf("record start of runner %s: %w", runner.Name, err)
		}
		return nil
	case corev1.PodSucceeded, corev1.PodFailed:
		outcome, exitCode, reason := PodOutcome(pod)
		now := metav1.NewTime(r.Now())
		runner.Status.FinishedAt = &now
		runner.Status.ExitCode = exitCode
		runner.Status.Outcome = outcome
		if r.Jobs != nil && runner.Spec.Job != nil {
			if result, ok := r.Jobs.Result(types.NamespacedName{Namespace: runner.Namespace, Name: runner.Spec.PoolName}, runner.Spec.Job.Handle); ok {
				runner.Status.JobResult = result
			}
		}
		runner.Status.Phase = v1alpha1.RunnerFinished
		if outcome == v1alpha1.OutcomeFailed || outcome == v1alpha1.OutcomeError {
			runner.Status.Phase = v1alpha1.RunnerFailed
		}
		meta.SetStatusCondition(&runner.Status.Conditions, metav1.Condition{
			Type: "Ended", Status: metav1.ConditionTrue, Reason: reason, ObservedGeneration: runner.Generation,
			Message: fmt.Sprintf("runner pod %s ended: %s", pod.Name, outcome),
		})
		if err := r.Client.Status().Update(ctx, runner); err != nil {
			return fmt.Errorf("record end of runner %s: %w", runner.Name, err)
		}
		logf.FromContext(ctx).Info("runner ended", "outcome", outcome, "reason", reason)
		return r.cleanUp(ctx, fj, runner)
	}
	return nil
}

// PodOutcome reads how a finished runner pod ended from its runner container: forgejo-runner
// exits 0 when it ran a task, 2 when it received none, anything else on error. A pod that
// failed before its runner container ended (eviction, image pull, a failed sidecar) is Failed
// with the pod's own reason.
func PodOutcome(pod *corev1.Pod) (v1alpha1.RunnerOutcome, *int32, string) {
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name != RunnerContainer || cs.State.Terminated == nil {
			continue
		}
		code := cs.State.Terminated.ExitCode
		switch code {
		case ExitTaskRan:
			return v1alpha1.OutcomeSucceeded, &code, "TaskRan"
		case ExitNoTask:
			return v1alpha1.OutcomeNoJob, &code, "NoTask"
		default:
			return v1alpha1.OutcomeFailed, &code, "RunnerError"
		}
	}
	reason := pod.Status.Reason
	if reason == "" {
		reason = "PodFailed"
	}
	return v1alpha1.OutcomeFailed, nil, reason
}

// cleanUp makes sure an ended runner's registration is gone and its pod deleted; the pool
// controller records the runner and deletes it.
func (r *Reconciler) cleanUp(ctx context.Context, fj *lazyForgejo, runner *v1alpha1.Runner) error {
	if !meta.IsStatusConditionTrue(runner.Status.Conditions, ConditionDeregistered) {
		if err := deregister(ctx, fj, runner); err != nil {
			return err
		}
		meta.SetStatusCondition(&runner.Status.Conditions, metav1.Condition{
			Type: ConditionDeregistered, Status: metav1.ConditionTrue, Reason: "Deleted",
			Message: "the Forgejo registration is gone", ObservedGeneration: runner.Generation,
		})
		if err := r.Client.Status().Update(ctx, runner); err != nil {
			return fmt.Errorf("record deregistration of runner %s: %w", runner.Name, err)
		}
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: runner.Namespace, Name: runnerpod.PodName(runner)}}
	if err := r.Client.Delete(ctx, pod); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("delete pod of runner %s: %w", runner.Name, err)
	}
	return nil
}

// deregister deletes the runner's registration. Forgejo deletes an ephemeral runner itself once
// its task ends, so a 404 means done. Forgejo 15 also answers 404 for what the token may not see,
// but this registration was made in this scope with this token; should the token have lost the
// scope since, the registration is not lost track of: the pool's garbage collection lists the
// scope, reports that it cannot, and deletes the registration once it can.
func deregister(ctx context.Context, fj *lazyForgejo, runner *v1alpha1.Runner) error {
	reg := runner.Status.Registration
	if reg == nil || meta.IsStatusConditionTrue(runner.Status.Conditions, ConditionDeregistered) {
		return nil
	}
	c, err := fj.get()
	if err != nil {
		return err
	}
	err = c.DeleteRunner(ctx, reg.ID)
	if err == nil {
		logf.FromContext(ctx).Info("deleted runner registration", "uuid", reg.UUID)
		return nil
	}
	if errors.Is(err, forgejo.ErrNotFound) {
		return nil
	}
	return fmt.Errorf("delete registration %s of runner %s: %w", reg.UUID, runner.Name, err)
}

// RegistrationName is the runner's name in Forgejo: namespace and Runner name, so that a
// registration can be traced back to its object.
func RegistrationName(runner *v1alpha1.Runner) string {
	return runner.Namespace + "." + runner.Name
}

// DescriptionPrefix starts the description of every registration the operator makes; a
// registration without it is never touched by the operator's garbage collection.
const DescriptionPrefix = "managed by forgejo-runner-operator"

// Description marks a registration with the pool that owns it, so an orphan (a registration
// whose Runner is gone, e.g. after a crash between registering and recording it) can be
// recognised and removed.
func Description(pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner) string {
	return fmt.Sprintf("%s; pool=%s/%s; pool-uid=%s; runner=%s", DescriptionPrefix, pool.Namespace, pool.Name, pool.UID, runner.Name)
}

// jobCheckInterval is how often an idle runner bound to a job looks whether its job was picked.
const jobCheckInterval = 2 * time.Second

// observeJob marks a running runner Busy once its job is seen running (by a poll or a webhook),
// so `kubectl get runners` tells waiting runners from working ones.
func (r *Reconciler) observeJob(ctx context.Context, runner *v1alpha1.Runner) (ctrl.Result, error) {
	if r.Jobs == nil || runner.Spec.Job == nil || runner.Status.Phase != v1alpha1.RunnerIdle {
		return ctrl.Result{}, nil
	}
	job, ok := r.Jobs.Job(types.NamespacedName{Namespace: runner.Namespace, Name: runner.Spec.PoolName}, runner.Spec.Job.Handle)
	if !ok || job.Status != "running" {
		return ctrl.Result{RequeueAfter: jobCheckInterval}, nil
	}
	runner.Status.Phase = v1alpha1.RunnerBusy
	meta.SetStatusCondition(&runner.Status.Conditions, metav1.Condition{
		Type: "JobPicked", Status: metav1.ConditionTrue, Reason: "JobRunning", ObservedGeneration: runner.Generation,
		Message: fmt.Sprintf("job %d is running", job.ID),
	})
	if err := r.Client.Status().Update(ctx, runner); err != nil {
		return ctrl.Result{}, fmt.Errorf("mark runner %s busy: %w", runner.Name, err)
	}
	return ctrl.Result{}, nil
}
