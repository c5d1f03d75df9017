package forgejosim

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
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

// APIJob is a job attempt as the jobs API and webhook payloads show it (Forgejo's
// modules/structs/action.go ActionRunJob).
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

func errorResponse(status int, format string, args ...any) apiResponse {
	return apiResponse{status: status, body: APIError{Message: fmt.Sprintf(format, args...)}}
}

func notFound() apiResponse {
	return errorResponse(http.StatusNotFound, "The target couldn't be found.")
}

func (s *Server) writeAPI(w http.ResponseWriter, r *http.Request, resp apiResponse) {
	for k, vs := range resp.header {
		w.Header()[k] = vs
	}
	if e, ok := resp.body.(APIError); ok {
		e.URL = s.publicURL(r) + "/api/swagger"
		resp.body = e
	}
	if resp.body == nil {
		w.WriteHeader(resp.status)
		return
	}
	writeJSON(w, resp.status, resp.body)
}

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

// resolver maps a request and the caller's token scope to the target of a runner route; false
// means the caller may not see it (or it does not exist), which Forgejo 15 answers with 404.
// It runs with s.mu held.
type resolver func(r *http.Request, sc Scope) (target, bool)

type scopeRoute struct {
	prefix  string
	resolve resolver
}

func (s *Server) scopeRoutes() []scopeRoute {
	return []scopeRoute{
		{"/api/v1/admin/actions/runners", func(_ *http.Request, sc Scope) (target, bool) {
			return target{}, sc.Kind == ScopeInstance
		}},
		{"/api/v1/orgs/{org}/actions/runners", func(r *http.Request, sc Scope) (target, bool) {
			o := s.findOwnerLocked(r.PathValue("org"))
			if o == nil || o.kind != ownerOrganization || !s.scopeSeesOwnerLocked(sc, o) {
				return target{}, false
			}
			return target{ownerID: o.id}, true
		}},
		{"/api/v1/repos/{owner}/{repo}/actions/runners", func(r *http.Request, sc Scope) (target, bool) {
			repo := s.findRepoLocked(r.PathValue("owner"), r.PathValue("repo"))
			if repo == nil || !s.scopeSeesRepoLocked(sc, repo) {
				return target{}, false
			}
			return target{repoID: repo.id, repo: repo}, true
		}},
		{"/api/v1/user/actions/runners", func(_ *http.Request, sc Scope) (target, bool) {
			var name string
			switch sc.Kind {
			case ScopeInstance:
				name = AdminUserName
			case ScopeUser:
				name = sc.Owner
			default:
				return target{}, false
			}
			o := s.findOwnerLocked(name)
			if o == nil || o.kind != ownerUser {
				return target{}, false
			}
			return target{ownerID: o.id}, true
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
		s.mux.Handle("POST "+sr.prefix, s.api(EndpointRegisterRunner, sr.resolve, s.registerRunner))
		s.mux.Handle("GET "+sr.prefix, s.api(EndpointListRunners, sr.resolve, s.listRunners))
		s.mux.Handle("GET "+sr.prefix+"/{id}", s.api(EndpointGetRunner, sr.resolve, s.getRunner))
		s.mux.Handle("DELETE "+sr.prefix+"/{id}", s.api(EndpointDeleteRunner, sr.resolve, s.deleteRunner))
		s.mux.Handle("GET "+sr.prefix+"/jobs", s.api(EndpointListJobs, sr.resolve, s.listJobs))
		s.mux.Handle("GET "+sr.prefix+"/registration-token", s.api(EndpointRegistrationToken, sr.resolve, s.registrationToken))
		s.mux.Handle("POST "+sr.prefix+"/registration-token", s.api(EndpointRegistrationToken, sr.resolve, s.registrationToken))
	}
	// Deprecated, still served by Forgejo 15 and polled by KEDA's forgejo-runner scaler.
	s.mux.Handle("GET /api/v1/admin/runners/jobs", s.api(EndpointListJobs, s.scopeRoutes()[0].resolve, s.listJobs))
	s.mux.Handle("/api/v1/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.writeAPI(w, r, notFound())
	}))
}

