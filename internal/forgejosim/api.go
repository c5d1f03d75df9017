package forgejosim

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Endpoint names of the REST API, used to aim injected faults (see Fault).
const (
	EndpointVersion           = "version"
	EndpointRegisterRunner    = "register-runner"
	EndpointListRunners       = "list-runners"
	EndpointGetRunner         = "get-runner"
	EndpointDeleteRunner      = "delete-runner"
	EndpointListJobs          = "list-jobs"
	EndpointRegistrationToken = "registration-token"
)

// Forgejo's list defaults (setting.API.DefaultPagingNum and MaxResponseItems).
const (
	defaultPageSize = 30
	maxPageSize     = 50
)

// APIError is Forgejo's error body.
type APIError struct {
	Message string `json:"message"`
	URL     string `json:"url"`
}

// APIRunner is a runner as the runner API shows it. Field names follow Forgejo's
// modules/structs/repo_actions.go ActionRunner (read in a Forgejo 15-era tree): status is one of
// offline, idle, active (there is no online/busy boolean as in Gitea's struct), and labels are
// plain strings, not objects.
type APIRunner struct {
	ID          int64    `json:"id"`
	UUID        string   `json:"uuid"`
	OwnerID     int64    `json:"owner_id"`
	RepoID      int64    `json:"repo_id"`
	Name        string   `json:"name"`
	Status      string   `json:"status"`
	Version     string   `json:"version"`
	Labels      []string `json:"labels"`
	Description string   `json:"description"`
	Ephemeral   bool     `json:"ephemeral"`
}

// ActionRunJob is a job attempt as Forgejo 15.0.3's jobs list shows it
// (modules/structs/action.go ActionRunJob): exactly these fields, no run id and no URL.
type ActionRunJob struct {
	ID      int64    `json:"id"`
	Attempt int64    `json:"attempt"`
	Handle  string   `json:"handle"`
	RepoID  int64    `json:"repo_id"`
	OwnerID int64    `json:"owner_id"`
	Name    string   `json:"name"`
	Needs   []string `json:"needs"`
	RunsOn  []string `json:"runs_on"`
	TaskID  int64    `json:"task_id"`
	Status  string   `json:"status"`
}

// APIJob is a job attempt as a newer server's workflow_job payloads show it (sent only with
// Options.JobEvents): Forgejo 15's ActionRunJob plus run_id and html_url, which Forgejo 15.0.3
// does not have.
type APIJob struct {
	ID      int64    `json:"id"`
	RunID   int64    `json:"run_id"`
	Attempt int64    `json:"attempt"`
	Handle  string   `json:"handle"`
	RepoID  int64    `json:"repo_id"`
	OwnerID int64    `json:"owner_id"`
	Name    string   `json:"name"`
	HTMLURL string   `json:"html_url"`
	Needs   []string `json:"needs"`
	RunsOn  []string `json:"runs_on"`
	TaskID  int64    `json:"task_id"`
	Status  string   `json:"status"`
}

// RegisterRunnerRequest is the body of POST …/actions/runners (Forgejo's RegisterRunnerOptions).
type RegisterRunnerRequest struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Ephemeral   bool   `json:"ephemeral"`
}

// RegisterRunnerResponse is its answer; the token is shown only here.
type RegisterRunnerResponse struct {
	ID    int64  `json:"id"`
	UUID  string `json:"uuid"`
	Token string `json:"token"`
}

// apiResponse is built with s.mu held and written after it is released.
type apiResponse struct {
	status int
	body   any // nil: no body
	header http.Header
}

// apiNotFound is the body of Forgejo's ctx.NotFound (services/context/api.go APINotFound), which
// unlike APIError carries an errors list.
type apiNotFound struct {
	Message string   `json:"message"`
	URL     string   `json:"url"`
	Errors  []string `json:"errors"`
}

// errorResponse is Forgejo's ctx.Error: {"message", "url"}.
func errorResponse(status int, format string, args ...any) apiResponse {
	return apiResponse{status: status, body: APIError{Message: fmt.Sprintf(format, args...)}}
}

// notFound is Forgejo's ctx.NotFound(): the locale's "not_found" message and no errors.
func notFound() apiResponse {
	return notFoundWith("The target couldn't be found.")
}

// notFoundWith is ctx.NotFound(title, err...): the title becomes the message.
func notFoundWith(message string, errs ...string) apiResponse {
	return apiResponse{status: http.StatusNotFound, body: apiNotFound{Message: message, Errors: append([]string{}, errs...)}}
}

