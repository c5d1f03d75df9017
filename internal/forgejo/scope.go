package forgejo

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// ScopeKind is where runners are registered, spelled as RunnerPool spec.forgejo.scope.
type ScopeKind string

// Scope kinds. The Forgejo token needs write:admin, write:organization, write:repository or
// write:user respectively.
const (
	ScopeGlobal       ScopeKind = "global"
	ScopeOrganization ScopeKind = "organization"
	ScopeRepository   ScopeKind = "repository"
	ScopeUser         ScopeKind = "user"
)

// Scope is one runner API prefix. Build it with GlobalScope, OrganizationScope, RepositoryScope,
// UserScope or ParseScope; the zero value is invalid.
type Scope struct {
	Kind ScopeKind
	// Organization is set for ScopeOrganization.
	Organization string
	// Owner and Repo are set for ScopeRepository.
	Owner, Repo string
}

// GlobalScope is the whole instance (/api/v1/admin/actions/runners).
func GlobalScope() Scope { return Scope{Kind: ScopeGlobal} }

// OrganizationScope is one organization's runners.
func OrganizationScope(org string) Scope { return Scope{Kind: ScopeOrganization, Organization: org} }

// RepositoryScope is one repository's runners.
func RepositoryScope(owner, repo string) Scope {
	return Scope{Kind: ScopeRepository, Owner: owner, Repo: repo}
}

// UserScope is the runners of the user the token belongs to; Forgejo's route names no user.
func UserScope() Scope { return Scope{Kind: ScopeUser} }

// Forgejo user, organization and repository names: alphanumerics, '-', '_' and '.'. Checking the
// characters keeps a typo in a RunnerPool from turning into a different URL path.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

func validName(s string) bool {
	return len(s) <= 255 && namePattern.MatchString(s) && s != "." && s != ".."
}

// ParseScope builds a Scope from RunnerPool spec.forgejo fields: scope is global, organization,
// repository or user; organization is required for (and only allowed with) the organization
// scope; repository ("owner/repo") likewise for the repository scope.
func ParseScope(scope, organization, repository string) (Scope, error) {
	var sc Scope
	switch ScopeKind(scope) {
	case ScopeGlobal:
		sc = GlobalScope()
	case ScopeOrganization:
		sc = OrganizationScope(organization)
	case ScopeRepository:
		owner, repo, ok := strings.Cut(repository, "/")
		if !ok {
			return Scope{}, fmt.Errorf("scope repository: repository %q is not owner/repo", repository)
		}
		sc = RepositoryScope(owner, repo)
	case ScopeUser:
		sc = UserScope()
	default:
		return Scope{}, fmt.Errorf("unknown scope %q: want global, organization, repository or user", scope)
	}
	if organization != "" && sc.Kind != ScopeOrganization {
		return Scope{}, fmt.Errorf("scope %s: organization %q is only used with scope organization", scope, organization)
	}
	if repository != "" && sc.Kind != ScopeRepository {
		return Scope{}, fmt.Errorf("scope %s: repository %q is only used with scope repository", scope, repository)
	}
	if err := sc.Validate(); err != nil {
		return Scope{}, err
	}
	return sc, nil
}

// Validate reports whether the scope names what its kind needs, with valid names.
func (s Scope) Validate() error {
	switch s.Kind {
	case ScopeGlobal, ScopeUser:
		if s.Organization != "" || s.Owner != "" || s.Repo != "" {
			return fmt.Errorf("scope %s takes no organization or repository", s.Kind)
		}
	case ScopeOrganization:
		if !validName(s.Organization) {
			return fmt.Errorf("scope organization: invalid organization name %q", s.Organization)
		}
		if s.Owner != "" || s.Repo != "" {
			return fmt.Errorf("scope organization takes no repository")
		}
	case ScopeRepository:
		if !validName(s.Owner) || !validName(s.Repo) {
			return fmt.Errorf("scope repository: invalid repository %q", s.Owner+"/"+s.Repo)
		}
		if s.Organization != "" {
			return fmt.Errorf("scope repository takes no organization")
		}
	default:
		return fmt.Errorf("unknown scope %q: want global, organization, repository or user", s.Kind)
	}
	return nil
}

// String names the scope for messages, e.g. "repository acme/app".
func (s Scope) String() string {
	switch s.Kind {
	case ScopeOrganization:
		return "organization " + s.Organization
	case ScopeRepository:
		return "repository " + s.Owner + "/" + s.Repo
	case "":
		return "(no scope)"
	default:
		return string(s.Kind)
	}
}

// prefix is the scope's runner API path, escaped; valid names need no escaping, but a Scope
// built by hand may skip Validate.
func (s Scope) prefix() string {
	switch s.Kind {
	case ScopeOrganization:
		return "/api/v1/orgs/" + url.PathEscape(s.Organization) + "/actions/runners"
	case ScopeRepository:
		return "/api/v1/repos/" + url.PathEscape(s.Owner) + "/" + url.PathEscape(s.Repo) + "/actions/runners"
	case ScopeUser:
		return "/api/v1/user/actions/runners"
	default:
		return "/api/v1/admin/actions/runners"
	}
}
