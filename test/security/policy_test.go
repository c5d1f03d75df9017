package security

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/eventually"
)

const exemptLabel = "forgejo.brooktrails.org/allow-escalating-pod-fields"

func pool(namespace, name string, mutate ...func(*v1alpha1.RunnerPool)) *v1alpha1.RunnerPool {
	p := &v1alpha1.RunnerPool{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: v1alpha1.RunnerPoolSpec{
			Forgejo: v1alpha1.ForgejoConnection{URL: "https://forgejo.example.com", Scope: v1alpha1.ScopeGlobal,
				TokenSecretRef: v1alpha1.SecretKeySelector{Name: "token"}},
			Labels: []string{"docker:host"},
		},
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

func withVolume(v corev1.Volume) func(*v1alpha1.RunnerPool) {
	return func(p *v1alpha1.RunnerPool) {
		if p.Spec.Runner.PodTemplate == nil {
			p.Spec.Runner.PodTemplate = &v1alpha1.PodTemplateOverrides{}
		}
		p.Spec.Runner.PodTemplate.Volumes = append(p.Spec.Runner.PodTemplate.Volumes, v)
	}
}

var (
	hostPath = corev1.Volume{Name: "docker-sock", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/run/docker.sock"}}}
	nfs      = corev1.Volume{Name: "cache", VolumeSource: corev1.VolumeSource{NFS: &corev1.NFSVolumeSource{Server: "nfs.example.com", Path: "/cache"}}}
	token    = corev1.Volume{Name: "kube-api", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
		{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}},
	}}}}
	configMap = corev1.Volume{Name: "ca", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "ca"}}}}
)

// The shipped ValidatingAdmissionPolicy refuses RunnerPools that would give runner pods host
// volumes, a service account or an API token, with a message naming the field and the way out;
// it admits ordinary pools, and every pool in a namespace the admin exempted.
func TestAdmissionPolicyRefusesEscalatingPools(t *testing.T) {
	ctx := t.Context()
	c := apiServer.Client
	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: "tenant"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "trusted", Labels: map[string]string{exemptLabel: "true"}}},
	} {
		if err := c.Create(ctx, ns); err != nil {
			t.Fatal(err)
		}
	}
	apply(t, render(t, "policy"))
	// The API server starts enforcing a new policy once its informers have it.
	eventually.True(t, time.Minute, "the policy enforced", func() (bool, string) {
		err := c.Create(ctx, pool("tenant", "probe", withVolume(hostPath)), client.DryRunAll)
		return apierrors.IsForbidden(err) || apierrors.IsInvalid(err), fmt.Sprintf("create answered %v", err)
	})

	refused := []struct {
		name string
		pool *v1alpha1.RunnerPool
		says []string
	}{
		{"hostPath volume", pool("tenant", "hostpath", withVolume(hostPath)), []string{"spec.runner.podTemplate.volumes docker-sock", "no hostPath", exemptLabel + "=true"}},
		{"nfs volume", pool("tenant", "nfs", withVolume(configMap), withVolume(nfs)), []string{"spec.runner.podTemplate.volumes cache:"}},
		{"projected API token", pool("tenant", "token", withVolume(token)), []string{"spec.runner.podTemplate.volumes kube-api", "serviceAccountToken"}},
		{"service account", pool("tenant", "sa", func(p *v1alpha1.RunnerPool) { p.Spec.Runner.ServiceAccountName = "deployer" }), []string{"spec.runner.serviceAccountName", exemptLabel}},
		{"token automount", pool("tenant", "automount", func(p *v1alpha1.RunnerPool) { p.Spec.Runner.AutomountServiceAccountToken = ptr.To(true) }), []string{"spec.runner.automountServiceAccountToken", exemptLabel}},
	}
	for _, tc := range refused {
		t.Run("refused/"+tc.name, func(t *testing.T) {
			err := c.Create(ctx, tc.pool)
			if err == nil {
				t.Fatal("admitted")
			}
			for _, s := range tc.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("refusal does not say %q:\n%v", s, err)
				}
			}
		})
	}

	admitted := []struct {
		name string
		pool *v1alpha1.RunnerPool
	}{
		{"plain pool", pool("tenant", "plain")},
		{"configMap volume, default service account, automount off", pool("tenant", "ordinary", withVolume(configMap), func(p *v1alpha1.RunnerPool) {
			p.Spec.Runner.ServiceAccountName = "default"
			p.Spec.Runner.AutomountServiceAccountToken = ptr.To(false)
		})},
		{"everything, in the exempt namespace", pool("trusted", "everything", withVolume(hostPath), withVolume(token), func(p *v1alpha1.RunnerPool) {
			p.Spec.Runner.ServiceAccountName = "deployer"
			p.Spec.Runner.AutomountServiceAccountToken = ptr.To(true)
		})},
	}
	for _, tc := range admitted {
		t.Run("admitted/"+tc.name, func(t *testing.T) {
			if err := c.Create(ctx, tc.pool); err != nil {
				t.Fatalf("refused: %v", err)
			}
		})
	}

	// An exemption withdrawn: the pool admitted under it keeps what it has, so the operator's
	// updates (finalizers) and unrelated spec changes go through, but it gains nothing new.
	t.Run("exemption withdrawn", func(t *testing.T) {
		var ns corev1.Namespace
		if err := c.Get(ctx, client.ObjectKey{Name: "trusted"}, &ns); err != nil {
			t.Fatal(err)
		}
		delete(ns.Labels, exemptLabel)
		if err := c.Update(ctx, &ns); err != nil {
			t.Fatal(err)
		}
		var p v1alpha1.RunnerPool
		eventually.True(t, time.Minute, "a new hostPath volume refused", func() (bool, string) {
			if err := c.Get(ctx, client.ObjectKey{Namespace: "trusted", Name: "everything"}, &p); err != nil {
				return false, err.Error()
			}
			more := p.DeepCopy()
			extra := hostPath
			extra.Name = "more"
			withVolume(extra)(more)
			err := c.Update(ctx, more, client.DryRunAll)
			return err != nil && strings.Contains(err.Error(), "spec.runner.podTemplate.volumes more:"), fmt.Sprintf("update answered %v", err)
		})
		other := p.DeepCopy()
		other.Spec.Runner.ServiceAccountName = "admin"
		if err := c.Update(ctx, other, client.DryRunAll); err == nil || !strings.Contains(err.Error(), "spec.runner.serviceAccountName") {
			t.Errorf("a changed service account was not refused: %v", err)
		}
		p.Finalizers = append(p.Finalizers, "forgejo.brooktrails.org/runners")
		p.Spec.Scaling.MaxRunners = 3
		if err := c.Update(ctx, &p); err != nil {
			t.Fatalf("an update that adds nothing escalating was refused: %v", err)
		}
	})
}
