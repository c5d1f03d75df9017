package poolconn

import (
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/tokenkeep"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/cluster"
)

// A pool's token is read from the API server once per TTL, however often its pool and runners
// reconcile; a rotated token is used once the TTL is over, and a missing one is not remembered.
func TestTokenIsReadOncePerTTL(t *testing.T) {
	c := cluster.StartForTest(t, cluster.Options{APIServerOnly: true})
	ctx := t.Context()
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "fj", Namespace: "default"}, StringData: map[string]string{"token": "one"}}
	if err := c.Client.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	reader := &cluster.CountingReader{Reader: c.Client}
	f := &Factory{Reader: reader, TokenTTL: 10 * time.Second, Now: func() time.Time { return now }}
	ref := v1alpha1.SecretKeySelector{Name: "fj"}
	for range 5 {
		if tok, err := f.token(ctx, "default", ref); err != nil || tok != "one" {
			t.Fatalf("token %q, %v", tok, err)
		}
	}
	if n := reader.Gets(); n != 1 {
		t.Fatalf("%d reads for five uses within the TTL, want 1", n)
	}
	secret.StringData = map[string]string{"token": "two"}
	if err := c.Client.Update(ctx, secret); err != nil {
		t.Fatal(err)
	}
	now = now.Add(11 * time.Second)
	if tok, _ := f.token(ctx, "default", ref); tok != "two" {
		t.Fatalf("token %q after the TTL, want the rotated one", tok)
	}
	missing := v1alpha1.SecretKeySelector{Name: "absent"}
	for range 2 {
		if _, err := f.token(ctx, "default", missing); !errors.Is(err, ErrTokenSecret) {
			t.Fatalf("missing Secret: %v", err)
		}
	}
	if n := reader.Gets(); n != 4 {
		t.Fatalf("%d reads, want 4: a missing Secret is read again each time", n)
	}
}

// Once a pool's token Secret cannot be read, deregistration falls back to the copy the pool
// keeps; a Secret of the copy's name that the pool does not control is never read as one.
func TestCleanupClientFallsBackToThePoolsKeptCopy(t *testing.T) {
	c := cluster.StartForTest(t, cluster.Options{APIServerOnly: true})
	ctx := t.Context()
	pool := &v1alpha1.RunnerPool{
		ObjectMeta: metav1.ObjectMeta{Name: "ci", Namespace: "default", UID: "pool-uid-1"},
		Spec: v1alpha1.RunnerPoolSpec{Forgejo: v1alpha1.ForgejoConnection{
			URL: "https://forgejo.example", Scope: v1alpha1.ScopeGlobal, TokenSecretRef: v1alpha1.SecretKeySelector{Name: "gone"},
		}},
	}
	f := &Factory{Reader: c.Client}
	if _, _, err := f.CleanupClient(ctx, pool); !errors.Is(err, ErrTokenSecret) {
		t.Fatalf("no Secret and no copy: %v, want ErrTokenSecret", err)
	}

	impostor := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: tokenkeep.Name(pool), Namespace: "default"},
		StringData: map[string]string{tokenkeep.TokenKey: "someone-elses"}}
	if err := c.Client.Create(ctx, impostor); err != nil {
		t.Fatal(err)
	}
	if _, kept, err := f.CleanupClient(ctx, pool); err == nil || kept {
		t.Fatalf("a Secret the pool does not control was used as its copy (kept %v, err %v)", kept, err)
	}
	if err := c.Client.Delete(ctx, impostor); err != nil {
		t.Fatal(err)
	}

	copied, err := tokenkeep.Build(pool, "kept-token")
	if err != nil {
		t.Fatal(err)
	}
	copied.Finalizers = nil // nothing here would remove it
	if err := c.Client.Create(ctx, copied); err != nil {
		t.Fatal(err)
	}
	fj, kept, err := f.CleanupClient(ctx, pool)
	if err != nil || !kept || fj == nil {
		t.Fatalf("with the pool's copy: client %v, kept %v, err %v", fj != nil, kept, err)
	}

	own := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "gone", Namespace: "default"}, StringData: map[string]string{"token": "own"}}
	if err := c.Client.Create(ctx, own); err != nil {
		t.Fatal(err)
	}
	if _, kept, err := f.CleanupClient(ctx, pool); err != nil || kept {
		t.Fatalf("with its own Secret back the pool's token is used: kept %v, err %v", kept, err)
	}
}
