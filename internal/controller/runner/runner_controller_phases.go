package runner

import (
	"context"
	"errors"
	"fmt"
	"strings"
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
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/poolconn"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/runnerpod"
)

// ConditionDeregistered is True once the runner's Forgejo registration is known to be gone.
const ConditionDeregistered = "Deregistered"

// ConditionRegistered is False, with what to fix, while Forgejo refuses to register the runner
// (a token that may list jobs but not register runners, say), and True once it is registered.
// The pool reports it in its ForgejoReachable condition.
const ConditionRegistered = "Registered"

// RunnerContainer is the container whose exit code is the runner's.
const RunnerContainer = "runner"

// Forgejo-runner's exit codes (`one-job`, 12.8.2 and later).
const (
	ExitTaskRan = 0
	ExitNoTask  = 2
)

// registrationTimeout bounds registering a runner and recording it, which shutdown does not
// interrupt.
const registrationTimeout = 30 * time.Second

// ensureRegistration registers the runner with Forgejo and writes its token to the runner's
// Secret, once. A registration whose token was lost before it reached the Secret is deleted
// and made again: the token is shown only once.
func (r *Reconciler) ensureRegistration(ctx context.Context, fj *lazyForgejo, pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner) error {
	log := logf.FromContext(ctx)
	secretKey := client.ObjectKey{Namespace: runner.Namespace, Name: runnerpod.SecretName(runner)}
	if runner.Status.Registration != nil {
		err := r.Client.Get(ctx, secretKey, &corev1.Secret{})
		if apierrors.IsNotFound(err) {
			// Ask past the cache before believing it: a Secret created a moment ago may not
			// be in it yet, and taking it for lost would throw away a good registration.
			err = r.APIReader.Get(ctx, secretKey, &corev1.Secret{})
		}
		if err == nil || !apierrors.IsNotFound(err) {
			return client.IgnoreNotFound(err)
		}
		log.Info("runner token lost before it was stored; registering anew", "uuid", runner.Status.Registration.UUID)
		if err := r.deregister(ctx, fj, runner, "runner token lost before it was stored"); err != nil {
			return err
		}
		runner.Status.Registration = nil
		meta.RemoveStatusCondition(&runner.Status.Conditions, ConditionDeregistered)
	} else if adopted, err := r.adoptRegistration(ctx, runner, secretKey); adopted || err != nil {
		return err
	}

	// Registering and recording the registration are one step: an operator shutting down in
	// between would leave a registration no Runner holds, for garbage collection to find, and
	// register the runner a second time after its restart. Manager shutdown waits for it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), registrationTimeout)
	defer cancel()
	c, err := fj.get()
	if err != nil {
		return err
	}
	started := r.Now()
	r.registering.Store(runner.UID, true)
	reg, err := c.RegisterRunner(ctx, RegistrationName(runner), Description(pool, runner), runner.Spec.Mode == v1alpha1.ModeEphemeral)
	if err != nil {
		err = fmt.Errorf("register runner %s: %w", runner.Name, err)
		if refused(err) {
			reason, message := poolconn.Explain(pool, err)
			if serr := r.setRegisteredCondition(ctx, runner, metav1.ConditionFalse, reason, message); serr != nil {
				return errors.Join(err, serr)
			}
		}
		return err
	}
	meta.SetStatusCondition(&runner.Status.Conditions, metav1.Condition{Type: ConditionRegistered, Status: metav1.ConditionTrue,
		Reason: "Registered", Message: "registered with Forgejo", ObservedGeneration: runner.Generation})
	r.audit(runner, audit.ActionRegistrationCreated, "registration.created:"+reg.UUID,
		fmt.Sprintf("registration %d (uuid %s, name %s)", reg.ID, reg.UUID, RegistrationName(runner)), createdBy(runner))
	secret, err := runnerpod.BuildSecret(pool, runner, reg.Token)
	if err != nil {
		return fmt.Errorf("build token Secret of runner %s: %w", runner.Name, err)
	}
	runnerpod.SetRegistration(secret, reg.ID, reg.UUID)
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
	r.Journal.Runner(runner, journal.Transition(runner, string(v1alpha1.RunnerRegistered), "Registered",
		fmt.Sprintf("registered with Forgejo as %s", RegistrationName(runner))).
		WithDuration(journal.DurationRegistration, now.Sub(started)))
	runner.Status.Phase = v1alpha1.RunnerRegistered
	runner.Status.ObservedGeneration = runner.Generation
	if err := r.Client.Status().Update(ctx, runner); err != nil {
		return fmt.Errorf("record registration of runner %s: %w", runner.Name, err)
	}
	return nil
}

