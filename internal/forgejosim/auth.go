package forgejosim

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// ScopeKind names what an API token may manage runners of.
type ScopeKind string

// Scope kinds, one per runner API prefix. In Forgejo these are the token scopes write:admin,
// write:organization, write:repository and write:user held by a user with the right role; the
// simulator folds user, role and scope into one value.
const (
	ScopeInstance     ScopeKind = "instance"
	ScopeOrganization ScopeKind = "organization"
	ScopeRepository   ScopeKind = "repository"
	ScopeUser         ScopeKind = "user"
)

// Scope says who an API token belongs to and what it may do. The simplified model:
//   - instance: a site administrator's token; its /user routes act on AdminUserName;
//   - organization Owner: a token of an owner of that organization (with Member, of a member who
//     does not own it), which also manages the organization's repositories;
//   - user Owner: a token of that user, who owns the user's repositories;
//   - repository Repo ("owner/name"): a Forgejo 15 repository-specific token limited to that
//     repository, of its owner (with Member, of a collaborator who does not own it).
//
// Repositories are private: a token that does not cover one gets 404, as Forgejo 15 answers for
// what a token may not see. An organization is never hidden (routers/api/v1/api.go orgAssignment
// only looks it up), so one the token's user does not own answers 403.
type Scope struct {
	Kind  ScopeKind `json:"kind"`
	Owner string    `json:"owner,omitempty"`
	Repo  string    `json:"repo,omitempty"`
	// TokenScopes are the token's Forgejo scopes ("all", "read:admin", "write:organization",
	// "read:repository", "write:user", …). Empty: write access to what the kind needs (instance:
	// all; organization: organization and repository; user: user and repository; repository:
	// repository). A route checks its category, read for GET and write for POST and DELETE, and
	// answers 403 when the token lacks it (routers/api/v1/api.go tokenRequiresScopes).
	TokenScopes []string `json:"token_scopes,omitempty"`
	// Member makes an organization or repository token one of a user who can see the
	// organization or repository but does not own it: its runner routes answer 403.
	Member bool `json:"member,omitempty"`
}

// InstanceScope is the scope of a site administrator token.
func InstanceScope() Scope { return Scope{Kind: ScopeInstance} }

// OrganizationScope is the scope of a token managing organization org.
func OrganizationScope(org string) Scope { return Scope{Kind: ScopeOrganization, Owner: org} }

// UserScope is the scope of a token of user name.
func UserScope(name string) Scope { return Scope{Kind: ScopeUser, Owner: name} }

// RepositoryScope is the scope of a token limited to the repository "owner/name".
func RepositoryScope(fullName string) Scope { return Scope{Kind: ScopeRepository, Repo: fullName} }

func (sc Scope) String() string {
	switch sc.Kind {
	case ScopeRepository:
		return "repository " + sc.Repo
	case ScopeOrganization, ScopeUser:
		return string(sc.Kind) + " " + sc.Owner
	default:
		return string(sc.Kind)
	}
}

// validateScopeLocked checks sc and creates the owner or repository it names.
func (s *Server) validateScopeLocked(sc Scope) error {
	for _, ts := range sc.TokenScopes {
		if !validTokenScope(ts) {
			return fmt.Errorf("unknown token scope %q (want all, or read: or write: followed by admin, organization, repository or user)", ts)
		}
	}
	if sc.Member && sc.Kind != ScopeOrganization && sc.Kind != ScopeRepository {
		return fmt.Errorf("member applies to organization and repository scopes only")
	}
	switch sc.Kind {
	case ScopeInstance:
		return nil
	case ScopeOrganization:
		if sc.Owner == "" {
			return fmt.Errorf("organization scope needs owner")
		}
		if o := s.findOwnerLocked(sc.Owner); o != nil && o.kind != ownerOrganization {
			return fmt.Errorf("%q is a user, not an organization", sc.Owner)
		}
		s.ensureOwnerLocked(sc.Owner, ownerOrganization)
		return nil
	case ScopeUser:
		if sc.Owner == "" {
			return fmt.Errorf("user scope needs owner")
		}
		if o := s.findOwnerLocked(sc.Owner); o != nil && o.kind != ownerUser {
			return fmt.Errorf("%q is an organization, not a user", sc.Owner)
		}
		s.ensureOwnerLocked(sc.Owner, ownerUser)
		return nil
	case ScopeRepository:
		_, err := s.ensureRepoLocked(sc.Repo)
		return err
	default:
		return fmt.Errorf("unknown scope kind %q (want instance, organization, repository or user)", sc.Kind)
	}
}

