package matching

import (
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
)

func TestLabelNames(t *testing.T) {
	got := LabelNames([]string{"docker:docker://node:22-bookworm", "self-hosted:host", "linux", "docker:docker://other", ""})
	want := []string{"docker", "self-hosted", "linux"}
	if !slices.Equal(got, want) {
		t.Fatalf("LabelNames = %v, want %v", got, want)
	}
}

func TestMatches(t *testing.T) {
	names := []string{"docker", "ubuntu-latest", "linux"}
	cases := []struct {
		runsOn []string
		want   bool
	}{
		{[]string{"docker"}, true},
		{[]string{"docker", "linux"}, true},
		{[]string{"ubuntu-latest", "docker", "linux"}, true},
		{[]string{"docker", "arm64"}, false},
		{[]string{"windows"}, false},
		{[]string{"Docker"}, false}, // label names are compared exactly, as Forgejo does
		{nil, false},
		{[]string{}, false},
	}
	for _, c := range cases {
		if got := Matches(c.runsOn, names); got != c.want {
			t.Errorf("Matches(%v) = %v, want %v", c.runsOn, got, c.want)
		}
	}
}

func pool(ns, name string, scope v1alpha1.Scope, labels ...string) Pool {
	return Pool{Key: types.NamespacedName{Namespace: ns, Name: name}, Scope: scope, LabelNames: labels}
}

func TestChoose(t *testing.T) {
	global := pool("ci", "global", v1alpha1.ScopeGlobal, "docker", "linux")
	org := pool("ci", "org", v1alpha1.ScopeOrganization, "docker", "linux", "gpu")
	repo := pool("team", "repo", v1alpha1.ScopeRepository, "docker")
	narrowGlobal := pool("ci", "narrow", v1alpha1.ScopeGlobal, "docker")
	sameA := pool("a", "same", v1alpha1.ScopeGlobal, "docker")
	sameB := pool("b", "same", v1alpha1.ScopeGlobal, "docker")

	cases := []struct {
		name       string
		candidates []Pool
		runsOn     []string
		want       string
		ok         bool
	}{
		{"repository scope beats wider scopes", []Pool{global, org, repo}, []string{"docker"}, "team/repo", true},
		{"a pool that lacks a label is skipped", []Pool{global, org, repo}, []string{"docker", "gpu"}, "ci/org", true},
		{"organization beats global", []Pool{global, org}, []string{"linux"}, "ci/org", true},
		{"fewer labels win within a scope", []Pool{global, narrowGlobal}, []string{"docker"}, "ci/narrow", true},
		{"namespace breaks the last tie", []Pool{sameB, sameA}, []string{"docker"}, "a/same", true},
		{"no match", []Pool{global, repo}, []string{"windows"}, "", false},
		{"no candidates", nil, []string{"docker"}, "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := Choose(c.candidates, c.runsOn)
			if ok != c.ok || (ok && got.Key.String() != c.want) {
				t.Fatalf("Choose = %v, %v; want %s, %v", got.Key, ok, c.want, c.ok)
			}
			// The choice must not depend on the order the candidates come in.
			reversed := slices.Clone(c.candidates)
			slices.Reverse(reversed)
			if again, _ := Choose(reversed, c.runsOn); again.Key != got.Key {
				t.Fatalf("order-dependent: %v then %v", got.Key, again.Key)
			}
		})
	}
}

func TestPoolOf(t *testing.T) {
	rp := &v1alpha1.RunnerPool{}
	rp.Namespace, rp.Name = "ci", "p"
	rp.Spec.Forgejo.Scope = v1alpha1.ScopeRepository
	rp.Spec.Labels = []string{"docker:docker://node:22", "linux"}
	got := PoolOf(rp)
	if got.Key.String() != "ci/p" || got.Scope != v1alpha1.ScopeRepository || !slices.Equal(got.LabelNames, []string{"docker", "linux"}) {
		t.Fatalf("PoolOf = %+v", got)
	}
}
