package e2e

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/eventually"
)

// repositoryPool creates a repository-scope pool whose token Secret holds token from the start.
func (w *world) repositoryPool(t *testing.T, name, repository, token string) {
	t.Helper()
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-repo-token", Namespace: "default"},
		StringData: map[string]string{"token": token},
	}
	if err := w.cluster.Client.Create(t.Context(), secret); err != nil {
		t.Fatal(err)
	}
	pool := &v1alpha1.RunnerPool{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: v1alpha1.RunnerPoolSpec{
			Forgejo: v1alpha1.ForgejoConnection{
				URL: w.url, Scope: v1alpha1.ScopeRepository, Repository: repository,
				TokenSecretRef: v1alpha1.SecretKeySelector{Name: secret.Name},
			},
			Labels: []string{"docker:host"},
		},
	}
	if err := w.cluster.Client.Create(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
}

// TestOneRunnerPerJobAcrossOverlappingPools is issue #11's reproducer: a global pool and a
// repository pool with the same labels on one Forgejo, plus a pool whose token cannot see the
// repository, polls 2 s apart and ticking independently. Each job gets exactly one runner and
// one registration, from the repository pool, every time.
func TestOneRunnerPerJobAcrossOverlappingPools(t *testing.T) {
	saved := testOptions
	testOptions.PollInterval = 2 * time.Second
	t.Cleanup(func() { testOptions = saved })
	w := startWorld(t)
	if err := w.sim.EnsureRepository("acme/app"); err != nil {
		t.Fatal(err)
	}
	repoToken, err := w.sim.CreateToken(forgejosim.RepositoryScope("acme/app"))
	if err != nil {
		t.Fatal(err)
	}
	blindToken, err := w.sim.CreateToken(forgejosim.RepositoryScope("acme/other"))
	if err != nil {
		t.Fatal(err)
	}
	w.createPool(t, "global", nil)
	w.repositoryPool(t, "blind", "acme/app", blindToken)
	w.repositoryPool(t, "app", "acme/app", repoToken)
	eventually.True(t, time.Minute, "the blind pool's failing poll", w.reachable(t, "blind", metav1.ConditionFalse, "ScopeNotVisible"))

	const rounds = 5
	regsBefore := w.registrationsMade(t) + 1 // the probe itself is one
	for i := range rounds {
		jobs, err := w.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}})
		if err != nil {
			t.Fatal(err)
		}
		eventually.True(t, 2*time.Minute, fmt.Sprintf("job %d to succeed", i+1), w.allSucceeded(jobs))
		eventually.True(t, time.Minute, "its runner recorded", func() (bool, string) {
			n := len(w.recordsOf(t, "app", jobs[0].Handle))
			return n == 1, fmt.Sprintf("%d records in pool app", n)
		})
		// Past the other pools' next polls, which would have made a second runner.
		time.Sleep(2 * testOptions.PollInterval)
		for _, other := range []string{"global", "blind"} {
			if recs := w.recordsOf(t, other, jobs[0].Handle); len(recs) != 0 {
				t.Errorf("round %d: pool %s also made a runner for the job: %+v", i+1, other, recs)
			}
			if rs := w.runners(t, other); len(rs) != 0 {
				t.Errorf("round %d: pool %s has %d live runners", i+1, other, len(rs))
			}
		}
	}
	if made := w.registrationsMade(t) - regsBefore; made != rounds {
		t.Errorf("%d registrations made for %d jobs", made, rounds)
	}
}

// A job stays with the pool that made its Runner across an operator restart, although a
// narrower pool that would win the rule appeared meanwhile.
func TestAJobKeepsItsPoolAcrossARestart(t *testing.T) {
	w := startWorld(t)
	if err := w.sim.EnsureRepository("acme/app"); err != nil {
		t.Fatal(err)
	}
	repoToken, err := w.sim.CreateToken(forgejosim.RepositoryScope("acme/app"))
	if err != nil {
		t.Fatal(err)
	}
	// Pending pods: the runner waits, and its job with it, through the restart.
	w.createPool(t, "global", unschedulable)
	jobs, err := w.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}})
	if err != nil {
		t.Fatal(err)
	}
	eventually.True(t, time.Minute, "the global pool's runner for the job", func() (bool, string) {
		rs := w.runners(t, "global")
		return len(rs) == 1 && rs[0].Spec.Job != nil && rs[0].Spec.Job.Handle == jobs[0].Handle, fmt.Sprintf("%d runners", len(rs))
	})
	w.stopOperator()
	w.repositoryPool(t, "app", "acme/app", repoToken)
	w.startOperator(t)
	eventually.True(t, time.Minute, "the repository pool's first poll", w.reachable(t, "app", metav1.ConditionTrue, "JobsListed"))
	// Past a few of its polls and reconciles.
	time.Sleep(3 * time.Second)
	if rs := w.runners(t, "app"); len(rs) != 0 {
		t.Errorf("the repository pool made %d runners for a job the global pool's runner holds", len(rs))
	}
	if rs := w.runners(t, "global"); len(rs) != 1 {
		t.Errorf("the global pool has %d runners, want its one", len(rs))
	}
}
