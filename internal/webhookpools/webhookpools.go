// Package webhookpools connects the webhook receiver to the RunnerPools: it finds the secrets a
// delivery may be signed with (the pools' webhook secrets and an operator-wide one), and turns
// each verified delivery into work for the jobs watcher, within what the secret that verified it
// grants.
//
// A pool's secret is its owner's: whoever may write the pool's Secret may sign deliveries with
// it. So it is tried only for deliveries about a repository the pool's scope covers, and a
// delivery it verifies reaches only the pools that hold that same secret: their connections are
// asked to poll, where they cover the repository. A job event (workflow_job, from newer
// servers) never adds a job: what its payload says about the job (ids, handle, labels) comes
// from the secret's holder, and the dispatcher would hand such a job to whichever pool of the
// instance covers the ids it claims. It asks for a poll, and moves on only a job those pools'
// connections already list (it started, or ended and how, for the records).
//
// The operator-wide secret (--webhook-secret-file) is the administrator's: a delivery it
// verifies acts as before on every pool covering the repository, and a job event is offered
// to the watcher, which turns it into demand exactly as a poll would. Either way a webhook and a
// poll for the same job make one runner.
package webhookpools

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jobwatch"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/webhook"
)

// DefaultSecretTTL is how long a pool's webhook secret is reused before it is read again: a
// flood of deliveries must not become a flood of reads of the Kubernetes API.
const DefaultSecretTTL = 30 * time.Second

// DefaultNegativeTTL is how long a Secret that could not be read (missing, without the key,
// forbidden) is not asked for again. Every delivery, signed or not, looks up the secrets of the
// pools covering the repository it names; without this, anyone could make the operator read
// the API server once per request by naming a repository whose pool's Secret is missing. It is
// short, so that a Secret created after its pool is used within seconds.
const DefaultNegativeTTL = 10 * time.Second

// Grant is what a delivery verified by one secret may make happen; it is the webhook.Secret's
// Grant, and the Sink acts within it.
type Grant struct {
	// OperatorWide is the grant of the operator-wide secret: every pool covering the
	// repository, as the administrator who configured it chose.
	OperatorWide bool
	// Pools are the pools whose webhook secret is the one that verified the delivery (the same
	// value, whichever Secret holds it) and whose scope covers the repository it names.
	Pools []types.NamespacedName
}

// Secrets is the webhook.SecretSource of the operator.
type Secrets struct {
	// Pools lists RunnerPools (the manager's cache).
	Pools client.Reader
	// SecretReader reads the pools' webhook Secrets (uncached: they are the users' Secrets).
	SecretReader client.Reader
	// Shared is the operator-wide secret, accepted for every pool; empty for none.
	Shared []byte
	// TTL is how long a secret read is reused (default DefaultSecretTTL), NegativeTTL how long
	// a failed read is (default DefaultNegativeTTL).
	TTL         time.Duration
	NegativeTTL time.Duration
	Now         func() time.Time
	// Log is told, once per Secret, that its value ended in a newline; zero value discards.
	Log logr.Logger

	mu      sync.Mutex
	cache   map[string]cachedSecret
	trimmed map[string]bool
}

type cachedSecret struct {
	value []byte
	err   error
	read  time.Time
}

