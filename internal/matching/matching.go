// Package matching decides which RunnerPool serves a Forgejo job.
//
// A job can run on a runner when every label in its runs-on is among the runner's label names
// (the part of a `name:scheme:arg` label before the first colon), as forgejo-runner and Forgejo
// decide it. Assign is the dispatcher's rule. A job that has a Runner stays with the pool that
// made it. Otherwise the pools that may take it are those whose connection to Forgejo works,
// whose scope covers the job's repository (by the ids Forgejo gives for the scope, not by which
// poll happened to list the job) and whose labels match; of them exactly one gets it, chosen the
// same way every time so that a restart, a second poll or a webhook never hands a job to two
// pools:
//
//  1. the pool with the narrowest scope (repository, then organization, then user, then
//     global), because a team that enrols runners for its own repository means them to be used;
//  2. then the pool whose label names are fewest (the closest fit, leaving broader pools for
//     jobs only they can take);
//  3. then namespace and name in lexical order.
package matching

import (
	"cmp"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
)

// LabelName is the name part of a runner label: "docker" for "docker:docker://node:22".
func LabelName(label string) string {
	name, _, _ := strings.Cut(label, ":")
	return name
}

// LabelNames returns the name parts of runner labels, without duplicates, in order.
func LabelNames(labels []string) []string {
	names := make([]string, 0, len(labels))
	for _, l := range labels {
		if n := LabelName(l); n != "" && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	return names
}

// Matches reports whether a job with these runs-on labels can run on a runner with these
// label names. A job without runs-on matches no pool: Forgejo would let any runner take it,
// and an operator that created runners for it could be made to start one for every pool.
func Matches(runsOn, labelNames []string) bool {
	if len(runsOn) == 0 {
		return false
	}
	for _, want := range runsOn {
		if !slices.Contains(labelNames, want) {
			return false
		}
	}
	return true
}

// Pool is what matching needs to know of a RunnerPool.
type Pool struct {
	Key        types.NamespacedName
	Scope      v1alpha1.Scope
	LabelNames []string
}

// PoolOf extracts a Pool from a RunnerPool.
func PoolOf(p *v1alpha1.RunnerPool) Pool {
	return Pool{
		Key:        types.NamespacedName{Namespace: p.Namespace, Name: p.Name},
		Scope:      p.Spec.Forgejo.Scope,
		LabelNames: LabelNames(p.Spec.Labels),
	}
}

func scopeRank(s v1alpha1.Scope) int {
	switch s {
	case v1alpha1.ScopeRepository:
		return 0
	case v1alpha1.ScopeOrganization:
		return 1
	case v1alpha1.ScopeUser:
		return 2
	default:
		return 3
	}
}

// Choose returns the pool that serves a job with these runs-on labels among candidates (pools
// that can see the job), by the order in the package comment; false when none matches.
func Choose(candidates []Pool, runsOn []string) (Pool, bool) {
	var matching []Pool
	for _, p := range candidates {
		if Matches(runsOn, p.LabelNames) {
			matching = append(matching, p)
		}
	}
	if len(matching) == 0 {
		return Pool{}, false
	}
	return slices.MinFunc(matching, comparePools), true
}

func comparePools(a, b Pool) int {
	return cmp.Or(
		cmp.Compare(scopeRank(a.Scope), scopeRank(b.Scope)),
		cmp.Compare(len(a.LabelNames), len(b.LabelNames)),
		cmp.Compare(a.Key.Namespace, b.Key.Namespace),
		cmp.Compare(a.Key.Name, b.Key.Name),
	)
}

// Coverage is what a pool's connection can see, in the ids Forgejo's jobs list carries: a global
// scope sees every job, an organization or user scope the jobs of repositories whose owner is
// OwnerID, a repository scope the jobs of RepoID.
type Coverage struct {
	Scope   v1alpha1.Scope
	OwnerID int64
	RepoID  int64
}

// Covers reports whether the coverage includes a job of repository repoID owned by ownerID.
// Unresolved ids (0) cover nothing: better no runner than one in a pool that cannot see the job.
func (c Coverage) Covers(repoID, ownerID int64) bool {
	switch c.Scope {
	case v1alpha1.ScopeOrganization, v1alpha1.ScopeUser:
		return c.OwnerID != 0 && c.OwnerID == ownerID
	case v1alpha1.ScopeRepository:
		return c.RepoID != 0 && c.RepoID == repoID
	default:
		return true
	}
}

// Candidate is a pool as the dispatcher weighs it.
type Candidate struct {
	Pool     Pool
	Coverage Coverage
	// Healthy: the pool's connection listed jobs at its last try. A pool whose polls fail (a
	// revoked token, a scope it cannot see) must not take jobs from a pool that can serve them.
	Healthy bool
}

// Job is a waiting job as the dispatcher weighs it.
type Job struct {
	Handle  string
	RepoID  int64
	OwnerID int64
	RunsOn  []string
}

// Assign decides which pool serves each job: the pool that already holds it (a Runner exists
// for it: the decision is made once and kept, across polls, restarts and leader changes), or else,
// among the healthy pools whose scope covers the job's repository and whose labels match, the
// first by the order in the package comment. It depends on nothing but its inputs, so which
// connection listed a job first, or how stale a poll is, cannot change the answer. Jobs no pool
// can serve are left out.
func Assign(jobs []Job, candidates []Candidate, held map[string]types.NamespacedName) map[string]types.NamespacedName {
	known := make(map[types.NamespacedName]bool, len(candidates))
	for _, c := range candidates {
		known[c.Pool.Key] = true
	}
	out := make(map[string]types.NamespacedName, len(jobs))
	for _, j := range jobs {
		if holder, ok := held[j.Handle]; ok && known[holder] {
			out[j.Handle] = holder
			continue
		}
		var eligible []Pool
		for _, c := range candidates {
			if c.Healthy && c.Coverage.Covers(j.RepoID, j.OwnerID) && Matches(j.RunsOn, c.Pool.LabelNames) {
				eligible = append(eligible, c.Pool)
			}
		}
		if len(eligible) > 0 {
			out[j.Handle] = slices.MinFunc(eligible, comparePools).Key
		}
	}
	return out
}
