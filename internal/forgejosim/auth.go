package forgejosim

import (
	"fmt"
	"net/http"
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

// Scope says what an API token can see. The simplified model:
//   - instance: everything (a site administrator's write:admin token); its /user routes act on
//     AdminUserName;
//   - organization Owner: that organization's runners and jobs, and its repositories';
//   - user Owner: /api/v1/user/... as that user, and the user's own repositories;
//   - repository Repo ("owner/name"): that repository only.
//
// Whatever a token cannot see answers 404, as Forgejo 15 does.
type Scope struct {
	Kind  ScopeKind `json:"kind"`
	Owner string    `json:"owner,omitempty"`
	Repo  string    `json:"repo,omitempty"`
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

// scopeSeesOwnerLocked reports whether a token with sc may manage owner o's runners.
func (s *Server) scopeSeesOwnerLocked(sc Scope, o *owner) bool {
	switch sc.Kind {
	case ScopeInstance:
		return true
	case ScopeOrganization, ScopeUser:
		return strings.EqualFold(sc.Owner, o.name)
	}
	return false
}

// scopeSeesRepoLocked reports whether a token with sc may manage repository r's runners.
func (s *Server) scopeSeesRepoLocked(sc Scope, r *repository) bool {
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