// Candidates returns the operator-wide secret, then one candidate per distinct secret of the
// pools whose scope covers the repository the delivery claims to be about, granting the pools
// that hold it. The claim is unverified: it only narrows the search, and only a signature made
// with one of these secrets lets the delivery in. A delivery that names no repository is tried
// against every pool's secret, but its grant still names only the pools holding the secret,
// and those act only where they cover what the delivery is about.
func (s *Secrets) Candidates(ctx context.Context, repository string) ([]webhook.Secret, error) {
	var pools v1alpha1.RunnerPoolList
	if err := s.Pools.List(ctx, &pools); err != nil {
		return nil, fmt.Errorf("list pools: %w", err)
	}
	var out []webhook.Secret
	if len(s.Shared) > 0 {
		out = append(out, webhook.Secret{Value: s.Shared, Grant: &Grant{OperatorWide: true}})
	}
	byValue := map[string]*Grant{}
	for i := range pools.Items {
		pool := &pools.Items[i]
		ref := pool.Spec.Forgejo.WebhookSecretRef
		if ref == nil || (repository != "" && !Covers(pool, repository)) {
			continue
		}
		value, err := s.secret(ctx, pool.Namespace, ref)
		if err != nil || bytes.Equal(value, s.Shared) {
			// One pool's missing Secret must not stop another pool's deliveries. A pool whose
			// secret is the operator-wide one is served by the operator-wide candidate.
			continue
		}
		g := byValue[string(value)]
		if g == nil {
			g = &Grant{}
			byValue[string(value)] = g
			out = append(out, webhook.Secret{Value: value, Grant: g})
		}
		g.Pools = append(g.Pools, client.ObjectKeyFromObject(pool))
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
	negativeTTL := s.NegativeTTL
	if negativeTTL <= 0 {
		negativeTTL = DefaultNegativeTTL
	}
	s.mu.Lock()
	if c, ok := s.cache[id]; ok && now().Sub(c.read) < ttl && (c.err == nil || now().Sub(c.read) < negativeTTL) {
		s.mu.Unlock()
		return c.value, c.err
	}
	s.mu.Unlock()

	value, err := s.read(ctx, namespace, ref.Name, key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cache == nil {
		s.cache = map[string]cachedSecret{}
	}
	s.cache[id] = cachedSecret{value: value, err: err, read: now()}
	return value, err
}

// read reads one webhook secret, trimmed of a trailing newline (see webhook.TrimSecret).
func (s *Secrets) read(ctx context.Context, namespace, name, key string) ([]byte, error) {
	var secret corev1.Secret
	if err := s.SecretReader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &secret); err != nil {
		return nil, fmt.Errorf("read webhook Secret %s/%s: %w", namespace, name, err)
	}
	value, trimmed := webhook.TrimSecret(secret.Data[key])
	if len(value) == 0 {
		return nil, fmt.Errorf("webhook Secret %s/%s has no key %q, or it is empty", namespace, name, key)
	}
	if trimmed {
		id := namespace + "/" + name + "/" + key
		s.mu.Lock()
		first := !s.trimmed[id]
		if s.trimmed == nil {
			s.trimmed = map[string]bool{}
		}
		s.trimmed[id] = true
		s.mu.Unlock()
		if first && s.Log.GetSink() != nil {
			s.Log.Info("webhook Secret's value ends in a newline; it was trimmed, as Forgejo's hook form cannot hold one",
				"namespace", namespace, "secret", name, "key", key)
		}
	}
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

// Watcher is what the Sink asks of the jobs watcher; *jobwatch.Watcher is one.
type Watcher interface {
	Trigger(url string, repo jobwatch.RepositoryRef, cause string) int
	TriggerPools(pools []types.NamespacedName, repo jobwatch.RepositoryRef, cause string) int
	Offer(url, repository string, job jobwatch.Job) bool
	OfferPools(pools []types.NamespacedName, job jobwatch.Job) bool
}

var _ Watcher = (*jobwatch.Watcher)(nil)

// Sink hands verified deliveries to the jobs watcher, each within its secret's Grant.
type Sink struct {
	Pools   client.Reader
	Watcher Watcher
	Log     logr.Logger
}

// errNoGrant is a delivery without a Grant of this package: nothing may act on it.
var errNoGrant = errors.New("the delivery carries no grant")

// grant returns the Grant a delivery was verified under.
func grant(g any) (*Grant, error) {
	if gr, ok := g.(*Grant); ok && gr != nil {
		return gr, nil
	}
	return nil, errNoGrant
}

// triggerGranted asks the granted pools' connections to poll, where they cover the repository.
func (s *Sink) triggerGranted(g *Grant, repo jobwatch.RepositoryRef, cause string, delivery string) {
	asked := s.Watcher.TriggerPools(g.Pools, repo, cause)
	s.Log.V(1).Info("webhook asked its pools' connections for job polls", "delivery", webhook.SafeID(delivery),
		"repository", repo.FullName, "pools", len(g.Pools), "connections", asked)
}

// HandleRepositoryEvent asks for polls. Under the operator-wide secret, of every connection, on
// every Forgejo instance a pool covering the repository points at, whose scope covers it; under
// a pool's secret, of the connections of the pools holding it. The watcher coalesces the polls,
// so a flood of deliveries costs at most one poll per connection per window.
func (s *Sink) HandleRepositoryEvent(ctx context.Context, ev webhook.RepositoryEvent) {
	g, err := grant(ev.Grant)
	if err != nil {
		s.Log.Error(err, "webhook delivery dropped", "delivery", webhook.SafeID(ev.DeliveryID))
		return
	}
	cause := "poll after webhook delivery " + webhook.SafeID(ev.DeliveryID) + " (" + ev.Event + ")"
	repo := jobwatch.RepositoryRef{FullName: ev.Repository, ID: ev.RepoID, OwnerID: ev.OwnerID}
	if !g.OperatorWide {
		s.triggerGranted(g, repo, cause, ev.DeliveryID)
		return
	}
	var pools v1alpha1.RunnerPoolList
	if err := s.Pools.List(ctx, &pools); err != nil {
		s.Log.Error(err, "list pools for a webhook", "delivery", webhook.SafeID(ev.DeliveryID))
		return
	}
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
	s.Log.V(1).Info("webhook asked for job polls", "delivery", webhook.SafeID(ev.DeliveryID), "event", ev.Event,
		"repository", ev.Repository, "connections", asked)
}

// HandleJobEvent offers, under the operator-wide secret, the event's job to the watcher of every
// Forgejo instance a pool that can see the repository points at; the watcher ignores what it
// already knows, so repeats and late events cost nothing. Under a pool's secret it asks the
// connections of the pools holding it to poll, and moves on only jobs they already list (see
// the package comment).
func (s *Sink) HandleJobEvent(ctx context.Context, ev webhook.JobEvent) {
	g, err := grant(ev.Grant)
	if err != nil {
		s.Log.Error(err, "webhook delivery dropped", "delivery", webhook.SafeID(ev.DeliveryID))
		return
	}
	status := strings.TrimPrefix(ev.Event, "workflow_job_")
	job := jobwatch.Job{ID: ev.Job.ID, Attempt: ev.Job.Attempt, Handle: ev.Job.Handle, RunsOn: ev.Job.RunsOn, Status: status, TaskID: ev.Job.TaskID,
		RepoID: ev.Job.RepoID, OwnerID: ev.Job.OwnerID, Repository: ev.Repository, Via: "webhook delivery " + webhook.SafeID(ev.DeliveryID)}
	if !g.OperatorWide {
		// Any status is a cue, as a repository event is: a job that ended may have released
		// the jobs that needed it. A job the pools' connections already list may move on (it
		// runs, it ended and how), but a job is added by their polls only.
		cause := "poll after webhook delivery " + webhook.SafeID(ev.DeliveryID) + " (" + ev.Event + ")"
		s.triggerGranted(g, jobwatch.RepositoryRef{FullName: ev.Repository, ID: ev.Job.RepoID, OwnerID: ev.Job.OwnerID}, cause, ev.DeliveryID)
		if status != "waiting" && s.Watcher.OfferPools(g.Pools, job) {
			s.Log.V(1).Info("webhook job event taken for its pools' listed job", "delivery", webhook.SafeID(ev.DeliveryID), "job", job.ID, "status", status)
		}
		return
	}
	if ev.Job.Handle == "" || status == "blocked" {
		return
	}
	var pools v1alpha1.RunnerPoolList
	if err := s.Pools.List(ctx, &pools); err != nil {
		s.Log.Error(err, "list pools for a webhook", "delivery", webhook.SafeID(ev.DeliveryID))
		return
	}
	offered := map[string]bool{}
	for i := range pools.Items {
		url := strings.TrimSuffix(pools.Items[i].Spec.Forgejo.URL, "/")
		if offered[url] || (ev.Repository != "" && !Covers(&pools.Items[i], ev.Repository)) {
			continue
		}
		offered[url] = true
		if s.Watcher.Offer(url, ev.Repository, job) {
			s.Log.V(1).Info("webhook job event taken", "delivery", webhook.SafeID(ev.DeliveryID), "job", job.ID, "status", status)
		}
	}
}
