package runnerpool

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
)

func namespaceWith(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func namespaces(objs ...client.Object) client.WithWatch {
	scheme := runtime.NewScheme()
	_ = corev1.AddToScheme(scheme)
	return fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).Build()
}

func TestPrivilegeGate(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	reader := namespaces(
		namespaceWith("trusted", map[string]string{v1alpha1.AllowPrivilegedDinDLabel: "true"}),
		namespaceWith("tenant", nil),
		namespaceWith("almost", map[string]string{v1alpha1.AllowPrivilegedDinDLabel: "yes"}),
	)
	tests := []struct {
		name      string
		gate      *PrivilegeGate
		namespace string
		want      bool
		says      []string // the refusal names what to set
	}{
		{"labelled namespace", &PrivilegeGate{Namespaces: reader}, "trusted", true, nil},
		{"unlabelled namespace", &PrivilegeGate{Namespaces: reader}, "tenant", false,
			[]string{`namespace "tenant"`, v1alpha1.AllowPrivilegedDinDLabel + "=true", "--allow-privileged-dind"}},
		{"a label value other than true", &PrivilegeGate{Namespaces: reader}, "almost", false, []string{v1alpha1.AllowPrivilegedDinDLabel}},
		{"missing namespace", &PrivilegeGate{Namespaces: reader}, "gone", false, []string{"cannot read namespace", "not found"}},
		{"operator flag", &PrivilegeGate{AllowAll: true}, "tenant", true, nil},
		{"no reader, no flag", &PrivilegeGate{}, "trusted", false, []string{"--allow-privileged-dind"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, why := tt.gate.allowed(t.Context(), tt.namespace, now)
			if got != tt.want {
				t.Fatalf("allowed = %v (%s), want %v", got, why, tt.want)
			}
			for _, s := range tt.says {
				if !strings.Contains(why, s) {
					t.Errorf("refusal %q does not say %q", why, s)
				}
			}
		})
	}
}

// A read label is trusted for the TTL, then read again: revoking it takes effect, and a pool
// reconciled many times a second costs one read per TTL.
func TestPrivilegeGateRereadsAfterTTL(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	ns := namespaceWith("ci", map[string]string{v1alpha1.AllowPrivilegedDinDLabel: "true"})
	reads := 0
	reader := interceptor.NewClient(namespaces(ns), interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			reads++
			return c.Get(ctx, key, obj, opts...)
		},
	})
	gate := &PrivilegeGate{Namespaces: reader, TTL: 10 * time.Second}
	if ok, _ := gate.allowed(t.Context(), "ci", now); !ok {
		t.Fatal("labelled namespace refused")
	}
	delete(ns.Labels, v1alpha1.AllowPrivilegedDinDLabel)
	if err := reader.Update(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	if ok, _ := gate.allowed(t.Context(), "ci", now.Add(9*time.Second)); !ok || reads != 1 {
		t.Fatalf("within the TTL: allowed %v after %d reads, want the first read trusted", ok, reads)
	}
	if ok, _ := gate.allowed(t.Context(), "ci", now.Add(10*time.Second)); ok || reads != 2 {
		t.Fatalf("after the TTL: allowed %v after %d reads, want the revoked label read", ok, reads)
	}
}

// An error reading the namespace refuses, and the refusal carries it, so that a namespaced
// install without get on its namespace says what is missing.
func TestPrivilegeGateRefusesWhenTheNamespaceCannotBeRead(t *testing.T) {
	reader := interceptor.NewClient(namespaces(), interceptor.Funcs{
		Get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object, ...client.GetOption) error {
			return errors.New("namespaces \"ci\" is forbidden")
		},
	})
	gate := &PrivilegeGate{Namespaces: reader}
	ok, why := gate.allowed(t.Context(), "ci", time.Now())
	if ok || !strings.Contains(why, "is forbidden") {
		t.Fatalf("allowed %v: %s", ok, why)
	}
}

// Only a kubernetes pool asking for Privileged DinD, by mode or by the deprecated enabled, is
// ever refused.
func TestPrivilegeRefusalAppliesToPrivilegedPoolsOnly(t *testing.T) {
	r := &Reconciler{Now: time.Now}
	on, off := true, false
	for _, tt := range []struct {
		name    string
		dind    v1alpha1.DinD
		backend v1alpha1.Backend
		refused bool
	}{
		{"default", v1alpha1.DinD{}, "", false},
		{"None", v1alpha1.DinD{Mode: v1alpha1.DinDNone}, "", false},
		{"Rootless", v1alpha1.DinD{Mode: v1alpha1.DinDRootless}, "", false},
		{"Privileged", v1alpha1.DinD{Mode: v1alpha1.DinDPrivileged}, v1alpha1.BackendKubernetes, true},
		{"enabled: true", v1alpha1.DinD{Enabled: &on}, "", true},
		{"enabled: false", v1alpha1.DinD{Enabled: &off}, "", false},
		{"remote backend", v1alpha1.DinD{Mode: v1alpha1.DinDPrivileged}, v1alpha1.BackendRemote, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pool := &v1alpha1.RunnerPool{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ci"}}
			pool.Spec.DinD, pool.Spec.Backend = tt.dind, tt.backend
			msg := r.privilegeRefusal(t.Context(), pool)
			if (msg != "") != tt.refused {
				t.Errorf("refusal %q, want refused %v", msg, tt.refused)
			}
			if tt.refused && !strings.Contains(msg, "Rootless or None") {
				t.Errorf("refusal %q does not name the unprivileged choices", msg)
			}
		})
	}
}