// refused reports whether Forgejo answered a registration with a refusal the user has to fix
// (401, 403, 404), rather than failing to answer.
func refused(err error) bool {
	if _, ok := forgejo.Deny(err); ok {
		return true
	}
	return errors.Is(err, forgejo.ErrUnauthorized) || errors.Is(err, forgejo.ErrNotFound) || errors.Is(err, forgejo.ErrScopeNotVisible)
}

// setRegisteredCondition records why the runner is not registered, if that changed; the status
// update is what tells the pool.
func (r *Reconciler) setRegisteredCondition(ctx context.Context, runner *v1alpha1.Runner, status metav1.ConditionStatus, reason, message string) error {
	if !meta.SetStatusCondition(&runner.Status.Conditions, metav1.Condition{Type: ConditionRegistered, Status: status,
		Reason: reason, Message: message, ObservedGeneration: runner.Generation}) {
		return nil
	}
	if err := r.Client.Status().Update(ctx, runner); err != nil {
		return fmt.Errorf("record registration refusal of runner %s: %w", runner.Name, err)
	}
	return nil
}

// adoptRegistration recovers a registration whose token reached the runner's Secret but not
// the Runner's status (the operator stopped in between), instead of registering again and
// leaving the first registration to garbage collection. Its creation is already audited.
func (r *Reconciler) adoptRegistration(ctx context.Context, runner *v1alpha1.Runner, key client.ObjectKey) (bool, error) {
	var secret corev1.Secret
	err := r.Client.Get(ctx, key, &secret)
	if _, tried := r.registering.Load(runner.UID); tried && apierrors.IsNotFound(err) {
		// An earlier attempt of this process may have created the Secret a moment ago, and
		// then failed to update the status: the cache may not have it yet. (After a restart
		// the cache starts whole.) Registering again would orphan that registration.
		err = r.APIReader.Get(ctx, key, &secret)
	}
	if err != nil {
		return false, client.IgnoreNotFound(err)
	}
	id, uuid, ok := runnerpod.RegistrationOf(&secret, runner)
	if !ok {
		return false, nil // left by an earlier Runner of the same name: replaced when registering
	}
	now := metav1.NewTime(r.Now())
	runner.Status.Registration = &v1alpha1.Registration{ID: id, UUID: uuid, Name: RegistrationName(runner), RegisteredAt: &now}
	runner.Status.CredentialsSecret = secret.Name
	r.Journal.Runner(runner, journal.Transition(runner, string(v1alpha1.RunnerRegistered), "RegistrationRecovered",
		"registered before the operator restarted; recovered from the token Secret "+secret.Name))
	runner.Status.Phase = v1alpha1.RunnerRegistered
	runner.Status.ObservedGeneration = runner.Generation
	if err := r.Client.Status().Update(ctx, runner); err != nil {
		return false, fmt.Errorf("record recovered registration of runner %s: %w", runner.Name, err)
	}
	return true, nil
}

// errEarlierPod says the runner's pod name is still taken by the pod of an earlier Runner of
// the same name; the runner waits for it to go.
var errEarlierPod = errors.New("the pod of an earlier runner of the same name is still there")

// ensurePod creates the runner's pod unless it exists, and returns it; nil when the pod was
// refused and the runner ended.
func (r *Reconciler) ensurePod(ctx context.Context, pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner) (*corev1.Pod, error) {
	var pod corev1.Pod
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: runner.Namespace, Name: runnerpod.PodName(runner)}, &pod)
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("get pod of runner %s: %w", runner.Name, err)
	}
	if err == nil {
		if !metav1.IsControlledBy(&pod, runner) {
			// A job's next runner has the same name: the last one's pod is still going.
			return nil, errEarlierPod
		}
		if runner.Status.Workload == "" {
			// Created by an earlier reconcile that did not live to record it (a shutdown, a
			// failed status update): recorded now, so the pod's creation is not missing from
			// the records.
			return &pod, r.recordPod(ctx, runner, &pod)
		}
		return &pod, nil
	}
	built, err := runnerpod.BuildPod(pool, runner)
	if err != nil {
		return nil, fmt.Errorf("build pod of runner %s: %w", runner.Name, err)
	}
	if err := r.Client.Create(ctx, built); err != nil {
		if podRefused(err) {
			// Admission said no (PodSecurity, a quota, a policy): trying the same pod again
			// would be refused again. The runner ends with an Error the pool's history shows,
			// and the job gets another runner after the backoff.
			return nil, r.endUnstarted(ctx, runner, "PodRejected", "the API server rejected the runner pod: "+err.Error())
		}
		return nil, fmt.Errorf("create pod of runner %s: %w", runner.Name, err)
	}
	r.podCreated.Store(runner.UID, r.Now())
	return built, r.recordPod(ctx, runner, built)
}

