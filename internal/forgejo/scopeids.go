package forgejo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
)

// Endpoint names of the calls that resolve a scope to its ids (see ResolveScope).
const (
	EndpointGetOrganization = "GET /orgs/{org}"
	EndpointGetRepository   = "GET /repos/{owner}/{repo}"
	EndpointGetUser         = "GET /user"
)

// ScopeIDs are the numeric ids a scope stands for, as Forgejo's jobs and runners carry them
// (repo_id, owner_id): a job belongs to a scope when its repo_id is RepoID (repository scope), or
// its owner_id is OwnerID (organization and user scopes). The global scope is the zero value and
// covers every job.
type ScopeIDs struct {
	// OwnerID is the organization's or user's id, and for a repository its owner's.
	OwnerID int64
	// RepoID is the repository's id, zero unless the scope is a repository.
	RepoID int64
}

// ResolveScope asks Forgejo for the ids of the client's scope; the global scope needs no call.
// What each call needs in Forgejo v15.0.3 (routers/api/v1/api.go); the pool's write: token scope
// includes the read: one:
//   - organization, GET /api/v1/orgs/{org}: token scope read:organization (403 without it). No
//     token is needed for a public organization; a limited one needs a signed-in user and a
//     private one a member or site administrator, else 404 (org.Get, HasOrgOrUserVisible), as for
//     an organization that does not exist.
//   - repository, GET /api/v1/repos/{owner}/{repo}: read:repository (403 without it); a
//     repository the token's user may not read, or that does not exist, is 404 (repoAssignment).
//   - user, GET /api/v1/user: read:user (403 without it) and a token (401 without one).
//
// A 404 is ErrNotFound and ErrScopeNotVisible; a 403 is ErrForbidden, explained by Deny.
func (c *Client) ResolveScope(ctx context.Context) (ScopeIDs, error) {
	var (
		endpoint, path string
		parse          func([]byte) (ScopeIDs, error)
	)
	switch c.scope.Kind {
	case ScopeGlobal:
		return ScopeIDs{}, nil
	case ScopeOrganization:
		endpoint, path, parse = EndpointGetOrganization, "/api/v1/orgs/"+url.PathEscape(c.scope.Organization), parseOrganizationIDs
	case ScopeRepository:
		endpoint, path = EndpointGetRepository, "/api/v1/repos/"+url.PathEscape(c.scope.Owner)+"/"+url.PathEscape(c.scope.Repo)
		parse = parseRepositoryIDs
	case ScopeUser:
		endpoint, path, parse = EndpointGetUser, "/api/v1/user", parseUserIDs
	default:
		return ScopeIDs{}, fmt.Errorf("resolve scope: unknown scope %q", c.scope.Kind)
	}
	callerCtx := ctx
	ctx, cancel := c.withDeadline(ctx)
	defer cancel()
	resp, err := c.do(callerCtx, ctx, request{method: http.MethodGet, endpoint: endpoint, path: path})
	if errors.Is(err, ErrNotFound) {
		err = withClass(ErrScopeNotVisible, err)
	}
	if err != nil {
		return ScopeIDs{}, fmt.Errorf("resolve %s: %w", c.scope, err)
	}
	ids, err := parse(resp.body)
	if err != nil {
		return ScopeIDs{}, fmt.Errorf("resolve %s: %w: %w", c.scope, ErrInvalidResponse, err)
	}
	return ids, nil
}

// parseOrganizationIDs reads an Organization (modules/structs/org.go): its id is the owner id.
func parseOrganizationIDs(data []byte) (ScopeIDs, error) {
	var org struct {
		ID int64 `json:"id"`
	}
	if err := json.Unmarshal(data, &org); err != nil {
		return ScopeIDs{}, fmt.Errorf("decode organization: %w", err)
	}
	if org.ID <= 0 {
		return ScopeIDs{}, errors.New("decode organization: missing id")
	}
	return ScopeIDs{OwnerID: org.ID}, nil
}

// parseRepositoryIDs reads a Repository (modules/structs/repo.go): its id and its owner's.
func parseRepositoryIDs(data []byte) (ScopeIDs, error) {
	var repo struct {
		ID    int64 `json:"id"`
		Owner *struct {
			ID int64 `json:"id"`
		} `json:"owner"`
	}
	if err := json.Unmarshal(data, &repo); err != nil {
		return ScopeIDs{}, fmt.Errorf("decode repository: %w", err)
	}
	if repo.ID <= 0 || repo.Owner == nil || repo.Owner.ID <= 0 {
		return ScopeIDs{}, errors.New("decode repository: missing id or owner id")
	}
	return ScopeIDs{OwnerID: repo.Owner.ID, RepoID: repo.ID}, nil
}

// parseUserIDs reads a User (modules/structs/user.go): its id is the owner id.
func parseUserIDs(data []byte) (ScopeIDs, error) {
	var user struct {
		ID int64 `json:"id"`
	}
	if err := json.Unmarshal(data, &user); err != nil {
		return ScopeIDs{}, fmt.Errorf("decode user: %w", err)
	}
	if user.ID <= 0 {
		return ScopeIDs{}, errors.New("decode user: missing id")
	}
	return ScopeIDs{OwnerID: user.ID}, nil
}
