package operator

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/runnerpod"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/cluster"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/eventually"
)

// The operator's cache holds only its own Secrets, and keeps the managed fields of pools (the
// audit names who changed a pool's spec from them) but not of Runners and Secrets, of which there
// is one or more per runner.
func TestCacheKeepsOnlyWhatTheOperatorReads(t *testing.T) {
	c := cluster.StartForTest(t, cluster.Options{APIServerOnly: true})
	ctx := t.Context()
	opts := CacheOptions()
	opts.Scheme = c.Scheme
	cch, err := cache.New(c.Config, opts)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = cch.Start(ctx) }()

	pool := &v1alpha1.RunnerPool{
		ObjectMeta: metav1.ObjectMeta{Name: "ci", Namespace: "default"},
		Spec: v1alpha1.RunnerPoolSpec{
			Forgejo: v1alpha1.ForgejoConnection{URL: "https://forgejo.example", Scope: v1alpha1.ScopeGlobal, TokenSecretRef: v1alpha1.SecretKeySelector{Name: "t"}},
			Labels:  []string{"docker"},
		},
	}
	runner := &v1alpha1.Runner{
		ObjectMeta: metav1.ObjectMeta{Name: "ci-1", Namespace: "default", Labels: map[string]string{v1alpha1.PoolLabel: "ci"}},
		Spec:       v1alpha1.RunnerSpec{PoolName: "ci", Mode: v1alpha1.ModeEphemeral},
	}
	own := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "ci-1-token", Namespace: "default",
		Labels: map[string]string{runnerpod.LabelManagedBy: runnerpod.ManagedBy}}, StringData: map[string]string{"token": "t"}}
	users := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "t", Namespace: "default"}, StringData: map[string]string{"token": "api"}}
	for _, obj := range []client.Object{pool, runner, own, users} {
		if err := c.Client.Create(ctx, obj, client.FieldOwner("kubectl")); err != nil {
			t.Fatal(err)
		}
	}
	var cached v1alpha1.RunnerPool
	eventually.True(t, 30*time.Second, "the cache to show the pool, the Runner and the operator's Secret", func() (bool, string) {
		var rn v1alpha1.Runner
		var s corev1.Secret
		return cch.Get(ctx, client.ObjectKeyFromObject(pool), &cached) == nil &&
			cch.Get(ctx, client.ObjectKeyFromObject(runner), &rn) == nil &&
			cch.Get(ctx, client.ObjectKeyFromObject(own), &s) == nil, ""
	})
	if len(cached.ManagedFields) == 0 || cached.ManagedFields[0].Manager != "kubectl" {
		t.Errorf("the pool's managed fields are gone from the cache: %+v", cached.ManagedFields)
	}
	var rn v1alpha1.Runner
	if err := cch.Get(ctx, client.ObjectKeyFromObject(runner), &rn); err != nil || len(rn.ManagedFields) != 0 {
		t.Errorf("the Runner's managed fields are cached (%d), %v", len(rn.ManagedFields), err)
	}
	var secrets corev1.SecretList
	if err := cch.List(ctx, &secrets, client.InNamespace("default")); err != nil {
		t.Fatal(err)
	}
	if len(secrets.Items) != 1 || secrets.Items[0].Name != own.Name || len(secrets.Items[0].ManagedFields) != 0 {
		t.Errorf("cached Secrets: %d, want only %s, without managed fields", len(secrets.Items), own.Name)
	}
}
