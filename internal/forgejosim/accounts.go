package forgejosim

import (
	"fmt"
	"net/http"
	"strings"
)

// Endpoint names of the account routes, used to aim injected faults (see Fault).
const (
	EndpointGetOrganization = "get-organization"
	EndpointGetRepository   = "get-repository"
	EndpointGetUser         = "get-user"
)

// Visibilities of a user or organization (modules/structs/visible_type.go).
const (
	VisibilityPublic  = "public"
	VisibilityLimited = "limited"
	VisibilityPrivate = "private"
)

// APIOrganization is Forgejo's Organization (modules/structs/org.go) as services/convert
// ToOrganization fills it; "username" is the deprecated copy of "name".
type APIOrganization struct {
	ID                        int64  `json:"id"`
	Name                      string `json:"name"`
	FullName                  string `json:"full_name"`
	Email                     string `json:"email"`
	AvatarURL                 string `json:"avatar_url"`
	Description               string `json:"description"`
	Website                   string `json:"website"`
	Location                  string `json:"location"`
	Visibility                string `json:"visibility"`
	RepoAdminChangeTeamAccess bool   `json:"repo_admin_change_team_access"`
	UserName                  string `json:"username"`
}

// SetOrganizationVisibility makes organization name public (the default), limited (visible to
// signed-in users) or private (visible to its members and site administrators), creating it if
// needed.
func (s *Server) SetOrganizationVisibility(name, visibility string) error {
	switch visibility {
	case VisibilityPublic, VisibilityLimited, VisibilityPrivate:
	default:
		return fmt.Errorf("set organization visibility: %q is not public, limited or private", visibility)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if o := s.findOwnerLocked(name); o != nil && o.kind != ownerOrganization {
		return fmt.Errorf("set organization visibility: %q is a user, not an organization", name)
	}
	s.ensureOwnerLocked(name, ownerOrganization).visibility = visibility
	return nil
}

// routeAccounts serves the three reads that tell a scope's ids, each behind its group's
// middlewares in Forgejo v15.0.3's routers/api/v1/api.go.
func (s *Server) routeAccounts() {
	// m.Group("/orgs/{org}", …, tokenRequiresScopes(organization), orgAssignment(true), …) with
	// m.Combo("").Get(org.Get): no reqToken.
	s.mux.Handle("GET /api/v1/orgs/{org}", s.guarded(EndpointGetOrganization, categoryOrganization, s.getOrganization))
	// m.Group("/repos", …, tokenRequiresScopes(repository)) > m.Group("/{username}/{reponame}", …,
	// repoAssignment(), …) with m.Combo("").Get(reqAnyRepoReader(), repo.Get).
	s.mux.Handle("GET /api/v1/repos/{owner}/{repo}", s.guarded(EndpointGetRepository, categoryRepository, s.getRepository))
	// m.Group("/user", …, tokenRequiresScopes(user), reqToken()) with m.Get("", user.GetAuthenticatedUser).
	s.mux.Handle("GET /api/v1/user", s.guarded(EndpointGetUser, categoryUser, s.getAuthenticatedUser))
}

// getOrganization is orgAssignment (a missing organization is 404 GetOrgByName), then org.Get:
// an organization the caller may not see is 404 too (HasOrgOrUserVisible); anonymous callers see
// public organizations, without their email.
func (s *Server) getOrganization(r *http.Request, c caller) apiResponse {
	name := r.PathValue("org")
	o := s.findOwnerLocked(name)
	switch {
	case o == nil || o.kind != ownerOrganization:
		return notFoundWith("GetOrgByName", fmt.Sprintf("org does not exist [id: 0, name: %s]", name))
	case !c.seesOrg(o):
		return notFoundWith("HasOrgOrUserVisible")
	}
	base := s.baseURLLocked()
	return apiResponse{status: http.StatusOK, body: APIOrganization{
		ID: o.id, Name: o.name, UserName: o.name, AvatarURL: base + "/avatars/" + o.name, Visibility: o.visibility,
	}}
}

// getRepository is repoAssignment (a missing owner is 404 GetUserByName; a missing repository,
// or one the caller has no access to, a bare 404), then repo.Get with the caller's permissions.
func (s *Server) getRepository(r *http.Request, c caller) apiResponse {
	ownerName := r.PathValue("owner")
	if s.findOwnerLocked(ownerName) == nil {
		return notFoundWith("GetUserByName", fmt.Sprintf("user does not exist [uid: 0, name: %s]", ownerName))
	}
	repo := s.findRepoLocked(ownerName, r.PathValue("repo"))
	if repo == nil || !c.hasToken || !c.sc.seesRepo(repo) {
		// Simulated repositories are private: anonymous callers have no access either.
		return notFound()
	}
	v := s.apiRepoLocked(repo)
	owns := c.sc.ownsRepo(repo)
	v.Permissions = &APIPermission{Admin: owns, Push: true, Pull: true}
	return apiResponse{status: http.StatusOK, body: v}
}

// getAuthenticatedUser is reqToken (401), then user.GetAuthenticatedUser: the token's user as
// services/convert ToUser shows a user to themself.
func (s *Server) getAuthenticatedUser(_ *http.Request, c caller) apiResponse {
	if !c.hasToken {
		return errTokenRequired
	}
	o := s.tokenUserLocked(c.sc)
	if o == nil {
		return errorResponse(http.StatusInternalServerError, "the token's user is an organization")
	}
	u := s.apiUserLocked(o)
	u.IsAdmin = c.sc.siteAdmin()
	return apiResponse{status: http.StatusOK, body: u}
}

// tokenUserLocked returns the user a token belongs to, creating it on first use (users and
// organizations share names, so nil when an organization holds the name):
//   - instance: AdminUserName, the site administrator;
//   - user: that user;
//   - organization: "<org>-owner", or "<org>-member" with Member;
//   - repository: the owner when a user owns the repository, else "<org>-owner"; with Member,
//     the collaborator "<owner>-<repo>-collaborator".
func (s *Server) tokenUserLocked(sc Scope) *owner {
	var name string
	switch sc.Kind {
	case ScopeInstance:
		name = AdminUserName
	case ScopeUser:
		name = sc.Owner
	case ScopeOrganization:
		name = sc.Owner + "-owner"
		if sc.Member {
			name = sc.Owner + "-member"
		}
	case ScopeRepository:
		ownerName, repoName, _ := strings.Cut(sc.Repo, "/")
		o := s.findOwnerLocked(ownerName)
		switch {
		case sc.Member:
			name = ownerName + "-" + repoName + "-collaborator"
		case o != nil && o.kind == ownerUser:
			name = o.name
		default:
			name = ownerName + "-owner"
		}
	default:
		return nil
	}
	if o := s.findOwnerLocked(name); o != nil && o.kind != ownerUser {
		return nil
	}
	return s.ensureOwnerLocked(name, ownerUser)
}

// seesOrg is HasOrgOrUserVisible (models/organization/org.go) for organization o: anonymous
// callers see a public organization; a signed-in one also a limited one; a private one is seen
// by its members and site administrators.
func (c caller) seesOrg(o *owner) bool {
	switch {
	case o.visibility == VisibilityPublic:
		return true
	case !c.hasToken:
		return false
	}
	return c.sc.siteAdmin() || o.visibility == VisibilityLimited || c.sc.memberOf(o)
}

// memberOf reports whether the token's user is a member of organization o: a token of its owner
// or member, or a repository token of one of its repositories' owners.
func (sc Scope) memberOf(o *owner) bool {
	switch sc.Kind {
	case ScopeOrganization:
		return strings.EqualFold(sc.Owner, o.name)
	case ScopeRepository:
		ownerName, _, _ := strings.Cut(sc.Repo, "/")
		return !sc.Member && strings.EqualFold(ownerName, o.name)
	}
	return false
}
