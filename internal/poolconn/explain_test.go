package poolconn

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
)

func poolWithScope(scope v1alpha1.Scope, org, repo string) *v1alpha1.RunnerPool {
	p := &v1alpha1.RunnerPool{}
	p.Spec.Forgejo.Scope, p.Spec.Forgejo.Organization, p.Spec.Forgejo.Repository = scope, org, repo
	p.Spec.Forgejo.TokenSecretRef.Name = "fj-token"
	return p
}

func answered(code int, endpoint, message string) error {
	return fmt.Errorf("list jobs: %w", &forgejo.APIError{Endpoint: endpoint, StatusCode: code, Message: message})
}

// Each 403 and 404 Forgejo v15.0.3 gives names what to fix and quotes Forgejo; an answer is
// never reported as "Unreachable".
func TestExplainSaysWhatToFix(t *testing.T) {
	repo := poolWithScope(v1alpha1.ScopeRepository, "", "acme/app")
	org := poolWithScope(v1alpha1.ScopeOrganization, "acme", "")
	global := poolWithScope(v1alpha1.ScopeGlobal, "", "")
	for _, tc := range []struct {
		name   string
		pool   *v1alpha1.RunnerPool
		err    error
		reason string
		want   []string
	}{
		{"read scope missing", repo, answered(403, forgejo.EndpointListJobs, "token does not have at least one of required scope(s): [read:repository]"),
			"TokenScopeMissing", []string{"fj-token", "read:repository", "write:repository", `Forgejo said: "token does not have`}},
		{"admin scope missing", global, answered(403, forgejo.EndpointRegisterRunner, "token does not have at least one of required scope(s): [write:admin]"),
			"TokenScopeMissing", []string{"write:admin"}},
		{"not the repository owner", repo, answered(403, forgejo.EndpointListJobs, "user should be the owner of the repo"),
			"NotRepositoryOwner", []string{"owner of repository acme/app", "owner of the organization", "site administrator", "user should be the owner"}},
		{"not an organization owner", org, answered(403, forgejo.EndpointListJobs, "Must be an organization owner"),
			"NotOrganizationOwner", []string{"owner of organization acme", "Must be an organization owner"}},
		{"not a site admin", global, answered(403, forgejo.EndpointListJobs, "user should be the site admin"),
			"NotSiteAdmin", []string{"site administrator"}},
		{"public-only token", repo, answered(403, forgejo.EndpointListJobs, "token scope is limited to public repos"),
			"TokenPublicOnly", []string{"public only", "limited to public repos"}},
		{"other 403", repo, answered(403, forgejo.EndpointListJobs, "something else"), "Forbidden", []string{"something else"}},
		{"invisible repository", repo, answered(404, forgejo.EndpointListJobs, "The target couldn't be found."),
			"ScopeNotVisible", []string{"repository acme/app", "cannot see it", "Actions is disabled", "couldn't be found"}},
		{"server error", repo, answered(500, forgejo.EndpointListJobs, ""), "ForgejoError", []string{"500"}},
		{"bad request", repo, answered(422, forgejo.EndpointListJobs, "invalid"), "ForgejoError", []string{"422", "invalid"}},
	} {
		reason, msg := Explain(tc.pool, tc.err)
		if reason != tc.reason {
			t.Errorf("%s: reason %s, want %s (%s)", tc.name, reason, tc.reason, msg)
		}
		for _, w := range tc.want {
			if !strings.Contains(msg, w) {
				t.Errorf("%s: message %q lacks %q", tc.name, msg, w)
			}
		}
	}
	if reason, _ := Explain(repo, &forgejo.TransportError{Endpoint: forgejo.EndpointListJobs, Err: errors.New("connection refused")}); reason != "Unreachable" {
		t.Errorf("no answer at all: reason %s, want Unreachable", reason)
	}
}
