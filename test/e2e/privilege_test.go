package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/controller/runnerpool"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/runnerpod"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/eventually"
)

// A pool that asks for Privileged DinD in a namespace the admin has not labelled gets no Runner
// and no pod, and Ready says what to set; the label lets it run privileged pods, and taking the
// label away ends the runners that have no job.
func TestPrivilegedDinDNeedsTheAdminsConsent(t *testing.T) {
	w := startWorld(t)
	ctx := t.Context()
	c := w.cluster.Client
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "tenant"}}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "token", Namespace: ns.Name}, StringData: map[string]string{"token": "admin-token"}}
	pool := &v1alpha1.RunnerPool{
		ObjectMeta: metav1.ObjectMeta{Name: "root", Namespace: ns.Name},
		Spec: v1alpha1.RunnerPoolSpec{
			Forgejo: v1alpha1.ForgejoConnection{URL: w.url, Scope: v1alpha1.ScopeGlobal, TokenSecretRef: v1alpha1.SecretKeySelector{Name: secret.Name}},
			Labels:  []string{"docker:docker://node:22-bookworm"},
			Scaling: v1alpha1.Scaling{MinIdle: 1, MaxRunners: 2},
			DinD:    v1alpha1.DinD{Enabled: ptr.To(true)}, // the deprecated spelling of Privileged
		},
	}
	for _, obj := range []client.Object{ns, secret, pool} {
		if err := c.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	ready := func() *metav1.Condition {
		var got v1alpha1.RunnerPool
		if err := c.Get(ctx, client.ObjectKeyFromObject(pool), &got); err != nil {
			t.Fatal(err)
		}
		return meta.FindStatusCondition(got.Status.Conditions, runnerpool.ConditionReady)
	}
	refused := func() (bool, string) {
		cond := ready()
		return cond != nil && cond.Reason == runnerpool.ReasonPrivilegedDinDNotAllowed, fmt.Sprintf("Ready %+v", cond)
	}
	eventually.True(t, time.Minute, "the pool refused", refused)
	if msg := ready().Message; !strings.Contains(msg, v1alpha1.AllowPrivilegedDinDLabel+"=true") || !strings.Contains(msg, "--allow-privileged-dind") {
		t.Errorf("Ready message %q does not say what to set", msg)
	}
	// The refusal comes before any scale-up, in every reconcile: nothing was ever made.
	if rs, pods := w.runnersIn(t, ns.Name), w.podsIn(t, ns.Name); len(rs) != 0 || len(pods) != 0 {
		t.Fatalf("a refused pool has %d Runners and %d pods", len(rs), len(pods))
	}

	setLabel := func(value *string) {
		t.Helper()
		if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := c.Get(ctx, client.ObjectKeyFromObject(ns), ns); err != nil {
				return err
			}
			if ns.Labels == nil {
				ns.Labels = map[string]string{}
			}
			if value == nil {
				delete(ns.Labels, v1alpha1.AllowPrivilegedDinDLabel)
			} else {
				ns.Labels[v1alpha1.AllowPrivilegedDinDLabel] = *value
			}
			return c.Update(ctx, ns)
		}); err != nil {
			t.Fatal(err)
		}
	}
	setLabel(ptr.To("true"))
	eventually.True(t, time.Minute, "a warm runner's pod with a privileged Docker sidecar", func() (bool, string) {
		for _, pod := range w.podsIn(t, ns.Name) {
			for _, ic := range pod.Spec.InitContainers {
				if ic.Name == runnerpod.DinDContainerName && ptr.Deref(ic.SecurityContext.Privileged, false) {
					return true, ""
				}
			}
		}
		return false, fmt.Sprintf("%d pods", len(w.podsIn(t, ns.Name)))
	})

	// Consent withdrawn: the idle runner goes, and no other comes.
	setLabel(nil)
	eventually.True(t, time.Minute, "the pool refused again and its idle runner gone", func() (bool, string) {
		ok, why := refused()
		n := len(w.runnersIn(t, ns.Name))
		return ok && n == 0, fmt.Sprintf("%s, %d runners", why, n)
	})
}

func (w *world) runnersIn(t *testing.T, namespace string) []v1alpha1.Runner {
	t.Helper()
	var list v1alpha1.RunnerList
	if err := w.cluster.Client.List(t.Context(), &list, client.InNamespace(namespace)); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func (w *world) podsIn(t *testing.T, namespace string) []corev1.Pod {
	t.Helper()
	var list corev1.PodList
	if err := w.cluster.Client.List(t.Context(), &list, client.InNamespace(namespace)); err != nil {
		t.Fatal(err)
	}
	return list.Items
}
