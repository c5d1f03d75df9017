// Package poolconn turns a RunnerPool's spec.forgejo into a Forgejo client: it reads the API
// token from the pool's Secret (the token never leaves the operator) and names the connection
// so that pools sharing one share a jobs poller.
package poolconn

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jobwatch"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/tokenkeep"
)

// ErrTokenSecret marks a problem with the pool's token Secret: missing, no such key, or empty.
var ErrTokenSecret = errors.New("token secret")

// DefaultTokenTTL is how long a pool's token, once read, is used before its Secret is read
// again: every reconcile of a pool and of each of its Runners needs it, and reading it from the
// API server each time costs a request per reconcile. A rotated token is picked up within it.
const DefaultTokenTTL = 10 * time.Second

// Factory builds clients for pools. Its HTTP client and metrics observer are shared.
type Factory struct {
	Reader     client.Reader
	HTTPClient *http.Client
	Observer   forgejo.Observer
	// TokenTTL is how long a token read is reused; 0 means DefaultTokenTTL.
	TokenTTL time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu     sync.Mutex
	tokens map[string]cachedToken
}

type cachedToken struct {
	value string
	read  time.Time
}

// Client returns a Forgejo client for the pool's instance and scope, and its connection key.
func (f *Factory) Client(ctx context.Context, pool *v1alpha1.RunnerPool) (*forgejo.Client, jobwatch.Connection, error) {
	token, err := f.Token(ctx, pool)
	if err != nil {
		return nil, jobwatch.Connection{}, err
	}
	return f.clientWith(pool, token)
}

// Token returns the pool's API token, from its Secret or the last read of it within TokenTTL.
func (f *Factory) Token(ctx context.Context, pool *v1alpha1.RunnerPool) (string, error) {
	return f.token(ctx, pool.Namespace, pool.Spec.Forgejo.TokenSecretRef)
}

// CleanupClient returns a client to delete the pool's registrations with: the pool's own, or,
// when its token Secret cannot be read, one with the copy of the token the pool keeps for that
// (see package tokenkeep). kept says the copy was used. It is never to be used for anything but
// deleting registrations and listing them to find which.
func (f *Factory) CleanupClient(ctx context.Context, pool *v1alpha1.RunnerPool) (c *forgejo.Client, kept bool, err error) {
	c, _, err = f.Client(ctx, pool)
	if err == nil || !errors.Is(err, ErrTokenSecret) {
		return c, false, err
	}
	c, kerr := f.KeptClient(ctx, pool)
	if kerr != nil {
		return nil, false, fmt.Errorf("%w; and %w", err, kerr)
	}
	return c, true, nil
}

// KeptClient returns a client with the copy of the token the pool keeps for deleting its
// registrations (see package tokenkeep), for a caller whose Client failed on the token Secret.
func (f *Factory) KeptClient(ctx context.Context, pool *v1alpha1.RunnerPool) (*forgejo.Client, error) {
	var secret corev1.Secret
	if err := f.Reader.Get(ctx, types.NamespacedName{Namespace: pool.Namespace, Name: tokenkeep.Name(pool)}, &secret); err != nil {
		return nil, fmt.Errorf("read the pool's kept token copy: %w", err)
	}
	token, ok := tokenkeep.Token(&secret, pool)
	if !ok {
		return nil, fmt.Errorf("secret %s is not the pool's kept token copy", secret.Name)
	}
	c, _, err := f.clientWith(pool, token)
	return c, err
}

func (f *Factory) clientWith(pool *v1alpha1.RunnerPool, token string) (*forgejo.Client, jobwatch.Connection, error) {
	spec := pool.Spec.Forgejo
	scope, err := forgejo.ParseScope(string(spec.Scope), spec.Organization, spec.Repository)
	if err != nil {
		return nil, jobwatch.Connection{}, fmt.Errorf("spec.forgejo: %w", err)
	}
	c, err := forgejo.New(forgejo.Config{
		BaseURL:    spec.URL,
		Token:      token,
		Scope:      scope,
		HTTPClient: f.HTTPClient,
		Observer:   f.Observer,
	})
	if err != nil {
		return nil, jobwatch.Connection{}, err
	}
	return c, jobwatch.NewConnection(strings.TrimSuffix(spec.URL, "/"), scope.String(), token), nil
}

func (f *Factory) token(ctx context.Context, namespace string, ref v1alpha1.SecretKeySelector) (string, error) {
	key := ref.Key
	if key == "" {
		key = "token"
	}
	now := time.Now
	if f.Now != nil {
		now = f.Now
	}
	ttl := cmp.Or(f.TokenTTL, DefaultTokenTTL)
	id := namespace + "/" + ref.Name + "/" + key
	f.mu.Lock()
	if c, ok := f.tokens[id]; ok && now().Sub(c.read) < ttl {
		f.mu.Unlock()
		return c.value, nil
	}
	f.mu.Unlock()
	// Failures are not kept: a Secret fixed by its owner is seen at the next reconcile.
	value, err := f.readToken(ctx, namespace, ref.Name, key)
	if err != nil {
		return "", err
	}
	f.mu.Lock()
	if f.tokens == nil || len(f.tokens) > maxCachedTokens {
		f.tokens = map[string]cachedToken{}
	}
	f.tokens[id] = cachedToken{value: value, read: now()}
	f.mu.Unlock()
	return value, nil
}

// maxCachedTokens bounds the token cache; past it the cache starts afresh.
const maxCachedTokens = 10000

func (f *Factory) readToken(ctx context.Context, namespace, name, key string) (string, error) {
	ref := v1alpha1.SecretKeySelector{Name: name}
	var secret corev1.Secret
	if err := f.Reader.Get(ctx, types.NamespacedName{Namespace: namespace, Name: ref.Name}, &secret); err != nil {
		return "", fmt.Errorf("%w: read Secret %s/%s: %w", ErrTokenSecret, namespace, ref.Name, err)
	}
	value, ok := secret.Data[key]
	if !ok || len(value) == 0 {
		return "", fmt.Errorf("%w: Secret %s/%s has no key %q", ErrTokenSecret, namespace, ref.Name, key)
	}
	return string(value), nil
}
