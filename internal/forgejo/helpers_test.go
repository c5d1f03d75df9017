package forgejo_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
)

// adminToken is deliberately not 40 hex digits, so that tests exercise the exact-match redaction
// and not only the token-shape pattern.
const adminToken = "sim-admin-token-for-client-tests"

type env struct {
	t   *testing.T
	sim *forgejosim.Server
	url string
	// secrets collects every token a test handled, for the no-leak assertions.
	secrets []string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	sim, url := forgejosim.NewTestServer(t, forgejosim.Options{AdminToken: adminToken, Seed: 1})
	return &env{t: t, sim: sim, url: url, secrets: []string{adminToken}}
}

func (e *env) token(sc forgejosim.Scope) string {
	e.t.Helper()
	tok, err := e.sim.CreateToken(sc)
	if err != nil {
		e.t.Fatalf("create token: %v", err)
	}
	e.secrets = append(e.secrets, tok)
	return tok
}

func (e *env) client(scope forgejo.Scope, token string, mutate ...func(*forgejo.Config)) *forgejo.Client {
	e.t.Helper()
	cfg := forgejo.Config{BaseURL: e.url, Token: token, Scope: scope, HTTPClient: &http.Client{}}
	for _, m := range mutate {
		m(&cfg)
	}
	c, err := forgejo.New(cfg)
	if err != nil {
		e.t.Fatalf("new client: %v", err)
	}
	return c
}

func (e *env) register(c *forgejo.Client, name string) forgejo.Registration {
	e.t.Helper()
	reg, err := c.RegisterRunner(ctx(e.t), name, "pool=test", true)
	if err != nil {
		e.t.Fatalf("register %s: %v", name, err)
	}
	e.secrets = append(e.secrets, reg.Token)
	return reg
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func mustNoErr(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// wantIs checks err against every class in is and none in isNot.
func wantIs(t *testing.T, err error, is []error, isNot []error) {
	t.Helper()
	if err == nil {
		t.Fatalf("want an error, got nil")
	}
	for _, target := range is {
		if !errors.Is(err, target) {
			t.Errorf("error %q: want errors.Is %q", err, target)
		}
	}
	for _, target := range isNot {
		if errors.Is(err, target) {
			t.Errorf("error %q: want not errors.Is %q", err, target)
		}
	}
}
