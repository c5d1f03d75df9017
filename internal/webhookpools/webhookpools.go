// Package webhookpools connects the webhook receiver to the RunnerPools: it finds the secrets a
// delivery may be signed with (the pools' webhook secrets and an operator-wide one), and turns
// each verified delivery into work for the jobs watcher. A delivery about a repository (push,
// pull_request, action_run_*, … : all Forgejo 15 sends) makes the watcher poll the connections
// whose scope covers that repository; a job event (workflow_job, from newer servers) is offered
// to the watcher, which turns it into demand exactly as a poll would. Either way a webhook and a
// poll for the same job make one runner.
package webhookpools

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jobwatch"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/webhook"
)

// DefaultSecretTTL is how long a pool's webhook secret is reused before it is read again: a
// flood of deliveries must not become a flood of reads of the Kubernetes API.
const DefaultSecretTTL = 30 * time.Second

// Secrets is the webhook.SecretSource of the operator.
type Secrets struct {
	// Pools lists RunnerPools (the manager's cache).
	Pools client.Reader
	// SecretReader reads the pools' webhook Secrets (uncached: they are the users' Secrets).
	SecretReader client.Reader
	// Shared is an operator-wide secret accepted for every delivery; empty for none.
	Shared []byte
	TTL    time.Duration
	Now    func() time.Time

	mu    sync.Mutex
	cache map[string]cachedSecret
}

type cachedSecret struct {
	value []byte
	read  time.Time
}

// Candidates returns the secrets of the pools whose scope covers the repository the delivery
// claims to be about, and the shared secret. The claim is unverified: it only narrows the
// search; only a signature made with one of these secrets lets the delivery in.
func (s *Secrets) Candidates(ctx context.Context, repository string) ([][]byte, error) {
	var pools v1alpha1.RunnerPoolList
	if err := s.Pools.List(ctx, &pools); err != nil {
		return nil, fmt.Errorf("list pools: %w", err)
	}
	var out [][]byte
	if len(s.Shared) > 0 {
		out = append(out, s.Shared)
	}
	for i := range pools.Items {
		pool := &pools.Items[i]
		ref := pool.Spec.Forgejo.WebhookSecretRef
		if ref == nil || (repository != "" && !Covers(pool, repository)) {
			continue
		}
		value, err := s.secret(ctx, pool.Namespace, ref)
		if err != nil {
			// One pool's missing Secret must not stop another pool's deliveries.
			continue
		}
		out = append(out, value)
	}
	return out, nil
}

func (s *Secrets) secret(ctx context.Context, namespace string, ref *v1alpha1.SecretKeySelector) ([]byte, error) {
	key := ref.Key
	if key == "" {
		key = "token"
	}
	id := namespace + "/" + ref.Name + "/" + key
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	ttl := s.TTL
	if ttl <= 0 {
		ttl = DefaultSecretTTL
	}
	s.mu.Lock()
	if c, ok := s.cache[id]; ok && now().Sub(c.read) < ttl {
		s.mu.Unlock()
		return c.value, nil
	}
	s.mu.Unlock()

	var secret corev1.Secret
	if err := s.SecretReader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: ref.Name}, &secret); err != nil {
		return nil, fmt.Errorf("read webhook Secret %s/%s: %w", namespace, ref.Name, err)
	}
	value := secret.Data[key]
	if len(value) == 0 {
		return nil, fmt.Errorf("webhook Secret %s/%s has no key %q", namespace, ref.Name, key)
	}
	s.mu.Lock()
	if s.cache == nil {
		s.cache = map[string]cachedSecret{}
	}
	s.cache[id] = cachedSecret{value: value, read: now()}
	s.mu.Unlock()
	return value, nil
}

// Covers reports whether a pool's scope sees jobs of the repository ("owner/name"). A user
// scope's owner is its token's user, unknown here, so it is given the benefit of the doubt.
func Covers(pool *v1alpha1.RunnerPool, repository string) bool {
	owner, _, _ := strings.Cut(repository, "/")
	switch pool.Spec.Forgejo.Scope {
	case v1alpha1.ScopeOrganization:
		return strings.EqualFold(pool.Spec.Forgejo.Organization, owner)
	case v1alpha1.ScopeRepository:
		return strings.EqualFold(pool.Spec.Forgejo.Repository, repository)
	default:
		return true
	}
}

// Sink hands verified job events to the jobs watcher.
type Sink struct {
	Pools   client.Reader
	Watcher *jobwatch.Watcher
	Log     logr.Logger
}

// HandleRepositoryEvent asks for a poll of every connection, on every Forgejo instance a pool
// covering the repository points at, whose scope covers it. The watcher coalesces the polls, so
// a flood of deliveries costs at most one poll per connection per window.
func (s *Sink) HandleRepositoryEvent(ctx context.Context, ev webhook.RepositoryEvent) {
	var pools v1alpha1.RunnerPoolList
	if err := s.Pools.List(ctx, &pools); err != nil {
		s.Log.Error(err, "list pools for a webhook", "delivery", ev.DeliveryID)
		return
	}
	cause := "poll after webhook delivery " + webhook.SafeID(ev.DeliveryID) + " (" + ev.Event + ")"
	repo := jobwatch.RepositoryRef{FullName: ev.Repository, ID: ev.RepoID, OwnerID: ev.OwnerID}
	triggered := map[string]bool{}
	asked := 0
	for i := range pools.Items {
		url := strings.TrimSuffix(pools.Items[i].Spec.Forgejo.URL, "/")
		if triggered[url] || !Covers(&pools.Items[i], ev.Repository) {
			continue
		}
		triggered[url] = true
		asked += s.Watcher.Trigger(url, repo, cause)
	}
	s.Log.V(1).Info("webhook asked for job polls", "delivery", ev.DeliveryID, "event", ev.Event,
		"repository", ev.Repository, "connections", asked)
}

// HandleJobEvent offers the event's job to the watcher of every Forgejo instance a pool that
// can see the repository points at. The watcher ignores what it already knows, so repeats and
// late events cost nothing.
func (s *Sink) HandleJobEvent(ctx context.Context, ev webhook.JobEvent) {
	status := strings.TrimPrefix(ev.Event, "workflow_job_")
	if ev.Job.Handle == "" || status == "blocked" {
		return
	}
	var pools v1alpha1.RunnerPoolList
	if err := s.Pools.List(ctx, &pools); err != nil {
		s.Log.Error(err, "list pools for a webhook", "delivery", ev.DeliveryID)
		return
	}
	job := jobwatch.Job{ID: ev.Job.ID, Attempt: ev.Job.Attempt, Handle: ev.Job.Handle, RunsOn: ev.Job.RunsOn, Status: status, TaskID: ev.Job.TaskID,
		RepoID: ev.Job.RepoID, OwnerID: ev.Job.OwnerID, Repository: ev.Repository, Via: "webhook delivery " + webhook.SafeID(ev.DeliveryID)}
	offered := map[string]bool{}
	for i := range pools.Items {
		url := strings.TrimSuffix(pools.Items[i].Spec.Forgejo.URL, "/")
		if offered[url] || (ev.Repository != "" && !Covers(&pools.Items[i], ev.Repository)) {
			continue
		}
		offered[url] = true
		if s.Watcher.Offer(url, ev.Repository, job) {
			s.Log.V(1).Info("webhook job event taken", "delivery", ev.DeliveryID, "job", job.ID, "status", status)
		}
	}
}