func (s *Server) writeAPI(w http.ResponseWriter, r *http.Request, resp apiResponse) {
	for k, vs := range resp.header {
		w.Header()[k] = vs
	}
	switch e := resp.body.(type) {
	case APIError:
		e.URL = s.swaggerURL(r)
		resp.body = e
	case apiNotFound:
		e.URL = s.swaggerURL(r)
		resp.body = e
	}
	if resp.body == nil {
		w.WriteHeader(resp.status)
		return
	}
	writeJSON(w, resp.status, resp.body)
}

// swaggerURL is setting.API.SwaggerURL, the url of every error body.
func (s *Server) swaggerURL(r *http.Request) string { return s.publicURL(r) + "/api/swagger" }

func writeJSON(w http.ResponseWriter, status int, body any) {
	data, err := json.Marshal(body)
	if err != nil {
		http.Error(w, fmt.Sprintf("encode response: %v", err), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(append(data, '\n'))
}

// caller is who calls a runner route: the token's scope, if a token was given.
type caller struct {
	sc       Scope
	hasToken bool
}

// resolver maps a request and its caller to the target of a runner route, or to the answer
// Forgejo's middlewares give instead (404 when the target may not be seen, 401 without a token,
// 403 without the needed role). It runs with s.mu held.
type resolver func(r *http.Request, c caller) (target, apiResponse, bool)

type scopeRoute struct {
	prefix   string
	category string // the token scope category the route's group requires
	resolve  resolver
}

var errTokenRequired = errorResponse(http.StatusUnauthorized, "token is required")

// scopeRoutes follow the middlewares of routers/api/v1/api.go, in their order: the group's
// tokenRequiresScopes, the owner or repository lookup, reqToken, then the role check
// (reqSiteAdmin, reqOrgOwnership, reqOwner).
func (s *Server) scopeRoutes() []scopeRoute {
	return []scopeRoute{
		{"/api/v1/admin/actions/runners", categoryAdmin, func(_ *http.Request, c caller) (target, apiResponse, bool) {
			switch {
			case !c.hasToken:
				return target{}, errTokenRequired, false
			case !c.sc.siteAdmin():
				return target{}, errorResponse(http.StatusForbidden, "user should be the site admin"), false
			}
			return target{}, apiResponse{}, true
		}},
		{"/api/v1/orgs/{org}/actions/runners", categoryOrganization, func(r *http.Request, c caller) (target, apiResponse, bool) {
			name := r.PathValue("org")
			o := s.findOwnerLocked(name)
			switch {
			case o == nil || o.kind != ownerOrganization:
				return target{}, notFoundWith("GetOrgByName", fmt.Sprintf("org does not exist [id: 0, name: %s]", name)), false
			case !c.hasToken:
				return target{}, errTokenRequired, false
			case !c.sc.ownsOrg(o):
				return target{}, errorResponse(http.StatusForbidden, "Must be an organization owner"), false
			}
			return target{ownerID: o.id}, apiResponse{}, true
		}},
		{"/api/v1/repos/{owner}/{repo}/actions/runners", categoryRepository, func(r *http.Request, c caller) (target, apiResponse, bool) {
			ownerName := r.PathValue("owner")
			o := s.findOwnerLocked(ownerName)
			if o == nil {
				return target{}, notFoundWith("GetUserByName", fmt.Sprintf("user does not exist [uid: 0, name: %s]", ownerName)), false
			}
			repo := s.findRepoLocked(ownerName, r.PathValue("repo"))
			switch {
			case repo == nil || !c.sc.seesRepo(repo):
				// Missing, or private and out of the token's reach: the same 404.
				return target{}, notFound(), false
			case !c.hasToken:
				return target{}, errTokenRequired, false
			case !c.sc.ownsRepo(repo):
				return target{}, errorResponse(http.StatusForbidden, "user should be the owner of the repo"), false
			}
			return target{repoID: repo.id, repo: repo}, apiResponse{}, true
		}},
		{"/api/v1/user/actions/runners", categoryUser, func(_ *http.Request, c caller) (target, apiResponse, bool) {
			if !c.hasToken {
				return target{}, errTokenRequired, false
			}
			// The routes act on the token's user.
			o := s.tokenUserLocked(c.sc)
			if o == nil {
				return target{}, notFound(), false
			}
			return target{ownerID: o.id}, apiResponse{}, true
		}},
	}
}

func (s *Server) routeAPI() {
	s.mux.Handle("GET /api/v1/version", s.withFaults(EndpointVersion, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s.mu.Lock()
		v := s.version
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]string{"version": v})
	})))
	for _, sr := range s.scopeRoutes() {
		s.mux.Handle("POST "+sr.prefix, s.api(EndpointRegisterRunner, sr, s.registerRunner))
		s.mux.Handle("GET "+sr.prefix, s.api(EndpointListRunners, sr, s.listRunners))
		s.mux.Handle("GET "+sr.prefix+"/{id}", s.api(EndpointGetRunner, sr, s.getRunner))
		s.mux.Handle("DELETE "+sr.prefix+"/{id}", s.api(EndpointDeleteRunner, sr, s.deleteRunner))
		s.mux.Handle("GET "+sr.prefix+"/jobs", s.api(EndpointListJobs, sr, s.listJobs))
		// Deprecated; Forgejo 15 serves it with GET only.
		s.mux.Handle("GET "+sr.prefix+"/registration-token", s.api(EndpointRegistrationToken, sr, s.registrationToken))
	}
	// Deprecated, still served by Forgejo 15 and polled by KEDA's forgejo-runner scaler.
	admin := s.scopeRoutes()[0]
	s.mux.Handle("GET /api/v1/admin/runners/jobs", s.api(EndpointListJobs, admin, s.listJobs))
	s.mux.Handle("GET /api/v1/admin/runners/registration-token", s.api(EndpointRegistrationToken, admin, s.registrationToken))
	s.routeAccounts()
	s.mux.Handle("/api/v1/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.writeAPI(w, r, notFound())
	}))
}