// recordPod audits the creation of the runner's pod and moves the runner to Starting.
func (r *Reconciler) recordPod(ctx context.Context, runner *v1alpha1.Runner, pod *corev1.Pod) error {
	r.audit(runner, audit.ActionPodCreated, "pod.created:"+string(pod.UID), "pod "+runner.Namespace+"/"+pod.Name, createdBy(runner))
	r.Journal.Runner(runner, journal.Transition(runner, string(v1alpha1.RunnerStarting), "PodCreated", "created pod "+pod.Name))
	runner.Status.Workload = pod.Name
	runner.Status.Phase = v1alpha1.RunnerStarting
	if err := r.Client.Status().Update(ctx, runner); err != nil {
		return fmt.Errorf("record pod of runner %s: %w", runner.Name, err)
	}
	return nil
}

// observePod moves the runner along with its pod: started when it runs, ended when it ends.
func (r *Reconciler) observePod(ctx context.Context, fj *lazyForgejo, runner *v1alpha1.Runner, pod *corev1.Pod) error {
	switch pod.Status.Phase {
	case corev1.PodRunning:
		if runner.Status.StartedAt != nil {
			return nil
		}
		now := metav1.NewTime(r.Now())
		r.Journal.Runner(runner, journal.Transition(runner, string(v1alpha1.RunnerIdle), "RunnerStarted", "the runner container is running").
			WithDuration(journal.DurationStartup, now.Sub(r.podCreatedAt(runner, pod))))
		r.podCreated.Delete(runner.UID)
		runner.Status.StartedAt = &now
		runner.Status.Phase = v1alpha1.RunnerIdle
		if err := r.Client.Status().Update(ctx, runner); err != nil {
			return fmt.Errorf("record start of runner %s: %w", runner.Name, err)
		}
		return nil
	case corev1.PodSucceeded, corev1.PodFailed:
		return r.recordEnd(ctx, fj, runner, podEnd(pod))
	}
	return nil
}

// podRefused tells a pod admission refuses for good (PodSecurity, a policy, an invalid
// template) from a refusal that passes: a full quota, a namespace being deleted.
func podRefused(err error) bool {
	if apierrors.IsInvalid(err) {
		return true
	}
	return apierrors.IsForbidden(err) && !strings.Contains(err.Error(), "exceeded quota") &&
		!apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause)
}

// endUnstarted ends a runner the operator could not bring up, with the outcome Error. Its
// registration is deleted by cleanUp on the next reconcile.
func (r *Reconciler) endUnstarted(ctx context.Context, runner *v1alpha1.Runner, reason, message string) error {
	now := metav1.NewTime(r.Now())
	runner.Status.Outcome = v1alpha1.OutcomeError
	runner.Status.FinishedAt = &now
	// Written once the end is stored, unlike other transitions: should storing it fail, the
	// next attempt may well create the pod, and this event's id would shadow the real end.
	ev := journal.Transition(runner, string(v1alpha1.RunnerFailed), reason, message)
	runner.Status.Phase = v1alpha1.RunnerFailed
	meta.SetStatusCondition(&runner.Status.Conditions, metav1.Condition{
		Type: "Ended", Status: metav1.ConditionTrue, Reason: reason, ObservedGeneration: runner.Generation, Message: message,
	})
	if err := r.Client.Status().Update(ctx, runner); err != nil {
		return fmt.Errorf("record failure of runner %s: %w", runner.Name, err)
	}
	r.Journal.Runner(runner, ev)
	return nil
}