// api wraps a runner route: fault injection, then authentication (401), then scope (404).
func (s *Server) api(endpoint string, resolve resolver, h func(*http.Request, target) apiResponse) http.Handler {
	return s.withFaults(endpoint, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token := requestToken(r)
		if token == "" {
			s.writeAPI(w, r, errorResponse(http.StatusUnauthorized, "token is required"))
			return
		}
		s.mu.Lock()
		var resp apiResponse
		if sc, ok := s.tokens[hashToken(token)]; !ok {
			resp = errorResponse(http.StatusUnauthorized, "invalid username, password or token")
		} else if t, ok := resolve(r, sc); !ok {
			resp = notFound()
		} else {
			resp = h(r, t)
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

// runnerVisibleLocked follows Forgejo's FindRunnerOptions: without withInherited, a route sees
// the runners registered exactly at its level (the instance route sees all); with it (the
// "visible" list flag, and always for GET/DELETE by id), a repository also sees its owner's and
// the instance's runners, and an owner the instance's.
func (s *Server) runnerVisibleLocked(rn *runner, t target, withInherited bool) bool {
	switch {
	case t.ownerID == 0 && t.repoID == 0:
		return true
	case rn.ownerID == t.ownerID && rn.repoID == t.repoID:
		return true
	case !withInherited:
		return false
	case rn.ownerID == 0 && rn.repoID == 0:
		return true
	case t.repo != nil && rn.repoID == 0 && rn.ownerID == t.repo.owner.id:
		return true
	}
	return false
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

// listRunners serves GET {prefix}. Forgejo 15 can search runners by UUID; the Forgejo trees
// readable here (routers/api/v1/shared/runners.go ListRunners, a pre-15 snapshot) only show
// page/limit and "visible", so the parameter name "uuid" is this simulator's choice, unverified.
// It is an exact match.
func (s *Server) listRunners(r *http.Request, t target) apiResponse {
	q := r.URL.Query()
	visible, _ := strconv.ParseBool(q.Get("visible"))
	uuid := q.Get("uuid")
	var all []APIRunner
	for _, id := range sortedKeys(s.runners) {
		rn := s.runners[id]
		if !s.runnerVisibleLocked(rn, t, visible) || (uuid != "" && rn.uuid != uuid) {
			continue
		}
		all = append(all, s.apiRunnerLocked(rn))
	}
	page, limit := listOptions(q)
	header := http.Header{}
	setPaginationHeaders(header, s.publicURL(r), r.URL, len(all), limit, q.Get("page"))
	start := min((page-1)*limit, len(all))
	end := min(start+limit, len(all))
	pageItems := all[start:end]
	if pageItems == nil {
		pageItems = []APIRunner{}
	}
	return apiResponse{status: http.StatusOK, body: pageItems, header: header}
}

func (s *Server) runnerFromPathLocked(r *http.Request, t target) (*runner, apiResponse, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		return nil, errorResponse(http.StatusUnprocessableEntity, "invalid runner id %q", r.PathValue("id")), false
	}
	rn, ok := s.runners[id]
	if !ok || !s.runnerVisibleLocked(rn, t, true) {
		return nil, notFound(), false
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
// instance) is 404 too, "No permission to delete this runner" (routers/api/v1/shared/runners.go).
// Nothing protects a runner in the middle of a job, as in Forgejo.
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

// listJobs serves GET {prefix}/jobs. As in Forgejo's GetActionRunJobs: waiting and running jobs of
// the route's scope, no pagination; "labels=a,b" keeps the jobs whose runs-on labels are all among
// a and b, and "labels=" (empty) keeps the jobs with no runs-on. With no job the body is JSON null
// (Forgejo encodes a nil slice), which clients must accept.
func (s *Server) listJobs(r *http.Request, t target) apiResponse {
	q := r.URL.Query()
	_, filter := q["labels"]
	var labels []string
	if filter {
		labels = strings.Split(strings.TrimSpace(q.Get("labels")), ",")
	}
	var res []APIJob
	for _, id := range sortedKeys(s.jobs) {
		j := s.jobs[id]
		if j.status != JobWaiting && j.status != JobRunning {
			continue
		}
		if t.repoID != 0 && j.repo.id != t.repoID || t.ownerID != 0 && j.repo.owner.id != t.ownerID {
			continue
		}
		if filter && !jobMatchesLabelFilter(j.runsOn, labels) {
			continue
		}
		res = append(res, s.apiJobLocked(j))
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
		ID: j.id, RunID: j.runID, Attempt: j.attempt, Handle: j.handle, RepoID: j.repo.id,
		OwnerID: j.repo.owner.id, Name: j.name,
		HTMLURL: fmt.Sprintf("%s/%s/actions/runs/%d/jobs/0/attempt/%d", base, j.repo.fullName(), j.runID, j.attempt),
		Needs:   nonNil(j.needs), RunsOn: nonNil(j.runsOn), TaskID: j.taskID, Status: string(j.status),
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return slices.Clone(s)
}

// registrationToken serves the deprecated registration-token routes; the project must not use
// them, the simulator answers so that a client that does is visible in tests.
func (s *Server) registrationToken(_ *http.Request, _ target) apiResponse {
	return apiResponse{status: http.StatusOK, body: map[string]string{"token": s.randomHexLocked(20)}}
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

// setPaginationHeaders writes X-Total-Count and a Link header with rel next, last, first and prev
// in that order, each link being the request URL with only page changed. It mirrors Forgejo's
// paginator, including its quirk of clamping the current page to the last one, so an empty list
// gets only rel="first".
func setPaginationHeaders(h http.Header, base string, u *url.URL, total, limit int, rawPage string) {
	h.Set("X-Total-Count", strconv.Itoa(total))
	totalPages := (total + limit - 1) / limit
	cur, _ := strconv.Atoi(rawPage)
	if cur <= 0 {
		cur = 1
	}
	if cur > totalPages {
		cur = totalPages
	}
	link := func(page int, rel string) string {
		q := u.Query()
		q.Set("page", strconv.Itoa(page))
		return fmt.Sprintf("<%s%s?%s>; rel=%q", base, u.Path, q.Encode(), rel)
	}
	var links []string
	if total > cur*limit {
		links = append(links, link(cur+1, "next"))
	}
	if cur != totalPages {
		links = append(links, link(totalPages, "last"))
	}
	if cur != 1 {
		links = append(links, link(1, "first"))
	}
	if cur > 1 {
		links = append(links, link(cur-1, "prev"))
	}
	if len(links) > 0 {
		h.Set("Link", strings.Join(links, ","))
	}
}