// api wraps a runner route: the token checks of guarded, then the route's own checks (see
// scopeRoutes).
func (s *Server) api(endpoint string, sr scopeRoute, h func(*http.Request, target) apiResponse) http.Handler {
	return s.guarded(endpoint, sr.category, func(r *http.Request, c caller) apiResponse {
		t, deny, ok := sr.resolve(r, c)
		if !ok {
			return deny
		}
		return h(r, t)
	})
}

// guarded wraps a REST route whose group requires token scope category: fault injection, then an
// unknown token (401, apiAuthentication), then the token scope (403, tokenRequiresScopes: read
// for GET, write otherwise), then serve, with s.mu held.
func (s *Server) guarded(endpoint, category string, serve func(*http.Request, caller) apiResponse) http.Handler {
	return s.withFaults(endpoint, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token := requestToken(r)
		level := "read"
		if r.Method != http.MethodGet {
			level = "write"
		}
		s.mu.Lock()
		s.revealLocked()
		var resp apiResponse
		sc, known := s.tokens[hashToken(token)]
		c := caller{sc: sc, hasToken: token != ""}
		switch {
		case c.hasToken && !known:
			resp = errorResponse(http.StatusUnauthorized, "invalid username, password or token")
		case c.hasToken && !sc.hasTokenScope(level, category):
			resp = errorResponse(http.StatusForbidden, "token does not have at least one of required scope(s): [%s:%s]", level, category)
		default:
			resp = serve(r, c)
		}
		s.mu.Unlock()
		s.writeAPI(w, r, resp)
	}))
}

func (s *Server) registerRunner(r *http.Request, t target) apiResponse {
	if !s.supportsRegistrationAPILocked() {
		// Before Forgejo 15 this route does not exist.
		return notFound()
	}
	var req RegisterRunnerRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return errorResponse(http.StatusBadRequest, "read body: %v", err)
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return errorResponse(http.StatusUnprocessableEntity, "invalid JSON body: %v", err)
	}
	if strings.TrimSpace(req.Name) == "" {
		return errorResponse(http.StatusUnprocessableEntity, "[Name]: Required")
	}
	token := s.randomHexLocked(20)
	rn := &runner{
		id:          s.nextIDLocked("runner"),
		uuid:        s.uuidLocked(),
		tokenHash:   hashToken(token),
		name:        req.Name,
		description: req.Description,
		ephemeral:   req.Ephemeral,
		ownerID:     t.ownerID,
		repoID:      t.repoID,
		created:     s.now(),
	}
	s.runners[rn.id] = rn
	s.runnerByUUID[rn.uuid] = rn
	return apiResponse{status: http.StatusCreated, body: RegisterRunnerResponse{ID: rn.id, UUID: rn.uuid, Token: token}}
}

// runnerListedLocked is FindRunnerOptions.ToConds (models/actions/runner.go): without visible, a
// route lists the runners registered exactly at its level, the instance route only instance
// runners; with visible=true a repository also lists its owner's and the instance's runners, an
// owner the instance's, and the instance route every runner.
func runnerListedLocked(rn *runner, t target, visible bool) bool {
	switch {
	case rn.ownerID == t.ownerID && rn.repoID == t.repoID:
		return true
	case !visible:
		return false
	case t.ownerID == 0 && t.repoID == 0:
		return true
	case rn.ownerID == 0 && rn.repoID == 0:
		return true
	case t.repo != nil && rn.ownerID == t.repo.owner.id:
		return true
	}
	return false
}