// cleanUp makes sure an ended runner's registration is gone and its pod deleted; the pool
// controller records the runner and deletes it.
func (r *Reconciler) cleanUp(ctx context.Context, fj *lazyForgejo, runner *v1alpha1.Runner) error {
	trigger := "runner ended: " + string(runner.Status.Outcome)
	if !meta.IsStatusConditionTrue(runner.Status.Conditions, ConditionDeregistered) {
		if err := r.deregister(ctx, fj, runner, trigger); err != nil {
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
	return r.deletePod(ctx, runner, trigger)
}

// deletePod deletes the runner's pod, if it is still there, and audits it. The pod would go
// with its Runner anyway, through its owner reference; deleting it here makes the operator the
// actor on record and stops a finished runner's sidecars at once.
func (r *Reconciler) deletePod(ctx context.Context, runner *v1alpha1.Runner, trigger string) error {
	var pod corev1.Pod
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: runner.Namespace, Name: runnerpod.PodName(runner)}, &pod)
	if apierrors.IsNotFound(err) || (err == nil && !pod.DeletionTimestamp.IsZero()) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get pod of runner %s: %w", runner.Name, err)
	}
	err = r.Client.Delete(ctx, &pod, client.Preconditions{UID: &pod.UID})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete pod of runner %s: %w", runner.Name, err)
	}
	r.audit(runner, audit.ActionPodDeleted, "pod.deleted:"+string(pod.UID), "pod "+pod.Namespace+"/"+pod.Name, trigger)
	return nil
}

// deregister deletes the runner's registration. Forgejo deletes an ephemeral runner itself once
// its task ends, so a 404 means done. Forgejo 15 also answers 404 for what the token may not see,
// but this registration was made in this scope with this token; should the token have lost the
// scope since, the registration is not lost track of: the pool's garbage collection lists the
// scope, reports that it cannot, and deletes the registration once it can.
func (r *Reconciler) deregister(ctx context.Context, fj *lazyForgejo, runner *v1alpha1.Runner, trigger string) error {
	if meta.IsStatusConditionTrue(runner.Status.Conditions, ConditionDeregistered) {
		return nil
	}
	reg := runner.Status.Registration
	if reg == nil {
		// Registered, but deleted before the registration reached the status: the token
		// Secret names it.
		var secret corev1.Secret
		if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: runner.Namespace, Name: runnerpod.SecretName(runner)}, &secret); err != nil {
			return client.IgnoreNotFound(err)
		}
		id, uuid, ok := runnerpod.RegistrationOf(&secret, runner)
		if !ok {
			return nil
		}
		reg = &v1alpha1.Registration{ID: id, UUID: uuid, Name: RegistrationName(runner)}
	}
	result, err := r.deleteRegistration(ctx, fj, runner, reg)
	if err != nil {
		return err
	}
	r.registrationGone.Delete(runner.UID)
	rec := r.auditRecord(runner, audit.ActionRegistrationDeleted, "registration.deleted:"+reg.UUID,
		fmt.Sprintf("registration %d (uuid %s, name %s)", reg.ID, reg.UUID, reg.Name), trigger)
	rec.Details["result"] = result
	r.Journal.Audit(rec)
	return nil
}

// deleteRegistration deletes the registration only once Forgejo shows it under its id with the
// UUID Forgejo gave the operator: the id is read from the Runner's status or its Secret's
// annotations, which anyone allowed to edit them could point at another runner of the scope. It
// returns what happened, for the audit log. Forgejo deletes an ephemeral runner once its task is done, so "already gone" is
// the common end; it is recorded all the same, so every registration created has its end on
// record.
func (r *Reconciler) deleteRegistration(ctx context.Context, fj *lazyForgejo, runner *v1alpha1.Runner, reg *v1alpha1.Registration) (string, error) {
	if _, gone := r.registrationGone.Load(runner.UID); gone {
		return "already gone (Forgejo did not have it when the runner ended)", nil
	}
	c, err := fj.get()
	if err != nil {
		return "", err
	}
	got, err := c.GetRunner(ctx, reg.ID)
	switch {
	case errors.Is(err, forgejo.ErrNotFound):
		return "already gone (Forgejo answered 404)", nil
	case err != nil:
		return "", fmt.Errorf("read registration %d of runner %s before deleting it: %w", reg.ID, runner.Name, err)
	case got.UUID != reg.UUID:
		return fmt.Sprintf("already gone (id %d names another runner, uuid %s: not deleted)", reg.ID, got.UUID), nil
	}
	err = c.DeleteRunner(ctx, reg.ID)
	if errors.Is(err, forgejo.ErrNotFound) {
		return "already gone (Forgejo answered 404)", nil
	}
	if err != nil {
		return "", fmt.Errorf("delete registration %s of runner %s: %w", reg.UUID, runner.Name, err)
	}
	return "deleted", nil
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
	ev := journal.Transition(runner, string(v1alpha1.RunnerBusy), "JobRunning", fmt.Sprintf("job %d is running", job.ID))
	if !job.SeenAt.IsZero() && !job.RunningSince.IsZero() {
		ev = ev.WithDuration(journal.DurationQueueWait, job.RunningSince.Sub(job.SeenAt))
	}
	r.Journal.Runner(runner, ev)
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
