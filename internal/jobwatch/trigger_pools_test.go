package jobwatch_test

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jobwatch"
)

// A delivery signed with a pool's own secret asks only that pool's connection, and only where
// it covers the repository.
func TestTriggerPoolsAsksOnlyTheNamedPoolsConnections(t *testing.T) {
	f := newTriggerFixture(t, jobwatch.TriggerOptions{Window: 10 * time.Millisecond, FollowUps: []time.Duration{}})
	for _, repo := range []string{"acme/app", "other/app"} {
		if err := f.sim.EnsureRepository(repo); err != nil {
			t.Fatal(err)
		}
	}
	_, global := f.register(t, "global", v1alpha1.ScopeGlobal, "global", "admin", forgejo.GlobalScope())
	_, acme := f.register(t, "acme", v1alpha1.ScopeOrganization, "organization acme",
		f.token(t, forgejosim.OrganizationScope("acme")), forgejo.OrganizationScope("acme"))
	_, other := f.register(t, "other", v1alpha1.ScopeOrganization, "organization other",
		f.token(t, forgejosim.OrganizationScope("other")), forgejo.OrganizationScope("other"))
	app := jobwatch.RepositoryRef{FullName: "acme/app"}
	cases := []struct {
		name  string
		pools []types.NamespacedName
		want  int
	}{
		{"a pool that does not cover the repository", []types.NamespacedName{other}, 0},
		{"one covering pool among others", []types.NamespacedName{other, acme}, 1},
		{"the same pool twice", []types.NamespacedName{acme, acme}, 1},
		{"two covering pools", []types.NamespacedName{global, acme}, 2},
		{"an unknown pool", []types.NamespacedName{{Namespace: "ci", Name: "gone"}}, 0},
		{"no pool", nil, 0},
	}
	for _, c := range cases {
		if n := f.watcher.TriggerPools(c.pools, app, "test"); n != c.want {
			t.Errorf("%s: asked %d connections, want %d", c.name, n, c.want)
		}
	}
}
