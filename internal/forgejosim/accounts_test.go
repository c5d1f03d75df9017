package forgejosim_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
)

// TestAccountRoutes follows GET /orgs/{org}, /repos/{owner}/{repo} and /user through Forgejo
// v15.0.3's middlewares; every answer passes the contract checker (newEnv).
func TestAccountRoutes(t *testing.T) {
	e := newEnv(t)
	mustNoErr(t, e.sim.EnsureUser("alice"), "ensure user")
	mustNoErr(t, e.sim.EnsureRepository("globex/site"), "ensure repo")
	appJob := e.queue("acme/app", 1, "docker")[0]
	aliceJob := e.queue("alice/tools", 1, "docker")[0]

	orgTok := e.token(forgejosim.OrganizationScope("acme"))
	memberTok := e.token(forgejosim.Scope{Kind: forgejosim.ScopeOrganization, Owner: "acme", Member: true})
	repoTok := e.token(forgejosim.RepositoryScope("acme/app"))
	collabTok := e.token(forgejosim.Scope{Kind: forgejosim.ScopeRepository, Repo: "acme/app", Member: true})
	aliceTok := e.token(forgejosim.UserScope("alice"))
	aliceAll := e.token(forgejosim.Scope{Kind: forgejosim.ScopeUser, Owner: "alice", TokenScopes: []string{"all"}})
	readUser := e.token(forgejosim.Scope{Kind: forgejosim.ScopeUser, Owner: "alice", TokenScopes: []string{"read:user"}})

	t.Run("ok", func(t *testing.T) {
		for _, tok := range []string{orgTok, memberTok, adminToken, aliceAll, ""} {
			var org forgejosim.APIOrganization
			e.expect(http.MethodGet, "/api/v1/orgs/acme", tok, nil, http.StatusOK, &org)
			if org.ID != appJob.OwnerID || org.Name != "acme" || org.UserName != "acme" || org.Visibility != "public" {
				t.Errorf("org %+v, want id %d", org, appJob.OwnerID)
			}
		}
		for _, c := range []struct {
			path, token string
			job         forgejosim.Job
			admin       bool
		}{
			{"/api/v1/repos/acme/app", repoTok, appJob, true},
			{"/api/v1/repos/ACME/App", orgTok, appJob, true},
			{"/api/v1/repos/acme/app", collabTok, appJob, false},
			{"/api/v1/repos/acme/app", memberTok, appJob, false},
			{"/api/v1/repos/acme/app", adminToken, appJob, true},
			{"/api/v1/repos/alice/tools", aliceTok, aliceJob, true},
		} {
			var repo forgejosim.APIRepository
			e.expect(http.MethodGet, c.path, c.token, nil, http.StatusOK, &repo)
			if repo.ID != c.job.RepoID || repo.Owner == nil || repo.Owner.ID != c.job.OwnerID || repo.FullName != c.job.Repo {
				t.Errorf("%s: repository %d %s owner %+v, want %d %s owner %d", c.path, repo.ID, repo.FullName, repo.Owner, c.job.RepoID, c.job.Repo, c.job.OwnerID)
			}
			if repo.Permissions == nil || repo.Permissions.Admin != c.admin || !repo.Permissions.Pull {
				t.Errorf("%s: permissions %+v, want admin %v", c.path, repo.Permissions, c.admin)
			}
		}
		for _, c := range []struct {
			token, login string
			admin        bool
		}{
			{aliceTok, "alice", false},
			{readUser, "alice", false},
			{adminToken, forgejosim.AdminUserName, true},
		} {
			var u forgejosim.APIUser
			e.expect(http.MethodGet, "/api/v1/user", c.token, nil, http.StatusOK, &u)
			if u.Login != c.login || u.IsAdmin != c.admin || u.ID == 0 {
				t.Errorf("user %+v, want %s admin %v", u, c.login, c.admin)
			}
		}
		var u forgejosim.APIUser
		e.expect(http.MethodGet, "/api/v1/user", aliceTok, nil, http.StatusOK, &u)
		if u.ID != aliceJob.OwnerID {
			t.Errorf("alice is %d, her repository's owner %d", u.ID, aliceJob.OwnerID)
		}
	})

	t.Run("401", func(t *testing.T) {
		for _, c := range []struct{ path, token, message string }{
			{"/api/v1/orgs/acme", "not-a-token", "invalid username, password or token"},
			{"/api/v1/repos/acme/app", "not-a-token", "invalid username, password or token"},
			{"/api/v1/user", "not-a-token", "invalid username, password or token"},
			{"/api/v1/user", "", "token is required"},
		} {
			wantError(t, e, c.path, c.token, http.StatusUnauthorized, c.message)
		}
	})

	t.Run("403", func(t *testing.T) {
		for _, c := range []struct{ path, token, message string }{
			{"/api/v1/orgs/acme", repoTok, "token does not have at least one of required scope(s): [read:organization]"},
			{"/api/v1/orgs/acme", aliceTok, "token does not have at least one of required scope(s): [read:organization]"},
			{"/api/v1/repos/acme/app", readUser, "token does not have at least one of required scope(s): [read:repository]"},
			{"/api/v1/user", orgTok, "token does not have at least one of required scope(s): [read:user]"},
			{"/api/v1/user", repoTok, "token does not have at least one of required scope(s): [read:user]"},
			// The token scope is checked before the lookup, so a missing organization is 403 too.
			{"/api/v1/orgs/missing", repoTok, "token does not have at least one of required scope(s): [read:organization]"},
		} {
			wantError(t, e, c.path, c.token, http.StatusForbidden, c.message)
		}
	})

	t.Run("404", func(t *testing.T) {
		mustNoErr(t, e.sim.SetOrganizationVisibility("globex", forgejosim.VisibilityPrivate), "private org")
		for _, c := range []struct{ path, token, message string }{
			{"/api/v1/orgs/missing", orgTok, "GetOrgByName"},
			{"/api/v1/orgs/alice", aliceAll, "GetOrgByName"},
			{"/api/v1/orgs/globex", orgTok, "HasOrgOrUserVisible"},
			{"/api/v1/orgs/globex", "", "HasOrgOrUserVisible"},
			{"/api/v1/repos/nobody/app", adminToken, "GetUserByName"},
			{"/api/v1/repos/acme/missing", adminToken, "The target couldn't be found."},
			{"/api/v1/repos/globex/site", repoTok, "The target couldn't be found."},
			{"/api/v1/repos/acme/app", aliceAll, "The target couldn't be found."},
			{"/api/v1/repos/acme/app", "", "The target couldn't be found."},
		} {
			wantError(t, e, c.path, c.token, http.StatusNotFound, c.message)
		}
		// Site administrators and members still see the private organization; limited is seen by
		// any signed-in user.
		e.expect(http.MethodGet, "/api/v1/orgs/globex", adminToken, nil, http.StatusOK, nil)
		e.expect(http.MethodGet, "/api/v1/orgs/globex", e.token(forgejosim.OrganizationScope("globex")), nil, http.StatusOK, nil)
		e.expect(http.MethodGet, "/api/v1/orgs/globex", e.token(forgejosim.RepositoryScope("globex/site")), nil, http.StatusForbidden, nil)
		mustNoErr(t, e.sim.SetOrganizationVisibility("globex", forgejosim.VisibilityLimited), "limited org")
		e.expect(http.MethodGet, "/api/v1/orgs/globex", orgTok, nil, http.StatusOK, nil)
		wantError(t, e, "/api/v1/orgs/globex", "", http.StatusNotFound, "HasOrgOrUserVisible")
	})
}

func wantError(t *testing.T, e *env, path, token string, status int, message string) {
	t.Helper()
	resp, body := e.do(http.MethodGet, path, token, nil)
	var apiErr forgejosim.APIError
	if resp.StatusCode != status || json.Unmarshal(body, &apiErr) != nil || apiErr.Message != message || apiErr.URL == "" {
		t.Errorf("GET %s: %d %s, want %d %q", path, resp.StatusCode, body, status, message)
	}
}
