package matching

import (
	"maps"
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

func TestAssign(t *testing.T) {
	key := func(name string) types.NamespacedName { return types.NamespacedName{Namespace: "ci", Name: name} }
	pool := func(name string, scope v1alpha1.Scope, labels ...string) Pool {
		return Pool{Key: key(name), Scope: scope, LabelNames: labels}
	}
	global := Candidate{Pool: pool("global", v1alpha1.ScopeGlobal, "docker"), Coverage: Coverage{Scope: v1alpha1.ScopeGlobal}, Healthy: true}
	acme := Candidate{Pool: pool("acme", v1alpha1.ScopeOrganization, "docker"), Coverage: Coverage{Scope: v1alpha1.ScopeOrganization, OwnerID: 3}, Healthy: true}
	app := Candidate{Pool: pool("app", v1alpha1.ScopeRepository, "docker"), Coverage: Coverage{Scope: v1alpha1.ScopeRepository, OwnerID: 3, RepoID: 7}, Healthy: true}
	failing := app
	failing.Pool.Key, failing.Healthy = key("failing"), false
	unresolved := Candidate{Pool: pool("unresolved", v1alpha1.ScopeRepository, "docker"), Coverage: Coverage{Scope: v1alpha1.ScopeRepository}, Healthy: true}
	gpu := Candidate{Pool: pool("gpu", v1alpha1.ScopeRepository, "docker", "gpu"), Coverage: Coverage{Scope: v1alpha1.ScopeRepository, RepoID: 7, OwnerID: 3}, Healthy: true}

	appJob := Job{Handle: "h-app", RepoID: 7, OwnerID: 3, RunsOn: []string{"docker"}}
	libJob := Job{Handle: "h-lib", RepoID: 8, OwnerID: 3, RunsOn: []string{"docker"}}
	otherJob := Job{Handle: "h-other", RepoID: 9, OwnerID: 4, RunsOn: []string{"docker"}}
	gpuJob := Job{Handle: "h-gpu", RepoID: 7, OwnerID: 3, RunsOn: []string{"docker", "gpu"}}
	armJob := Job{Handle: "h-arm", RepoID: 7, OwnerID: 3, RunsOn: []string{"arm64"}}
	jobs := []Job{appJob, libJob, otherJob, gpuJob, armJob}

	for _, tc := range []struct {
		name       string
		candidates []Candidate
		held       map[string]types.NamespacedName
		want       map[string]string
	}{
		{"narrowest covering scope", []Candidate{global, acme, app, gpu}, nil,
			map[string]string{"h-app": "app", "h-lib": "acme", "h-other": "global", "h-gpu": "gpu"}},
		{"the order of candidates does not matter", []Candidate{gpu, app, acme, global}, nil,
			map[string]string{"h-app": "app", "h-lib": "acme", "h-other": "global", "h-gpu": "gpu"}},
		{"a failing pool captures nothing", []Candidate{global, failing}, nil,
			map[string]string{"h-app": "global", "h-lib": "global", "h-other": "global"}},
		{"a pool whose scope ids are unknown covers nothing", []Candidate{unresolved}, nil, map[string]string{}},
		{"a held job stays with its holder", []Candidate{global, app}, map[string]types.NamespacedName{"h-app": key("global")},
			map[string]string{"h-app": "global", "h-lib": "global", "h-other": "global"}},
		{"a failing holder keeps its job", []Candidate{global, failing}, map[string]types.NamespacedName{"h-app": key("failing")},
			map[string]string{"h-app": "failing", "h-lib": "global", "h-other": "global"}},
		{"a job held by a pool that is gone is dispatched anew", []Candidate{global, app}, map[string]types.NamespacedName{"h-app": key("deleted")},
			map[string]string{"h-app": "app", "h-lib": "global", "h-other": "global"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Assign(jobs, tc.candidates, tc.held)
			names := map[string]string{}
			for h, k := range got {
				names[h] = k.Name
			}
			if !maps.Equal(names, tc.want) {
				t.Errorf("got %v, want %v", names, tc.want)
			}
		})
	}
}
