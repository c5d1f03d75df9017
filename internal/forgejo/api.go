package forgejo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Endpoint names, as passed to the Observer and shown in errors: one per route template, never
// the raw path with ids or names.
const (
	EndpointVersion        = "GET /version"
	EndpointRegisterRunner = "POST /runners"
	EndpointListRunners    = "GET /runners"
	EndpointGetRunner      = "GET /runners/{id}"
	EndpointDeleteRunner   = "DELETE /runners/{id}"
	EndpointListJobs       = "GET /runners/jobs"
)

// Forgejo's largest page (setting.API.MaxResponseItems).
const maxPageSize = 50

// maxPages stops a listing that never ends (a server whose Link header loops or lies).
const maxPages = 2000

// Version returns the version string the server reports (GET /api/v1/version).
func (c *Client) Version(ctx context.Context) (string, error) {
	callerCtx := ctx
	ctx, cancel := c.withDeadline(ctx)
	defer cancel()
	resp, err := c.do(callerCtx, ctx, request{method: http.MethodGet, endpoint: EndpointVersion, path: "/api/v1/version"})
	if err != nil {
		return "", fmt.Errorf("get version: %w", err)
	}
	var body struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(resp.body, &body); err != nil || body.Version == "" {
		return "", fmt.Errorf("get version: %w: no version field", ErrInvalidResponse)
	}
	return body.Version, nil
}

// CheckVersion fetches the server version and fails with a *VersionError (ErrForgejoTooOld)
// unless it is Forgejo 15 or later.
func (c *Client) CheckVersion(ctx context.Context) (Version, error) {
	s, err := c.Version(ctx)
	if err != nil {
		return Version{}, err
	}
	return CheckVersion(s)
}

// RegisterRunner registers a runner in the client's scope and returns its credentials; the token
// cannot be read again later. A 404 is explained: an older Forgejo (ErrForgejoTooOld), or a scope
// the token cannot see (ErrScopeNotVisible).
func (c *Client) RegisterRunner(ctx context.Context, name, description string, ephemeral bool) (Registration, error) {
	if strings.TrimSpace(name) == "" || len(name) > 255 {
		return Registration{}, fmt.Errorf("register runner %q: name must be 1 to 255 characters", name)
	}
	callerCtx := ctx
	ctx, cancel := c.withDeadline(ctx)
	defer cancel()
	body := map[string]any{"name": name, "description": description, "ephemeral": ephemeral}
	resp, err := c.do(callerCtx, ctx, request{method: http.MethodPost, endpoint: EndpointRegisterRunner, path: c.scope.prefix(), body: body})
	if errors.Is(err, ErrNotFound) {
		err = c.explainRegistration404(ctx, err)
	}
	if err != nil {
		return Registration{}, fmt.Errorf("register runner %s: %w", name, err)
	}
	reg, err := ParseRegistration(resp.body)
	if err != nil {
		return Registration{}, fmt.Errorf("register runner %s: %w: %w", name, ErrInvalidResponse, err)
	}
	c.rememberRunnerToken(reg.Token)
	return reg, nil
}

// explainRegistration404: before Forgejo 15 the registration route does not exist, so a 404 there
// is either an old server or a scope the token cannot see.
func (c *Client) explainRegistration404(ctx context.Context, notFound error) error {
	_, err := c.CheckVersion(ctx)
	var verr *VersionError
	switch {
	case errors.As(err, &verr):
		verr.Reason = "the registration endpoint answered 404"
		return verr
	case err != nil:
		// The probe's error explains; wrapping it would give the 404 the probe's class too.
		return fmt.Errorf("%w (the version check that would explain it failed: %v)", notFound, err) //nolint:errorlint // see above
	}
	return withClass(ErrScopeNotVisible, notFound)
}

// ListOptions filter ListRunners.
type ListOptions struct {
	// UUID keeps only the runner with this UUID. Forgejo 15 has no filter by UUID: the whole
	// scope is listed and matched here.
	UUID string
	// Visible includes the runners inherited from wider scopes (owner, instance), as the
	// server's "visible" flag does.
	Visible bool
	// PageSize is the page size asked for; zero or more than 50 means 50 (Forgejo's maximum).
	PageSize int
}

// listAttempts is how many times ListRunners lists the scope before it gives up on getting a
// listing during which nothing changed.
const listAttempts = 3

