package poolconn

import (
	"errors"
	"fmt"
	"strings"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
)

// Explain turns an error of the pool's Forgejo connection into a condition reason and a message
// that says what to fix: the missing token scope, the owner or admin the token's user must be,
// the scope the token cannot see. An answer Forgejo gave is never called unreachable. Both
// controllers use it: the pool for its jobs polls, the runner for its registration.
func Explain(pool *v1alpha1.RunnerPool, err error) (reason, message string) {
	ref := pool.Spec.Forgejo.TokenSecretRef
	said := forgejoSaid(err)
	if d, ok := forgejo.Deny(err); ok {
		return string(d.Kind), denialMessage(pool, d) + said
	}
	var apiErr *forgejo.APIError
	switch {
	case errors.Is(err, ErrTokenSecret):
		return "TokenSecretInvalid", err.Error()
	case errors.Is(err, forgejo.ErrUnauthorized):
		return "Unauthorized", fmt.Sprintf("Forgejo rejected the token in Secret %s: check that it is valid and not expired", ref.Name) + said
	case errors.Is(err, forgejo.ErrForgejoTooOld):
		return "ForgejoTooOld", "Forgejo 15 or newer is required: " + err.Error()
	case errors.Is(err, forgejo.ErrScopeNotVisible), errors.Is(err, forgejo.ErrNotFound):
		return "ScopeNotVisible", notVisibleMessage(pool) + said
	case errors.Is(err, forgejo.ErrRateLimited):
		return "RateLimited", "Forgejo is rate-limiting the operator; it will retry" + said
	case errors.Is(err, forgejo.ErrInvalidResponse):
		return "InvalidResponse", "Forgejo's answer could not be understood: " + err.Error()
	case errors.As(err, &apiErr):
		// An answer, not an outage: say what Forgejo answered.
		return "ForgejoError", fmt.Sprintf("Forgejo answered %d to %s; the operator will retry", apiErr.StatusCode, apiErr.Endpoint) + said
	default:
		return "Unreachable", "cannot reach Forgejo: " + err.Error()
	}
}

// forgejoSaid quotes Forgejo's own message, already redacted and capped by the client.
func forgejoSaid(err error) string {
	var apiErr *forgejo.APIError
	if !errors.As(err, &apiErr) || apiErr.Message == "" {
		return ""
	}
	return fmt.Sprintf(". Forgejo said: %q", apiErr.Message)
}

// scopeNeeds names the token scope category, and who the token's user must be, for each pool
// scope, as Forgejo v15.0.3's routes ask (routers/api/v1/api.go): GET needs read:<category>,
// POST and DELETE write:<category>.
func scopeNeeds(pool *v1alpha1.RunnerPool) (category, who string) {
	f := pool.Spec.Forgejo
	switch f.Scope {
	case v1alpha1.ScopeOrganization:
		return "organization", fmt.Sprintf("an owner of organization %s (or a site administrator)", f.Organization)
	case v1alpha1.ScopeRepository:
		return "repository", fmt.Sprintf("the owner of repository %s: the user who owns it or an owner of the organization that owns it (or a site administrator)", f.Repository)
	case v1alpha1.ScopeUser:
		return "user", "the user whose runners these are"
	default:
		return "admin", "a site administrator"
	}
}

// denialMessage says what to fix for a 403.
func denialMessage(pool *v1alpha1.RunnerPool, d forgejo.Denial) string {
	ref := pool.Spec.Forgejo.TokenSecretRef.Name
	category, who := scopeNeeds(pool)
	switch d.Kind {
	case forgejo.DenialTokenScope:
		missing := "write:" + category
		if len(d.Scopes) > 0 {
			missing = strings.Join(d.Scopes, ", ")
		}
		return fmt.Sprintf("the token in Secret %s lacks the token scope %s: give it write:%s (read:%s lists jobs and runners, write:%s registers and deletes them)",
			ref, missing, category, category, category)
	case forgejo.DenialRepositoryOwner, forgejo.DenialOrganizationOwner, forgejo.DenialSiteAdmin:
		return fmt.Sprintf("the user of the token in Secret %s must be %s", ref, who)
	case forgejo.DenialPublicOnly:
		return fmt.Sprintf("the token in Secret %s is limited to public resources and the pool's %s is not public: use a token without \"public only\"", ref, category)
	default:
		return fmt.Sprintf("Forgejo refused %s with the token in Secret %s", d.Endpoint, ref)
	}
}

// notVisibleMessage says what a 404 for the scope means: Forgejo 15 answers 404 for what the
// token may not see.
func notVisibleMessage(pool *v1alpha1.RunnerPool) string {
	f := pool.Spec.Forgejo
	ref := f.TokenSecretRef.Name
	switch f.Scope {
	case v1alpha1.ScopeRepository:
		return fmt.Sprintf("Forgejo answers 404 for repository %s: it does not exist, the user of the token in Secret %s cannot see it, or Actions is disabled in it", f.Repository, ref)
	case v1alpha1.ScopeOrganization:
		return fmt.Sprintf("Forgejo answers 404 for organization %s: check its name (a renamed organization is not followed)", f.Organization)
	default:
		return fmt.Sprintf("Forgejo answers 404 for the %s scope's runner API with the token in Secret %s", f.Scope, ref)
	}
}
