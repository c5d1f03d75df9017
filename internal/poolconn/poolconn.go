// Package poolconn turns a RunnerPool's spec.forgejo into a Forgejo client: it reads the API
// token from the pool's Secret (the token never leaves the operator) and names the connection
// so that pools sharing one share a jobs poller.
package poolconn

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jobwatch"
)

// ErrTokenSecret marks a problem with the pool's token Secret: missing, no such key, or empty.
var ErrTokenSecret = errors.New("token secret")

// Factory builds clients for pools. Its HTTP client and metrics observer are shared.
type Factory struct {
	Reader     client.Reader
	HTTPClient *http.Client
	Observer   forgejo.Observer
}

// Client returns a Forgejo client for the pool's instance and scope, and its connection key.
func (f *Factory) Client(ctx context.Context, pool *v1alpha1.RunnerPool) (*forgejo.Client, jobwatch.Connection, error) {
	spec := pool.Spec.Forgejo
	token, err := f.token(ctx, pool.Namespace, spec.TokenSecretRef)
	if err != nil {
		return nil, jobwatch.Connection{}, err
	}
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