// ListRunners returns every runner of the scope: a complete listing, or an error. Forgejo
// orders runners by last contact (last_online DESC) and pages by offset, so a runner that polls
// while the pages are fetched moves to the front, and a runner registered or deleted meanwhile
// shifts the rest: one page repeats an entry and another misses one. A listing is taken as
// complete when every page reported the same X-Total-Count and as many distinct runners were
// seen; otherwise the scope is listed again, and after listAttempts the error is
// ErrIncompleteListing. A 404 means the scope itself is not visible (ErrScopeNotVisible).
func (c *Client) ListRunners(ctx context.Context, opts ListOptions) ([]Runner, error) {
	callerCtx := ctx
	ctx, cancel := c.withDeadline(ctx)
	defer cancel()
	var err error
	for range listAttempts {
		var runners []Runner
		runners, err = c.listRunners(callerCtx, ctx, opts)
		if err == nil {
			if opts.UUID != "" {
				runners = slices.DeleteFunc(runners, func(r Runner) bool { return r.UUID != opts.UUID })
			}
			return runners, nil
		}
		if !errors.Is(err, ErrIncompleteListing) {
			break
		}
	}
	return nil, fmt.Errorf("list runners: %w", err)
}

// listRunners lists the scope once, page after page until a page comes back short or empty,
// and reports ErrIncompleteListing when the pages do not add up (see ListRunners).
func (c *Client) listRunners(callerCtx, ctx context.Context, opts ListOptions) ([]Runner, error) {
	size := opts.PageSize
	if size <= 0 || size > maxPageSize {
		size = maxPageSize
	}
	var out []Runner
	seen := map[int64]bool{}
	total := -1
	largest := 0
	for page := 1; ; page++ {
		if page > maxPages {
			return nil, fmt.Errorf("%w: more than %d pages", ErrInvalidResponse, maxPages)
		}
		q := url.Values{"page": {strconv.Itoa(page)}, "limit": {strconv.Itoa(size)}}
		if opts.Visible {
			q.Set("visible", "true")
		}
		resp, err := c.do(callerCtx, ctx, request{method: http.MethodGet, endpoint: EndpointListRunners, path: c.scope.prefix(), query: q})
		if errors.Is(err, ErrNotFound) {
			return nil, withClass(ErrScopeNotVisible, err)
		}
		if err != nil {
			return nil, err
		}
		rs, err := ParseRunners(resp.body)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidResponse, err)
		}
		if n, err := strconv.Atoi(resp.header.Get("X-Total-Count")); err == nil {
			if total >= 0 && n != total {
				return nil, fmt.Errorf("%w: the total went from %d to %d while listing", ErrIncompleteListing, total, n)
			}
			total = n
		}
		for _, r := range rs {
			if !seen[r.ID] {
				seen[r.ID] = true
				out = append(out, r)
			}
		}
		largest = max(largest, len(rs))
		// A server whose largest page (setting.API.MaxResponseItems) is below the size asked
		// for sends full pages shorter than asked: a page is short when it is shorter than
		// the longest one so far, or empty.
		short := len(rs) == 0 || len(rs) < largest || (len(rs) < size && total >= 0 && page*len(rs) >= total)
		if short {
			break
		}
	}
	if total >= 0 && len(out) != total {
		return nil, fmt.Errorf("%w: %d distinct runners listed, the server counts %d", ErrIncompleteListing, len(out), total)
	}
	return out, nil
}

// GetRunner returns one runner by id. The scope's routes also show inherited runners.
func (c *Client) GetRunner(ctx context.Context, id int64) (Runner, error) {
	callerCtx := ctx
	ctx, cancel := c.withDeadline(ctx)
	defer cancel()
	r, err := c.getRunner(callerCtx, ctx, id)
	if err != nil {
		return Runner{}, fmt.Errorf("get runner %d: %w", id, err)
	}
	return r, nil
}

func (c *Client) getRunner(callerCtx, ctx context.Context, id int64) (Runner, error) {
	resp, err := c.do(callerCtx, ctx, request{
		method: http.MethodGet, endpoint: EndpointGetRunner, runnerID: id,
		path: c.scope.prefix() + "/" + strconv.FormatInt(id, 10),
	})
	if err != nil {
		return Runner{}, err
	}
	r, err := ParseRunner(resp.body)
	if err != nil {
		return Runner{}, fmt.Errorf("%w: %w", ErrInvalidResponse, err)
	}
	return r, nil
}

// FindRunnerByUUID returns the scope's runner with this UUID. When the listing succeeds and holds
// no such runner the error is ErrNotFound and ErrGone: the scope was readable, so the runner is
// really not there.
func (c *Client) FindRunnerByUUID(ctx context.Context, uuid string) (Runner, error) {
	if uuid == "" {
		return Runner{}, errors.New("find runner by uuid: empty uuid")
	}
	rs, err := c.ListRunners(ctx, ListOptions{UUID: uuid})
	if err != nil {
		return Runner{}, fmt.Errorf("find runner by uuid %s: %w", uuid, err)
	}
	if len(rs) == 0 {
		return Runner{}, fmt.Errorf("find runner by uuid %s in %s: %w (%w)", uuid, c.scope, ErrNotFound, ErrGone)
	}
	return rs[0], nil
}

