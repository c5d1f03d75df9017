package forgejo_test

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
)

// TestResolveScope: each scope's ids are those the simulator puts on the jobs of its
// repositories, each learnt with one call to the scope's endpoint (none for the global scope).
func TestResolveScope(t *testing.T) {
	e := newEnv(t)
	mustNoErr(t, e.sim.EnsureUser("alice"), "ensure user")
	queue := func(repo string) forgejosim.Job {
		jobs, err := e.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: repo, RunsOn: []string{"docker"}})
		mustNoErr(t, err, "queue jobs")
		return jobs[0]
	}
	appJob, aliceJob := queue("acme/app"), queue("alice/tools")
	queue("acme/other") // a second repository of the same owner: a different repo_id

	for _, tc := range []struct {
		name     string
		scope    forgejo.Scope
		token    string
		want     forgejo.ScopeIDs
		endpoint string // "" when no call is expected
	}{
		{"global", forgejo.GlobalScope(), adminToken, forgejo.ScopeIDs{}, ""},
		{"organization", forgejo.OrganizationScope("acme"), e.token(forgejosim.OrganizationScope("acme")),
			forgejo.ScopeIDs{OwnerID: appJob.OwnerID}, forgejo.EndpointGetOrganization},
		{"repository", forgejo.RepositoryScope("acme", "app"), e.token(forgejosim.RepositoryScope("acme/app")),
			forgejo.ScopeIDs{OwnerID: appJob.OwnerID, RepoID: appJob.RepoID}, forgejo.EndpointGetRepository},
		{"user", forgejo.UserScope(), e.token(forgejosim.UserScope("alice")),
			forgejo.ScopeIDs{OwnerID: aliceJob.OwnerID}, forgejo.EndpointGetUser},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var calls []string
			obs := forgejo.ObserverFunc(func(endpoint, code string, _ time.Duration) {
				mu.Lock()
				defer mu.Unlock()
				calls = append(calls, endpoint+" "+code)
			})
			c := e.client(tc.scope, tc.token, func(cfg *forgejo.Config) { cfg.Observer = obs })
			got, err := c.ResolveScope(ctx(t))
			mustNoErr(t, err, "resolve scope")
			if got != tc.want {
				t.Fatalf("ids %+v, want %+v", got, tc.want)
			}
			var want []string
			if tc.endpoint != "" {
				want = []string{tc.endpoint + " 200"}
			}
			mu.Lock()
			defer mu.Unlock()
			if !slices.Equal(calls, want) {
				t.Fatalf("calls %q, want %q", calls, want)
			}
		})
	}
	if appJob.RepoID == 0 || appJob.OwnerID == 0 || aliceJob.OwnerID == appJob.OwnerID {
		t.Fatalf("jobs %+v %+v do not tell the scopes apart", appJob, aliceJob)
	}
}