// CreateToken mints an API token with scope sc (creating the owner or repository it names) and
// returns it. The token is not stored, only its digest.
func (s *Server) CreateToken(sc Scope) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.validateScopeLocked(sc); err != nil {
		return "", fmt.Errorf("create token: %w", err)
	}
	token := s.randomHexLocked(20)
	s.tokens[hashToken(token)] = sc
	return token, nil
}

// AddToken makes token a valid API token with scope sc, for tests that want fixed tokens.
func (s *Server) AddToken(token string, sc Scope) error {
	if token == "" {
		return fmt.Errorf("add token: empty token")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.validateScopeLocked(sc); err != nil {
		return fmt.Errorf("add token: %w", err)
	}
	s.tokens[hashToken(token)] = sc
	return nil
}

// requestToken returns the token of an "Authorization: token T" or "Bearer T" header.
func requestToken(r *http.Request) string {
	h := strings.TrimSpace(r.Header.Get("Authorization"))
	scheme, value, ok := strings.Cut(h, " ")
	if !ok {
		return ""
	}
	switch strings.ToLower(scheme) {
	case "token", "bearer":
		return strings.TrimSpace(value)
	}
	return ""
}

// target is what a runner API route manages, as Forgejo's (ownerID, repoID) pair: (0, 0) for the
// instance, (owner, 0) for an organization or user, (0, repo) for a repository.
type target struct {
	ownerID int64
	repoID  int64
	repo    *repository // set for repository routes
}

// Token scope categories of the runner routes (models/auth/access_token_scope.go).
const (
	categoryAdmin        = "admin"
	categoryOrganization = "organization"
	categoryRepository   = "repository"
	categoryUser         = "user"
)

var tokenScopeCategories = []string{categoryAdmin, categoryOrganization, categoryRepository, categoryUser}

func validTokenScope(ts string) bool {
	if ts == "all" {
		return true
	}
	level, category, ok := strings.Cut(ts, ":")
	return ok && (level == "read" || level == "write") && slices.Contains(tokenScopeCategories, category)
}

// tokenScopes are the token's effective scopes: Scope.TokenScopes, or the default of its kind.
func (sc Scope) tokenScopes() []string {
	if len(sc.TokenScopes) > 0 {
		return sc.TokenScopes
	}
	switch sc.Kind {
	case ScopeOrganization:
		return []string{"write:organization", "write:repository"}
	case ScopeUser:
		return []string{"write:user", "write:repository"}
	case ScopeRepository:
		return []string{"write:repository"}
	default:
		return []string{"all"}
	}
}

// hasTokenScope is AccessTokenScope.HasScope: "all" covers everything and write covers read.
func (sc Scope) hasTokenScope(level, category string) bool {
	for _, ts := range sc.tokenScopes() {
		if ts == "all" || ts == "write:"+category || ts == level+":"+category {
			return true
		}
	}
	return false
}

// siteAdmin reports whether the token's user is a site administrator whose token keeps the
// admin override (services/context/api.go IsUserSiteAdmin).
func (sc Scope) siteAdmin() bool { return sc.Kind == ScopeInstance }

// ownsOrg reports whether the token's user owns organization o (reqOrgOwnership).
func (sc Scope) ownsOrg(o *owner) bool {
	return sc.siteAdmin() || sc.Kind == ScopeOrganization && !sc.Member && strings.EqualFold(sc.Owner, o.name)
}

// seesRepo reports whether the token may read repository r at all (repoAssignment: no access is
// 404).
func (sc Scope) seesRepo(r *repository) bool {
	switch sc.Kind {
	case ScopeInstance:
		return true
	case ScopeOrganization, ScopeUser:
		return strings.EqualFold(sc.Owner, r.owner.name)
	case ScopeRepository:
		return strings.EqualFold(sc.Repo, r.fullName())
	}
	return false
}

// ownsRepo reports whether the token's user is an owner of repository r or a site administrator
// (reqOwner).
func (sc Scope) ownsRepo(r *repository) bool {
	return sc.seesRepo(r) && !sc.Member
}