// DeleteRunner deletes a runner. Forgejo does not protect a runner in the middle of a job. A 404
// is ambiguous (gone, invisible, or inherited from a wider scope): see ClassifyNotFound.
func (c *Client) DeleteRunner(ctx context.Context, id int64) error {
	callerCtx := ctx
	ctx, cancel := c.withDeadline(ctx)
	defer cancel()
	_, err := c.do(callerCtx, ctx, request{
		method: http.MethodDelete, endpoint: EndpointDeleteRunner, runnerID: id,
		path: c.scope.prefix() + "/" + strconv.FormatInt(id, 10),
	})
	if err != nil {
		return fmt.Errorf("delete runner %d: %w", id, err)
	}
	return nil
}

// ListJobs returns the scope's waiting and running jobs. With labels, only the jobs whose runs-on
// labels are all among them; a label may be given as "name" or as a runner label
// "name:scheme:arg", whose name is used. No job is an empty list.
func (c *Client) ListJobs(ctx context.Context, labels ...string) ([]Job, error) {
	q := url.Values{}
	if len(labels) > 0 {
		names := make([]string, 0, len(labels))
		for _, l := range labels {
			name, _, _ := strings.Cut(l, ":")
			if name == "" || strings.Contains(name, ",") {
				return nil, fmt.Errorf("list jobs: invalid label %q", l)
			}
			names = append(names, name)
		}
		q.Set("labels", strings.Join(names, ","))
	}
	callerCtx := ctx
	ctx, cancel := c.withDeadline(ctx)
	defer cancel()
	resp, err := c.do(callerCtx, ctx, request{method: http.MethodGet, endpoint: EndpointListJobs, path: c.scope.prefix() + "/jobs", query: q})
	if errors.Is(err, ErrNotFound) {
		err = withClass(ErrScopeNotVisible, err)
	}
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	jobs, err := ParseJobs(resp.body)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w: %w", ErrInvalidResponse, err)
	}
	return jobs, nil
}

// CheckScope probes the scope's runner list: nil when the token can see the scope, an error
// that is ErrScopeNotVisible when listing it answers 404.
func (c *Client) CheckScope(ctx context.Context) error {
	callerCtx := ctx
	ctx, cancel := c.withDeadline(ctx)
	defer cancel()
	_, err := c.do(callerCtx, ctx, request{
		method: http.MethodGet, endpoint: EndpointListRunners, path: c.scope.prefix(),
		query: url.Values{"page": {"1"}, "limit": {"1"}},
	})
	if errors.Is(err, ErrNotFound) {
		err = withClass(ErrScopeNotVisible, err)
	}
	if err != nil {
		return fmt.Errorf("check scope %s: %w", c.scope, err)
	}
	return nil
}

// ClassifyNotFound explains a 404 from this client (err without ErrNotFound is returned as is).
// The result is still ErrNotFound, and also:
//   - ErrScopeNotVisible when the scope itself cannot be listed: the configuration or the token
//     is wrong, and nothing should be recreated;
//   - ErrNotDeletable when a runner that DeleteRunner could not delete is visible through the
//     scope (it was registered in a wider one);
//   - ErrGone when the scope is visible and the runner is not there.
//
// When the probes themselves fail, err comes back unclassified (with a note).
func (c *Client) ClassifyNotFound(ctx context.Context, err error) error {
	if !errors.Is(err, ErrNotFound) || errors.Is(err, ErrGone) || errors.Is(err, ErrScopeNotVisible) || errors.Is(err, ErrNotDeletable) {
		return err
	}
	if probeErr := c.CheckScope(ctx); probeErr != nil {
		if errors.Is(probeErr, ErrScopeNotVisible) {
			return withClass(ErrScopeNotVisible, err)
		}
		return fmt.Errorf("%w (could not check the scope: %v)", err, probeErr) //nolint:errorlint // the probe explains, it must not classify
	}
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.RunnerID == 0 {
		return err
	}
	if apiErr.Endpoint == EndpointDeleteRunner {
		_, getErr := c.GetRunner(ctx, apiErr.RunnerID)
		switch {
		case getErr == nil:
			return withClass(ErrNotDeletable, err)
		case !errors.Is(getErr, ErrNotFound):
			return fmt.Errorf("%w (could not check the runner: %v)", err, getErr) //nolint:errorlint // the probe explains, it must not classify
		}
	}
	return withClass(ErrGone, err)
}
