package forgejo_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"testing"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
)

func urlQuery(raw string) (url.Values, error) { return url.ParseQuery(raw) }

// Forgejo v15.0.3's 403 messages (routers/api/v1/api.go) say what to fix.
func TestDeny(t *testing.T) {
	for _, tc := range []struct {
		message string
		kind    forgejo.DenialKind
		scopes  []string
	}{
		{"token does not have at least one of required scope(s): [write:repository]", forgejo.DenialTokenScope, []string{"write:repository"}},
		{"token does not have at least one of required scope(s): [read:organization]", forgejo.DenialTokenScope, []string{"read:organization"}},
		{"token does not have at least one of required scope(s): [write:admin]", forgejo.DenialTokenScope, []string{"write:admin"}},
		{"user should be the owner of the repo", forgejo.DenialRepositoryOwner, nil},
		{"Must be an organization owner", forgejo.DenialOrganizationOwner, nil},
		{"user should be the site admin", forgejo.DenialSiteAdmin, nil},
		{"token scope is limited to public repos", forgejo.DenialPublicOnly, nil},
		{"token scope is limited to public orgs", forgejo.DenialPublicOnly, nil},
		{"something new", forgejo.DenialOther, nil},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			_ = json.NewEncoder(w).Encode(map[string]string{"message": tc.message, "url": "https://forgejo.example/api/swagger"})
		}))
		c, err := forgejo.New(forgejo.Config{BaseURL: srv.URL, Token: "t0ken-for-deny-tests", Scope: forgejo.RepositoryScope("acme", "app")})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.ListJobs(t.Context())
		srv.Close()
		if !errors.Is(err, forgejo.ErrForbidden) || errors.Is(err, forgejo.ErrNotFound) || errors.Is(err, forgejo.ErrScopeNotVisible) {
			t.Fatalf("%q: error %v, want ErrForbidden only", tc.message, err)
		}
		d, ok := forgejo.Deny(err)
		if !ok || d.Kind != tc.kind || !slices.Equal(d.Scopes, tc.scopes) || d.Message != tc.message || d.Endpoint != forgejo.EndpointListJobs {
			t.Fatalf("%q: denial %+v, %v; want kind %s scopes %v", tc.message, d, ok, tc.kind, tc.scopes)
		}
	}
	if _, ok := forgejo.Deny(errors.New("connection refused")); ok {
		t.Fatal("a transport error read as a denial")
	}
}
