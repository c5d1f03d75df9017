package runnerpool

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
)

// ReasonPrivilegedDinDNotAllowed is the Ready reason of a pool that asks for Privileged DinD
// where the cluster admin has not allowed it.
const ReasonPrivilegedDinDNotAllowed = "PrivilegedDinDNotAllowed"

// DefaultNamespaceTTL is how long a namespace's allow label, once read, is trusted.
const DefaultNamespaceTTL = 10 * time.Second

// PrivilegeGate decides whether a pool may run Privileged DinD. Whoever may create a RunnerPool
// must not thereby get root on a node: that takes the cluster admin's consent, given for every
// namespace (the operator's --allow-privileged-dind) or for one (the namespace label
// v1alpha1.AllowPrivilegedDinDLabel, which pool authors cannot set on their own).
type PrivilegeGate struct {
	// AllowAll lets every namespace run Privileged DinD.
	AllowAll bool
	// Namespaces reads Namespace objects. It should read the API server, not a cache: a
	// Namespace is read only for pools that ask for privilege, and caching every Namespace
	// would need cluster-wide list and watch. Nil allows no namespace by label.
	Namespaces client.Reader
	// TTL is how long a read label is trusted (default DefaultNamespaceTTL): a pool is
	// reconciled often, and revoking the label takes effect within TTL.
	TTL time.Duration

	mu   sync.Mutex
	seen map[string]namespaceLook
}

type namespaceLook struct {
	allowed bool
	err     error
	at      time.Time
}

// allowed reports whether pools in namespace may run Privileged DinD, and if not, why not in
// words that say what to set.
func (g *PrivilegeGate) allowed(ctx context.Context, namespace string, now time.Time) (bool, string) {
	if g.AllowAll {
		return true, ""
	}
	how := fmt.Sprintf("the cluster admin allows it by labelling namespace %q with %s=true, or for every namespace by starting the operator with --allow-privileged-dind",
		namespace, v1alpha1.AllowPrivilegedDinDLabel)
	if g.Namespaces == nil {
		return false, how
	}
	look := g.look(ctx, namespace, now)
	if look.err != nil {
		return false, fmt.Sprintf("the operator cannot read namespace %q to check its %s label (%v); %s",
			namespace, v1alpha1.AllowPrivilegedDinDLabel, look.err, how)
	}
	return look.allowed, how
}

func (g *PrivilegeGate) look(ctx context.Context, namespace string, now time.Time) namespaceLook {
	ttl := g.TTL
	if ttl <= 0 {
		ttl = DefaultNamespaceTTL
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if l, ok := g.seen[namespace]; ok && now.Sub(l.at) < ttl {
		return l
	}
	var ns corev1.Namespace
	l := namespaceLook{at: now}
	if err := g.Namespaces.Get(ctx, client.ObjectKey{Name: namespace}, &ns); err != nil {
		l.err = fmt.Errorf("get namespace %s: %w", namespace, err)
	} else {
		l.allowed = ns.Labels[v1alpha1.AllowPrivilegedDinDLabel] == "true"
	}
	if g.seen == nil {
		g.seen = map[string]namespaceLook{}
	}
	// Entries of namespaces no pool asks about any more would otherwise stay for ever.
	for name, old := range g.seen {
		if now.Sub(old.at) >= ttl {
			delete(g.seen, name)
		}
	}
	g.seen[namespace] = l
	return l
}

// privilegeRefusal says why pool may not run, or "" when it may: only a kubernetes pool asking
// for Privileged DinD can be refused.
func (r *Reconciler) privilegeRefusal(ctx context.Context, pool *v1alpha1.RunnerPool) string {
	if pool.Spec.Backend == v1alpha1.BackendRemote || pool.Spec.DinD.EffectiveMode() != v1alpha1.DinDPrivileged {
		return ""
	}
	ok, how := r.Privilege.allowed(ctx, pool.Namespace, r.Now())
	if ok {
		return ""
	}
	return "spec.dind.mode is Privileged (or the deprecated spec.dind.enabled is true), which lets any job become root on its node; " +
		how + "; or set spec.dind.mode to Rootless or None"
}

// refusePrivileged stops a pool that asks for Privileged DinD without the admin's consent: it
// makes no Runner, ends those that have no job running yet (their pods would be privileged, and
// consent may have been withdrawn since they were made), and says in Ready what to set. It
// reports whether it refused; when it did, the reconcile ends with its result.
func (r *Reconciler) refusePrivileged(ctx context.Context, pool *v1alpha1.RunnerPool, status *v1alpha1.RunnerPoolStatus, live []v1alpha1.Runner) (bool, reconcile.Result, error) {
	msg := r.privilegeRefusal(ctx, pool)
	if msg == "" {
		return false, reconcile.Result{}, nil
	}
	// No demand is tracked for the pool, so the dispatcher gives its jobs to pools that can run them.
	r.Watcher.Unregister(client.ObjectKeyFromObject(pool))
	for i := range live {
		if live[i].Status.Phase == v1alpha1.RunnerBusy || !live[i].DeletionTimestamp.IsZero() {
			continue // a running job finishes; its pod already exists
		}
		if err := r.deleteRunner(ctx, &live[i], ReasonPrivilegedDinDNotAllowed, "the pool may not run Privileged DinD here"); err != nil {
			return true, reconcile.Result{}, fmt.Errorf("delete runner %s of a pool refused privilege: %w", live[i].Name, err)
		}
	}
	if c := meta.FindStatusCondition(status.Conditions, ConditionReady); c == nil || c.Reason != ReasonPrivilegedDinDNotAllowed {
		logf.FromContext(ctx).Info("pool refused: Privileged DinD is not allowed in its namespace", "pool", pool.Name, "namespace", pool.Namespace)
		if r.Recorder != nil {
			r.Recorder.Eventf(pool, nil, corev1.EventTypeWarning, ReasonPrivilegedDinDNotAllowed, "RefusePrivilege", "%s", msg)
		}
	}
	meta.SetStatusCondition(&status.Conditions, metav1.Condition{Type: ConditionReady, Status: metav1.ConditionFalse,
		Reason: ReasonPrivilegedDinDNotAllowed, Message: msg, ObservedGeneration: pool.Generation})
	result, err := r.done(r.updateStatus(ctx, pool, status))
	return true, result, err
}
