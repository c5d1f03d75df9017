package runner

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/audit"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/opmetrics"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/poolconn"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/runnerpod"
)

// DefaultDeregisterDeadline is how long a Runner being deleted waits, from its deletion, for its
// registration to be confirmed gone before it is let go without: long enough to ride out a
// Forgejo restart, short enough that a namespace being deleted does not hang.
const DefaultDeregisterDeadline = 10 * time.Minute

// ReasonDeregistrationAbandoned is the reason of the Warning Event a Runner gets when it is let
// go at its deregistration deadline.
const ReasonDeregistrationAbandoned = "DeregistrationAbandoned"

// Retries of a failed deregistration before the deadline: a second at first, a quarter of the
// time since the deletion later on, at most deregisterRetryMax apart.
const (
	deregisterRetryMin = time.Second
	deregisterRetryMax = 30 * time.Second
)

// errPoolGone says the Runner's pool no longer exists, so its token cannot be read.
var errPoolGone = errors.New("the runner's RunnerPool is gone")

// deregisterDecision says, for a Runner deleted at deletedAt, whether its deregistration is to be
// given up (the deadline has passed: one more attempt, and then the Runner goes whatever the
// answer) and otherwise when to try again: soon at first, less often as the failure lasts, never
// after the deadline.
func deregisterDecision(deletedAt, now time.Time, deadline time.Duration) (giveUp bool, retryIn time.Duration) {
	elapsed := now.Sub(deletedAt)
	if elapsed >= deadline {
		return true, 0
	}
	retryIn = min(max(elapsed/4, deregisterRetryMin), deregisterRetryMax)
	return false, min(retryIn, deadline-elapsed)
}

// abandonReason names why deregistering failed, for the metric's reason label.
func abandonReason(err error) string {
	switch {
	case errors.Is(err, errPoolGone):
		return opmetrics.AbandonedPoolGone
	case errors.Is(err, poolconn.ErrTokenSecret):
		return opmetrics.AbandonedTokenUnavailable
	}
	return opmetrics.AbandonedForgejoError
}

func (r *Reconciler) deregisterDeadline() time.Duration {
	if r.DeregisterDeadline > 0 {
		return r.DeregisterDeadline
	}
	return DefaultDeregisterDeadline
}

// podGone reports whether the runner's own pod is gone from the cache; a pod of an earlier
// Runner of the same name is not its.
func (r *Reconciler) podGone(ctx context.Context, runner *v1alpha1.Runner) (bool, error) {
	var pod corev1.Pod
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: runner.Namespace, Name: runnerpod.PodName(runner)}, &pod)
	if apierrors.IsNotFound(err) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("get pod of runner %s: %w", runner.Name, err)
	}
	return !metav1.IsControlledBy(&pod, runner), nil
}

// abandonDeregistration lets a Runner go without its registration confirmed gone: the
// deadline has passed and the last attempt failed with cause. It says so in a Warning Event on
// the Runner, the audit log, the log and the metrics. The registration is not lost track of: it
// carries its pool's marker, and the pool's garbage collection deletes it if the pool still
// exists, as does the last pass when the pool is deleted.
func (r *Reconciler) abandonDeregistration(ctx context.Context, runner *v1alpha1.Runner, trigger string, cause error) {
	reason := abandonReason(cause)
	object := "registration of runner " + RegistrationName(runner) + " (not recorded)"
	id := "registration.abandoned:" + string(runner.UID)
	if reg := runner.Status.Registration; reg != nil {
		object = fmt.Sprintf("registration %d (uuid %s, name %s)", reg.ID, reg.UUID, reg.Name)
		id = "registration.abandoned:" + reg.UUID
	}
	message := fmt.Sprintf("gave up deregistering after %s (%s): %s; the %s may be left in Forgejo, "+
		"where the garbage collection of pool %s deletes it (it carries the pool's marker) if the pool still exists",
		r.deregisterDeadline(), reason, truncate(cause.Error(), 400), object, runner.Spec.PoolName)
	logf.FromContext(ctx).Error(cause, "deregistration deadline passed: the runner goes, its registration may be left for the pool's garbage collection",
		"runner", runner.Name, "reason", reason, "deadline", r.deregisterDeadline().String())
	if r.Recorder != nil {
		r.Recorder.Eventf(runner, nil, corev1.EventTypeWarning, ReasonDeregistrationAbandoned, "Deregister", "%s", message)
	}
	r.Metrics.DeregistrationAbandoned(runner.Namespace, runner.Spec.PoolName, reason)
	rec := r.auditRecord(runner, audit.ActionRegistrationAbandoned, id, object, trigger)
	rec.Details["result"] = "abandoned at the deregistration deadline; left for the pool's garbage collection"
	rec.Details["reason"] = reason
	rec.Details["error"] = truncate(cause.Error(), 400)
	r.Journal.Audit(rec)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// ClientMemory remembers the last Forgejo client built for each pool, by the pool's UID, so that
// a Runner can still be deregistered once its pool's token Secret cannot be read: deleting a
// namespace deletes the Secret along with the pool and its Runners, in no useful order. It is
// used only for deleting registrations, and only when the Secret cannot be read; it holds what
// the operator held anyway (each client carries its token), and nothing survives a restart.
type ClientMemory struct {
	clients sync.Map // types.UID -> *forgejo.Client
}

// Remember keeps c as the pool's latest client.
func (m *ClientMemory) Remember(pool types.UID, c *forgejo.Client) {
	if m != nil && pool != "" && c != nil {
		m.clients.Store(pool, c)
	}
}

// Last returns the pool's latest client, if one was built.
func (m *ClientMemory) Last(pool types.UID) (*forgejo.Client, bool) {
	if m == nil {
		return nil, false
	}
	c, ok := m.clients.Load(pool)
	if !ok {
		return nil, false
	}
	return c.(*forgejo.Client), true
}

// Forget drops the pool's client once the pool is gone.
func (m *ClientMemory) Forget(pool types.UID) {
	if m != nil {
		m.clients.Delete(pool)
	}
}