// runnerVisibleLocked is GetVisibleRunnerByID, used by GET and DELETE by id: the instance route
// sees every runner, the others what visible=true lists.
func runnerVisibleLocked(rn *runner, t target) bool {
	return t.ownerID == 0 && t.repoID == 0 || runnerListedLocked(rn, t, true)
}

func (s *Server) apiRunnerLocked(rn *runner) APIRunner {
	labels := slices.Clone(rn.labels)
	if labels == nil {
		labels = []string{}
	}
	return APIRunner{
		ID: rn.id, UUID: rn.uuid, OwnerID: rn.ownerID, RepoID: rn.repoID, Name: rn.name,
		Status: s.runnerStatusLocked(rn), Version: rn.version, Labels: labels,
		Description: rn.description, Ephemeral: rn.ephemeral,
	}
}

// listRunners serves GET {prefix} as routers/api/v1/shared/runners.go ListRunners: the "visible"
// flag, offset paging with page and limit (limit capped at 50), ordered by last_online DESC
// (FindRunnerOptions.ToOrders; Forgejo stores it in whole seconds and leaves ties to the
// database, here broken by id), X-Total-Count and a Link header. There is no filter by uuid or
// name.
func (s *Server) listRunners(r *http.Request, t target) apiResponse {
	q := r.URL.Query()
	visible, _ := strconv.ParseBool(q.Get("visible"))
	var all []*runner
	for _, id := range sortedKeys(s.runners) {
		if rn := s.runners[id]; runnerListedLocked(rn, t, visible) {
			all = append(all, rn)
		}
	}
	slices.SortStableFunc(all, func(a, b *runner) int {
		return cmp.Compare(unixSeconds(b.lastOnline), unixSeconds(a.lastOnline))
	})
	page, limit := listOptions(q)
	header := http.Header{}
	header.Set("X-Total-Count", strconv.Itoa(len(all)))
	if links := paginationLinks(s.publicURL(r), r.URL, len(all), limit, q.Get("page")); len(links) > 0 {
		header.Set("Link", strings.Join(links, ","))
	}
	start := min((page-1)*limit, len(all))
	end := min(start+limit, len(all))
	items := make([]APIRunner, 0, end-start)
	for _, rn := range all[start:end] {
		items = append(items, s.apiRunnerLocked(rn))
	}
	return apiResponse{status: http.StatusOK, body: items, header: header}
}

