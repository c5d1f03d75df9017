package webhookpools

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/cluster"
)

func TestCovers(t *testing.T) {
	pool := func(scope v1alpha1.Scope, org, repo string) *v1alpha1.RunnerPool {
		p := &v1alpha1.RunnerPool{}
		p.Spec.Forgejo.Scope, p.Spec.Forgejo.Organization, p.Spec.Forgejo.Repository = scope, org, repo
		return p
	}
	cases := []struct {
		pool *v1alpha1.RunnerPool
		repo string
		want bool
	}{
		{pool(v1alpha1.ScopeGlobal, "", ""), "acme/app", true},
		{pool(v1alpha1.ScopeOrganization, "acme", ""), "acme/app", true},
		{pool(v1alpha1.ScopeOrganization, "acme", ""), "Acme/app", true},
		{pool(v1alpha1.ScopeOrganization, "other", ""), "acme/app", false},
		{pool(v1alpha1.ScopeRepository, "", "acme/app"), "acme/app", true},
		{pool(v1alpha1.ScopeRepository, "", "acme/app"), "acme/other", false},
		{pool(v1alpha1.ScopeUser, "", ""), "acme/app", true},
	}
	for _, c := range cases {
		if got := Covers(c.pool, c.repo); got != c.want {
			t.Errorf("%s %s%s covers %s = %v, want %v", c.pool.Spec.Forgejo.Scope, c.pool.Spec.Forgejo.Organization, c.pool.Spec.Forgejo.Repository, c.repo, got, c.want)
		}
	}
}

func TestCandidatesChooseByScopeAndReadEachSecretOncePerTTL(t *testing.T) {
	c := cluster.StartForTest(t, cluster.Options{APIServerOnly: true})
	ctx := t.Context()
	for name, value := range map[string]string{"org-hook": "org-secret", "repo-hook": "repo-secret"} {
		if err := c.Client.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			StringData: map[string]string{"secret": value},
		}); err != nil {
			t.Fatal(err)
		}
	}
	newPool := func(name string, mutate func(*v1alpha1.RunnerPool)) {
		p := &v1alpha1.RunnerPool{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			Spec: v1alpha1.RunnerPoolSpec{
				Forgejo: v1alpha1.ForgejoConnection{URL: "https://forgejo.example", TokenSecretRef: v1alpha1.SecretKeySelector{Name: "t"}},
				Labels:  []string{"docker"},
			},
		}
		mutate(p)
		if err := c.Client.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	newPool("org", func(p *v1alpha1.RunnerPool) {
		p.Spec.Forgejo.Scope, p.Spec.Forgejo.Organization = v1alpha1.ScopeOrganization, "acme"
		p.Spec.Forgejo.WebhookSecretRef = &v1alpha1.SecretKeySelector{Name: "org-hook", Key: "secret"}
	})
	newPool("repo", func(p *v1alpha1.RunnerPool) {
		p.Spec.Forgejo.Scope, p.Spec.Forgejo.Repository = v1alpha1.ScopeRepository, "other/app"
		p.Spec.Forgejo.WebhookSecretRef = &v1alpha1.SecretKeySelector{Name: "repo-hook", Key: "secret"}
	})

	reader := &cluster.CountingReader{Reader: c.Client}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	secrets := &Secrets{Pools: c.Client, SecretReader: reader, Shared: []byte("shared"), TTL: time.Minute, Now: func() time.Time { return now }}

	got, err := secrets.Candidates(ctx, "acme/app")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || string(got[0]) != "shared" || string(got[1]) != "org-secret" {
		t.Fatalf("candidates for acme/app = %q, want the shared and the organization pool's secret", got)
	}
	for range 50 {
		if _, err := secrets.Candidates(ctx, "acme/app"); err != nil {
			t.Fatal(err)
		}
	}
	if n := reader.Gets(); n != 1 {
		t.Fatalf("51 deliveries read the Secret %d times, want once within the TTL", n)
	}
	now = now.Add(2 * time.Minute)
	if _, err := secrets.Candidates(ctx, "acme/app"); err != nil {
		t.Fatal(err)
	}
	if n := reader.Gets(); n != 2 {
		t.Fatalf("after the TTL the Secret was read %d times in all, want 2", n)
	}
	if all, _ := secrets.Candidates(ctx, ""); len(all) != 3 {
		t.Fatalf("a delivery naming no repository gets %d candidates, want all 3", len(all))
	}
}
