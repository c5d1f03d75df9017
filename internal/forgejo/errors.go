package forgejo

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Error classes, for errors.Is. One error may belong to several (a 503 is ErrServer and
// ErrRetryable).
var (
	// ErrNotFound: Forgejo answered 404, which since Forgejo 15 means "does not exist" or "this
	// token may not see it". Never read it alone as "safe to recreate": see Client.ClassifyNotFound.
	ErrNotFound = errors.New("not found, or not visible to this token")
	// ErrGone: the object does not exist, and the scope itself is visible to the token.
	ErrGone = errors.New("does not exist in a scope the token can see")
	// ErrScopeNotVisible: listing the scope itself answers 404: the organization, repository or
	// user is wrong, or the token lacks the scope's permission.
	ErrScopeNotVisible = errors.New("scope not visible to this token (wrong name, or token lacks its write permission)")
	// ErrNotDeletable: the runner is visible to the scope but registered above it (owner or
	// instance), so this scope's route may not delete it.
	ErrNotDeletable = errors.New("runner is inherited from a wider scope and cannot be deleted through this one")
	// ErrForbidden: 403, the token may see the scope but not do this: it lacks the token scope
	// the route needs, its user is not the owner or site admin the route asks for, or it is a
	// public-only token and the scope is private. Denial tells which.
	ErrForbidden = errors.New("forbidden")
	// ErrIncompleteListing: the runners of a scope changed while they were listed page by page,
	// so the listing may have skipped some.
	ErrIncompleteListing = errors.New("the runner list changed while it was read")
	// ErrUnauthorized: 401, the token is missing, wrong, expired or revoked.
	ErrUnauthorized = errors.New("unauthorized: API token rejected")
	// ErrRateLimited: 429; RetryAfter tells how long the server asked to wait.
	ErrRateLimited = errors.New("rate limited")
	// ErrServer: a 5xx answer.
	ErrServer = errors.New("server error")
	// ErrUnavailable: no HTTP answer at all (connection refused or reset, DNS, timeout).
	ErrUnavailable = errors.New("forgejo unreachable")
	// ErrRetryable: the same call may succeed later (rate limits, server errors, unreachable).
	ErrRetryable = errors.New("retryable")
	// ErrForgejoTooOld: the server predates Forgejo 15 and has no runner registration API.
	ErrForgejoTooOld = errors.New("forgejo 15 or later is required")
	// ErrInvalidResponse: a 2xx answer that cannot be understood.
	ErrInvalidResponse = errors.New("invalid response")
)

// APIError is a non-2xx answer of the REST API.
type APIError struct {
	// Endpoint is the low-cardinality call name, e.g. "GET /runners/{id}".
	Endpoint string
	// Scope is the scope the call was made in.
	Scope Scope
	// StatusCode is the HTTP status.
	StatusCode int
	// Message is Forgejo's error message, with secrets redacted and length capped.
	Message string
	// RetryAfter is the wait a 429 or 503 asked for (Retry-After); zero when none was given.
	RetryAfter time.Duration
	// RunnerID is the runner the call was about, zero for scope-wide calls.
	RunnerID int64
}

func (e *APIError) classes() []error {
	switch {
	case e.StatusCode == http.StatusNotFound:
		return []error{ErrNotFound}
	case e.StatusCode == http.StatusUnauthorized:
		return []error{ErrUnauthorized}
	case e.StatusCode == http.StatusForbidden:
		return []error{ErrForbidden}
	case e.StatusCode == http.StatusTooManyRequests:
		return []error{ErrRateLimited, ErrRetryable}
	case e.StatusCode >= 500:
		return []error{ErrServer, ErrRetryable}
	}
	return nil
}

// Is makes errors.Is(err, ErrNotFound) and the other classes work.
func (e *APIError) Is(target error) bool { return slices.Contains(e.classes(), target) }

func (e *APIError) Error() string {
	var what string
	switch cls := e.classes(); {
	case e.StatusCode == http.StatusNotFound:
		what = "not found, or not visible to this token (Forgejo answers 404 for both)"
	case len(cls) > 0:
		what = cls[0].Error()
	default:
		what = http.StatusText(e.StatusCode)
	}
	msg := fmt.Sprintf("forgejo %s (%s): %d %s", e.Endpoint, e.Scope, e.StatusCode, what)
	if e.RetryAfter > 0 {
		msg += fmt.Sprintf(", retry after %s", e.RetryAfter)
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// TransportError is a call that got no HTTP answer.
type TransportError struct {
	Endpoint string
	Scope    Scope
	// Err is the cause with secrets redacted from its text; errors.Is still sees through it to
	// context.DeadlineExceeded and the like.
	Err error
	// callerCancelled: the caller's own context ended, which is not worth retrying.
	callerCancelled bool
}

func (e *TransportError) Error() string {
	return fmt.Sprintf("forgejo %s (%s): %v", e.Endpoint, e.Scope, e.Err)
}

func (e *TransportError) Unwrap() error { return e.Err }

// Is classes a transport failure as ErrUnavailable and ErrRetryable, unless the caller gave up.
func (e *TransportError) Is(target error) bool {
	return !e.callerCancelled && (target == ErrUnavailable || target == ErrRetryable)
}

// VersionError says the server is older than Forgejo 15 (or reports no parseable version).
type VersionError struct {
	// Version is what the server reported; empty when the version endpoint gave nothing useful.
	Version string
	// Reason adds what led to the check, e.g. the registration endpoint's 404.
	Reason string
}

func (e *VersionError) Error() string {
	msg := fmt.Sprintf("forgejo version %q: %s", e.Version, ErrForgejoTooOld)
	if e.Reason != "" {
		msg += " (" + e.Reason + ")"
	}
	return msg
}

// Is makes errors.Is(err, ErrForgejoTooOld) work.
func (e *VersionError) Is(target error) bool { return target == ErrForgejoTooOld }

// RetryAfter returns the wait the server asked for on a 429 or 5xx answer found in err's chain.
func RetryAfter(err error) (time.Duration, bool) {
	var apiErr *APIError
	if errors.As(err, &apiErr) && apiErr.RetryAfter > 0 {
		return apiErr.RetryAfter, true
	}
	return 0, false
}

// IsRetryable reports whether the call that failed with err may succeed if simply repeated.
func IsRetryable(err error) bool { return errors.Is(err, ErrRetryable) }

// classifiedError adds a class (ErrGone, ErrScopeNotVisible, …) to an error that keeps its own
// classes and text.
type classifiedError struct {
	class error
	err   error
}

func (e *classifiedError) Error() string { return e.err.Error() + ": " + e.class.Error() }

func (e *classifiedError) Unwrap() []error { return []error{e.class, e.err} }

func withClass(class, err error) error { return &classifiedError{class: class, err: err} }

func callerCancelled(ctx context.Context) bool { return ctx.Err() != nil }

// DenialKind is why Forgejo refused a call with 403.
type DenialKind string

// Kinds of denial, each from one of Forgejo v15.0.3's route guards (routers/api/v1/api.go).
const (
	// DenialTokenScope: tokenRequiresScopes, "token does not have at least one of required
	// scope(s): [write:repository]". GET needs read:<category>, POST and DELETE write:<category>.
	DenialTokenScope DenialKind = "TokenScopeMissing"
	// DenialRepositoryOwner: reqOwner, "user should be the owner of the repo".
	DenialRepositoryOwner DenialKind = "NotRepositoryOwner"
	// DenialOrganizationOwner: reqOrgOwnership, "Must be an organization owner".
	DenialOrganizationOwner DenialKind = "NotOrganizationOwner"
	// DenialSiteAdmin: reqSiteAdmin, "user should be the site admin".
	DenialSiteAdmin DenialKind = "NotSiteAdmin"
	// DenialPublicOnly: checkTokenPublicOnly, "token scope is limited to public repos" (orgs,
	// users): a public-only token and a private repository, organization or user.
	DenialPublicOnly DenialKind = "TokenPublicOnly"
	// DenialOther: any other 403.
	DenialOther DenialKind = "Forbidden"
)

// Denial is a 403 read: what Forgejo refused and why.
type Denial struct {
	Kind DenialKind
	// Scopes are the token scopes Forgejo named as required, e.g. ["write:repository"].
	Scopes []string
	// Message is Forgejo's message, redacted and capped.
	Message string
	// Endpoint is the call that was refused, e.g. "POST /runners".
	Endpoint string
}

// tokenScopePattern finds the scopes in tokenRequiresScopes' message, e.g. "[write:repository]".
var tokenScopePattern = regexp.MustCompile(`\b(?:read|write):(?:activitypub|admin|issue|misc|notification|organization|package|repository|user)\b`)

// Deny reads why Forgejo answered 403 from its message; false when err holds no 403.
func Deny(err error) (Denial, bool) {
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusForbidden {
		return Denial{}, false
	}
	d := Denial{Kind: DenialOther, Message: apiErr.Message, Endpoint: apiErr.Endpoint}
	msg := strings.ToLower(apiErr.Message)
	switch {
	case strings.Contains(msg, "required scope"):
		d.Kind = DenialTokenScope
		d.Scopes = tokenScopePattern.FindAllString(apiErr.Message, -1)
	case strings.Contains(msg, "token scope is limited to public"):
		d.Kind = DenialPublicOnly
	case strings.Contains(msg, "should be the owner of the repo"):
		d.Kind = DenialRepositoryOwner
	case strings.Contains(msg, "must be an organization owner"):
		d.Kind = DenialOrganizationOwner
	case strings.Contains(msg, "should be the site admin"):
		d.Kind = DenialSiteAdmin
	}
	return d, true
}