// unixSeconds is a timeutil.TimeStamp: whole seconds, 0 for never.
func unixSeconds(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

// runnerFromPathLocked reads {runner_id} as ctx.ParamsInt64 does (not a number reads as 0, which
// no runner has) and finds it with GetVisibleRunnerByID.
func (s *Server) runnerFromPathLocked(r *http.Request, t target) (*runner, apiResponse, bool) {
	id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
	rn, ok := s.runners[id]
	if !ok || !runnerVisibleLocked(rn, t) {
		return nil, errorResponse(http.StatusNotFound, "runner with ID %d: resource does not exist", id), false
	}
	return rn, apiResponse{}, true
}

func (s *Server) getRunner(r *http.Request, t target) apiResponse {
	rn, resp, ok := s.runnerFromPathLocked(r, t)
	if !ok {
		return resp
	}
	return apiResponse{status: http.StatusOK, body: s.apiRunnerLocked(rn)}
}

// deleteRunner: a runner the route can see but not edit (inherited from the owner or the
// instance) is 404 too, "No permission to delete this runner" (routers/api/v1/shared/runners.go,
// ActionRunner.Editable). Nothing protects a runner in the middle of a job, as in Forgejo.
func (s *Server) deleteRunner(r *http.Request, t target) apiResponse {
	rn, resp, ok := s.runnerFromPathLocked(r, t)
	if !ok {
		return resp
	}
	if !(t.ownerID == 0 && t.repoID == 0) && (rn.ownerID != t.ownerID || rn.repoID != t.repoID) {
		return errorResponse(http.StatusNotFound, "No permission to delete this runner")
	}
	s.deleteRunnerLocked(rn)
	return apiResponse{status: http.StatusNoContent}
}

func (s *Server) deleteRunnerLocked(rn *runner) {
	delete(s.runners, rn.id)
	delete(s.runnerByUUID, rn.uuid)
}

// listJobs serves GET {prefix}/jobs as routers/api/v1/shared/runners.go GetActionRunJobs: the
// waiting and running jobs of the route's scope (owner_id or repo_id), newest first
// (FindTaskOptions.ToOrders "id DESC"), not paginated. "labels=a,b" keeps the jobs whose runs-on
// labels are all among a and b, "labels=" (empty) the jobs with no runs-on. With no job the body
// is JSON null (a nil slice), which clients must accept. Jobs held by a concurrency group are
// listed waiting; blocked jobs are not listed.
func (s *Server) listJobs(r *http.Request, t target) apiResponse {
	_, filter := r.URL.Query()["labels"]
	var labels []string
	if filter {
		labels = strings.Split(strings.TrimSpace(r.URL.Query().Get("labels")), ",")
	}
	var res []ActionRunJob
	keys := sortedKeys(s.jobs)
	slices.Reverse(keys)
	for _, id := range keys {
		j := s.jobs[id]
		if j.status != JobWaiting && j.status != JobRunning || !j.listed() {
			continue
		}
		if t.repoID != 0 && j.repo.id != t.repoID || t.ownerID != 0 && j.repo.owner.id != t.ownerID {
			continue
		}
		if filter && !jobMatchesLabelFilter(j.runsOn, labels) {
			continue
		}
		res = append(res, ActionRunJob{
			ID: j.id, Attempt: j.attempt, Handle: j.handle, RepoID: j.repo.id, OwnerID: j.repo.owner.id,
			Name: j.name, Needs: nonNil(j.needs), RunsOn: nonNil(j.runsOn), TaskID: j.taskID, Status: string(j.status),
		})
	}
	return apiResponse{status: http.StatusOK, body: res}
}

func jobMatchesLabelFilter(runsOn, labels []string) bool {
	if len(labels) == 1 && labels[0] == "" {
		return len(runsOn) == 0
	}
	if len(runsOn) == 0 {
		return false
	}
	for _, l := range runsOn {
		if !slices.Contains(labels, l) {
			return false
		}
	}
	return true
}

func (s *Server) apiJobLocked(j *job) APIJob {
	base := s.baseURLLocked()
	return APIJob{
		ID: j.id, RunID: j.runID(), Attempt: j.attempt, Handle: j.handle, RepoID: j.repo.id,
		OwnerID: j.repo.owner.id, Name: j.name,
		HTMLURL: fmt.Sprintf("%s/%s/actions/runs/%d/jobs/0/attempt/%d", base, j.repo.fullName(), j.run.index, j.attempt),
		Needs:   nonNil(j.needs), RunsOn: nonNil(j.runsOn), TaskID: j.taskID, Status: string(j.status),
	}
}

// registrationToken serves the deprecated registration-token routes with the scope's latest
// token (shared.GetRegistrationToken); the project must not use them, the simulator answers so
// that a client that does is visible in tests.
func (s *Server) registrationToken(_ *http.Request, t target) apiResponse {
	k := scopeKey{ownerID: t.ownerID, repoID: t.repoID}
	if s.regTokens[k] == "" {
		s.regTokens[k] = s.randomHexLocked(20)
	}
	return apiResponse{status: http.StatusOK, body: map[string]string{"token": s.regTokens[k]}}
}

// listOptions reads page and limit like Forgejo's utils.GetListOptions.
func listOptions(q url.Values) (page, limit int) {
	page, _ = strconv.Atoi(q.Get("page"))
	if page <= 0 {
		page = 1
	}
	limit, _ = strconv.Atoi(q.Get("limit"))
	if limit <= 0 {
		limit = defaultPageSize
	}
	return page, min(limit, maxPageSize)
}

// paginationLinks is services/context/api.go genAPILinks over modules/paginator: rel next, last,
// first and prev in that order, each the request URL with only page changed, the current page
// clamped to the last one; an empty list (one page) gets no link at all.
func paginationLinks(base string, u *url.URL, total, limit int, rawPage string) []string {
	totalPages := 1
	if total > 0 {
		totalPages = (total + limit - 1) / limit
	}
	cur, _ := strconv.Atoi(rawPage)
	cur = min(max(cur, 1), totalPages)
	link := func(page int, rel string) string {
		q := u.Query()
		q.Set("page", strconv.Itoa(page))
		return fmt.Sprintf("<%s%s?%s>; rel=%q", base, u.Path, q.Encode(), rel)
	}
	hasNext := total > cur*limit
	isLast := total == 0 || total > (cur-1)*limit && !hasNext
	var links []string
	if hasNext {
		links = append(links, link(cur+1, "next"))
	}
	if !isLast {
		links = append(links, link(totalPages, "last"))
	}
	if cur != 1 {
		links = append(links, link(1, "first"))
	}
	if cur > 1 {
		links = append(links, link(cur-1, "prev"))
	}
	return links
}