// TestResolveScopeRefusals: Forgejo's refusals keep their classes, 403s say which token scope is
// missing, and no token shows in an error.
func TestResolveScopeRefusals(t *testing.T) {
	e := newEnv(t)
	mustNoErr(t, e.sim.EnsureUser("alice"), "ensure user")
	mustNoErr(t, e.sim.EnsureRepository("acme/app"), "ensure repo")
	mustNoErr(t, e.sim.EnsureRepository("globex/site"), "ensure repo")
	mustNoErr(t, e.sim.SetOrganizationVisibility("globex", forgejosim.VisibilityPrivate), "private org")
	repoTok := e.token(forgejosim.RepositoryScope("acme/app"))
	orgTok := e.token(forgejosim.OrganizationScope("acme"))
	bad := "0123456789abcdef0123456789abcdef01234567"
	e.secrets = append(e.secrets, bad)

	for _, tc := range []struct {
		name   string
		scope  forgejo.Scope
		token  string
		is     []error
		isNot  []error
		denied []string // the token scopes a 403 names
	}{
		{"organization without read:organization", forgejo.OrganizationScope("acme"), repoTok,
			[]error{forgejo.ErrForbidden}, []error{forgejo.ErrNotFound, forgejo.ErrScopeNotVisible}, []string{"read:organization"}},
		{"user without read:user", forgejo.UserScope(), orgTok,
			[]error{forgejo.ErrForbidden}, []error{forgejo.ErrNotFound}, []string{"read:user"}},
		{"missing organization", forgejo.OrganizationScope("missing"), orgTok,
			[]error{forgejo.ErrNotFound, forgejo.ErrScopeNotVisible}, []error{forgejo.ErrForbidden, forgejo.ErrGone}, nil},
		{"private organization of others", forgejo.OrganizationScope("globex"), orgTok,
			[]error{forgejo.ErrNotFound, forgejo.ErrScopeNotVisible}, []error{forgejo.ErrForbidden}, nil},
		{"repository out of the token's reach", forgejo.RepositoryScope("globex", "site"), repoTok,
			[]error{forgejo.ErrNotFound, forgejo.ErrScopeNotVisible}, []error{forgejo.ErrForbidden}, nil},
		{"missing repository", forgejo.RepositoryScope("acme", "missing"), adminToken,
			[]error{forgejo.ErrNotFound, forgejo.ErrScopeNotVisible}, nil, nil},
		{"rejected token", forgejo.RepositoryScope("acme", "app"), bad,
			[]error{forgejo.ErrUnauthorized}, []error{forgejo.ErrNotFound, forgejo.ErrRetryable}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.client(tc.scope, tc.token).ResolveScope(ctx(t))
			wantIs(t, err, tc.is, tc.isNot)
			d, denied := forgejo.Deny(err)
			if denied != (tc.denied != nil) || denied && (d.Kind != forgejo.DenialTokenScope || !slices.Equal(d.Scopes, tc.denied)) {
				t.Fatalf("denial %+v (%v), want token scopes %v", d, denied, tc.denied)
			}
			for _, s := range e.secrets {
				if strings.Contains(err.Error(), s) {
					t.Fatalf("error shows a token: %v", err)
				}
			}
		})
	}

	t.Run("server error", func(t *testing.T) {
		mustNoErr(t, e.sim.SetFaults(forgejosim.Faults{Endpoints: []forgejosim.Fault{
			{Endpoint: forgejosim.EndpointGetRepository, ErrorRate: 1, StatusCode: http.StatusServiceUnavailable},
		}}), "set faults")
		t.Cleanup(func() { _ = e.sim.SetFaults(forgejosim.Faults{}) })
		_, err := e.client(forgejo.RepositoryScope("acme", "app"), repoTok).ResolveScope(ctx(t))
		wantIs(t, err, []error{forgejo.ErrServer, forgejo.ErrRetryable}, []error{forgejo.ErrNotFound})
	})
}

// TestResolveScopeInvalidAnswers: a 2xx answer without the ids is ErrInvalidResponse, never zero
// ids, which would read as the global scope.
func TestResolveScopeInvalidAnswers(t *testing.T) {
	for _, tc := range []struct {
		scope forgejo.Scope
		body  string
	}{
		{forgejo.OrganizationScope("acme"), `{"name":"acme"}`},
		{forgejo.OrganizationScope("acme"), `[]`},
		{forgejo.RepositoryScope("acme", "app"), `{"id":7}`},
		{forgejo.RepositoryScope("acme", "app"), `{"id":7,"owner":{"login":"acme"}}`},
		{forgejo.RepositoryScope("acme", "app"), `{"owner":{"id":3}}`},
		{forgejo.UserScope(), `{"id":"5"}`},
		{forgejo.UserScope(), `<html>`},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(tc.body))
		}))
		c, err := forgejo.New(forgejo.Config{BaseURL: srv.URL, Token: "t0ken-for-invalid-answers", Scope: tc.scope})
		mustNoErr(t, err, "new client")
		ids, err := c.ResolveScope(t.Context())
		srv.Close()
		if err == nil {
			t.Errorf("%s %s: ids %+v, want an error", tc.scope, tc.body, ids)
			continue
		}
		wantIs(t, err, []error{forgejo.ErrInvalidResponse}, []error{forgejo.ErrRetryable})
	}
}
