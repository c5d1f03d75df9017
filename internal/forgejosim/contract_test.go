package forgejosim_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	runnerv1 "gitea.dev/actions-proto-go/runner/v1"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
)

const (
	adminPrefix = "/api/v1/admin/actions/runners"
	orgPrefix   = "/api/v1/orgs/acme/actions/runners"
	repoPrefix  = "/api/v1/repos/acme/app/actions/runners"
	userPrefix  = "/api/v1/user/actions/runners"
)

// TestContract checks, over real HTTP, each Forgejo 15 fact of the project's reference notes that
// the simulator claims to follow.
func TestContract(t *testing.T) {
	facts := []struct {
		fact string
		test func(t *testing.T)
	}{
		{"GET /version reports Forgejo 15", testVersion},
		{"POST {prefix} registers a runner in every scope and shows its token once", testRegistrationPerScope},
		{"a bad or missing token answers 401 with a JSON error", testUnauthorized},
		{"what a token may not see answers 404, what it may see but not do 403", testScopeRules},
		{"runner lists are paginated with Link and X-Total-Count", testPagination},
		{"there is no uuid filter, and visible adds inherited runners", testSearchAndVisible},
		{"jobs lists waiting and running jobs with handles, filtered by labels", testJobsListing},
		{"a runner takes a job only when every runs-on label is among its label names", testLabelMatching},
		{"FetchSingleTask gives a runner only the job attempt of its handle", testHandleBinding},
		{"an ephemeral runner is deleted after its final UpdateTask, not before", testEphemeralDeletion},
		{"cancelling a job ends its task and deletes its ephemeral runner", testCancelEphemeral},
		{"a repeated x-runner-request-key gets the same task", testRequestKeyIdempotency},
		{"push and action_run deliveries carry Forgejo's headers and a valid signature", testWebhookSignature},
		{"a failing webhook receiver is retried only when asked to", testWebhookRetry},
		{"dropped and duplicated webhook faults", testWebhookFaults},
		{"injected endpoint faults: error rate, status code, latency", testEndpointFaults},
		{"an older Forgejo has no registration API and no FetchSingleTask", testOldVersion},
		{"bad JSON answers 422 with a Forgejo-style message", testBadJSON},
		{"the control API needs the admin token and never shows tokens", testControlAPI},
	}
	for _, f := range facts {
		t.Run(f.fact, func(t *testing.T) {
			t.Parallel()
			f.test(t)
		})
	}
}

func testVersion(t *testing.T) {
	e := newEnv(t)
	var v struct{ Version string }
	e.expect(http.MethodGet, "/api/v1/version", "", nil, http.StatusOK, &v)
	if v.Version != "15.0.0+sim" {
		t.Fatalf("version %q", v.Version)
	}
}

func testRegistrationPerScope(t *testing.T) {
	e := newEnv(t)
	mustNoErr(t, e.sim.EnsureUser("alice"), "ensure user")
	cases := []struct {
		prefix string
		token  string
	}{
		{adminPrefix, adminToken},
		{orgPrefix, e.token(forgejosim.OrganizationScope("acme"))},
		{repoPrefix, e.token(forgejosim.RepositoryScope("acme/app"))},
		{userPrefix, e.token(forgejosim.UserScope("alice"))},
	}
	seen := map[string]bool{}
	for _, c := range cases {
		reg := e.register(c.prefix, c.token, "runner", true)
		if reg.ID == 0 || reg.UUID == "" || reg.Token == "" || seen[reg.UUID] {
			t.Fatalf("%s: registration %+v", c.prefix, reg)
		}
		seen[reg.UUID] = true
		// The record exists at once, offline until the runner connects, and never shows the token.
		_, body := e.do(http.MethodGet, c.prefix+"/"+itoa(reg.ID), c.token, nil)
		var got map[string]any
		mustNoErr(t, json.Unmarshal(body, &got), "decode runner")
		if got["uuid"] != reg.UUID || got["status"] != "offline" || got["ephemeral"] != true {
			t.Fatalf("%s: runner %s", c.prefix, body)
		}
		for _, field := range []string{"id", "uuid", "owner_id", "repo_id", "name", "status", "version", "labels", "description", "ephemeral"} {
			if _, ok := got[field]; !ok {
				t.Errorf("%s: runner JSON lacks %q: %s", c.prefix, field, body)
			}
		}
		if strings.Contains(string(body), reg.Token) {
			t.Fatalf("%s: runner JSON shows the token", c.prefix)
		}
	}
}

func testUnauthorized(t *testing.T) {
	e := newEnv(t)
	for _, token := range []string{"", "not-a-token"} {
		resp, body := e.do(http.MethodGet, adminPrefix, token, nil)
		var apiErr forgejosim.APIError
		if resp.StatusCode != http.StatusUnauthorized || json.Unmarshal(body, &apiErr) != nil || apiErr.Message == "" || apiErr.URL == "" {
			t.Fatalf("token %q: %d %s", token, resp.StatusCode, body)
		}
	}
	// "Bearer" is accepted as well as "token".
	req, _ := http.NewRequest(http.MethodGet, e.url+adminPrefix, nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	mustNoErr(t, err, "bearer call")
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("bearer: %d", resp.StatusCode)
	}
}

func testScopeRules(t *testing.T) {
	e := newEnv(t)
	mustNoErr(t, e.sim.EnsureRepository("acme/other"), "ensure repo")
	mustNoErr(t, e.sim.EnsureRepository("globex/site"), "ensure repo")
	repoTok := e.token(forgejosim.RepositoryScope("acme/app"))
	orgTok := e.token(forgejosim.OrganizationScope("acme"))
	orgRunner := e.register(orgPrefix, orgTok, "org-runner", false)
	memberTok := e.token(forgejosim.Scope{Kind: forgejosim.ScopeOrganization, Owner: "acme", Member: true})
	collabTok := e.token(forgejosim.Scope{Kind: forgejosim.ScopeRepository, Repo: "acme/app", Member: true})
	readTok := e.token(forgejosim.Scope{Kind: forgejosim.ScopeOrganization, Owner: "acme", TokenScopes: []string{"read:organization"}})

	// What the token may not see: a private repository out of its reach, a missing repository,
	// owner or organization, a runner of another scope.
	for _, c := range []struct {
		method, path, token string
	}{
		{http.MethodGet, "/api/v1/repos/acme/other/actions/runners", repoTok},
		{http.MethodPost, "/api/v1/repos/acme/other/actions/runners", repoTok},
		{http.MethodGet, "/api/v1/repos/globex/site/actions/runners/jobs", orgTok},
		{http.MethodGet, "/api/v1/repos/acme/missing/actions/runners", adminToken},
		{http.MethodGet, "/api/v1/repos/nobody/app/actions/runners", adminToken},
		{http.MethodGet, "/api/v1/orgs/missing/actions/runners", orgTok},
		// Inherited runners can be read from the repository route but not deleted from it.
		{http.MethodDelete, repoPrefix + "/" + itoa(orgRunner.ID), repoTok},
		{http.MethodGet, repoPrefix + "/999", repoTok},
		{http.MethodGet, repoPrefix + "/not-a-number", repoTok},
	} {
		resp, body := e.do(c.method, c.path, c.token, map[string]any{"name": "x"})
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s %s: %d %s, want 404", c.method, c.path, resp.StatusCode, body)
		}
	}
	// What it may see but not do: a missing token scope, not a site administrator, not the
	// organization's or the repository's owner; an existing organization is never hidden.
	for _, c := range []struct {
		method, path, token, message string
	}{
		{http.MethodGet, adminPrefix, repoTok, "token does not have at least one of required scope(s): [read:admin]"},
		{http.MethodPost, adminPrefix, orgTok, "token does not have at least one of required scope(s): [write:admin]"},
		{http.MethodGet, adminPrefix + "/jobs", orgTok, "token does not have at least one of required scope(s): [read:admin]"},
		{http.MethodGet, adminPrefix, e.token(forgejosim.Scope{Kind: forgejosim.ScopeOrganization, Owner: "acme", TokenScopes: []string{"all"}}), "user should be the site admin"},
		{http.MethodGet, orgPrefix, repoTok, "token does not have at least one of required scope(s): [read:organization]"},
		{http.MethodGet, "/api/v1/orgs/globex/actions/runners", orgTok, "Must be an organization owner"},
		{http.MethodGet, orgPrefix, memberTok, "Must be an organization owner"},
		{http.MethodGet, repoPrefix, memberTok, "user should be the owner of the repo"},
		{http.MethodDelete, repoPrefix + "/1", collabTok, "user should be the owner of the repo"},
		{http.MethodPost, orgPrefix, readTok, "token does not have at least one of required scope(s): [write:organization]"},
		{http.MethodGet, userPrefix, orgTok, "token does not have at least one of required scope(s): [read:user]"},
	} {
		resp, body := e.do(c.method, c.path, c.token, map[string]any{"name": "x"})
		var apiErr forgejosim.APIError
		if resp.StatusCode != http.StatusForbidden || json.Unmarshal(body, &apiErr) != nil || apiErr.Message != c.message {
			t.Errorf("%s %s: %d %s, want 403 %q", c.method, c.path, resp.StatusCode, body, c.message)
		}
	}
	e.expect(http.MethodGet, orgPrefix, readTok, nil, http.StatusOK, nil)
	e.expect(http.MethodGet, repoPrefix+"/"+itoa(orgRunner.ID), repoTok, nil, http.StatusOK, nil)
	e.expect(http.MethodGet, "/api/v1/repos/acme/other/actions/runners", orgTok, nil, http.StatusOK, nil)
	e.expect(http.MethodDelete, orgPrefix+"/"+itoa(orgRunner.ID), orgTok, nil, http.StatusNoContent, nil)
	e.expect(http.MethodGet, orgPrefix+"/"+itoa(orgRunner.ID), orgTok, nil, http.StatusNotFound, nil)
}

func testPagination(t *testing.T) {
	e := newEnv(t)
	for i := range 5 {
		e.register(adminPrefix, adminToken, "r"+itoa(int64(i)), false)
	}
	var page []forgejosim.APIRunner
	resp := e.expect(http.MethodGet, adminPrefix+"?limit=2&page=2", adminToken, nil, http.StatusOK, &page)
	if len(page) != 2 || page[0].ID != 3 || page[1].ID != 4 {
		t.Fatalf("page 2: %+v", page)
	}
	if got := resp.Header.Get("X-Total-Count"); got != "5" {
		t.Fatalf("X-Total-Count %q", got)
	}
	link := resp.Header.Get("Link")
	for _, want := range []string{
		`<` + e.url + adminPrefix + `?limit=2&page=3>; rel="next"`,
		`<` + e.url + adminPrefix + `?limit=2&page=3>; rel="last"`,
		`<` + e.url + adminPrefix + `?limit=2&page=1>; rel="first"`,
		`<` + e.url + adminPrefix + `?limit=2&page=1>; rel="prev"`,
	} {
		if !strings.Contains(link, want) {
			t.Errorf("Link %q lacks %q", link, want)
		}
	}
	resp = e.expect(http.MethodGet, adminPrefix+"?limit=2&page=3", adminToken, nil, http.StatusOK, &page)
	if len(page) != 1 || strings.Contains(resp.Header.Get("Link"), `rel="next"`) {
		t.Fatalf("last page: %+v, Link %q", page, resp.Header.Get("Link"))
	}
}

func testSearchAndVisible(t *testing.T) {
	e := newEnv(t)
	repoTok := e.token(forgejosim.RepositoryScope("acme/app"))
	orgTok := e.token(forgejosim.OrganizationScope("acme"))
	global := e.register(adminPrefix, adminToken, "global", false)
	orgRunner := e.register(orgPrefix, orgTok, "org", false)
	repoRunner := e.register(repoPrefix, repoTok, "repo", false)

	ids := func(list []forgejosim.APIRunner) []int64 {
		var out []int64
		for _, r := range list {
			out = append(out, r.ID)
		}
		slices.Sort(out)
		return out
	}
	var list []forgejosim.APIRunner
	// Forgejo 15.0.3 has no uuid filter: the parameter is ignored.
	e.expect(http.MethodGet, repoPrefix+"?uuid="+global.UUID, repoTok, nil, http.StatusOK, &list)
	if got := ids(list); !slices.Equal(got, []int64{repoRunner.ID}) {
		t.Fatalf("repository list with uuid=: %v", got)
	}
	e.expect(http.MethodGet, repoPrefix+"?visible=true", repoTok, nil, http.StatusOK, &list)
	if got := ids(list); !slices.Equal(got, []int64{global.ID, orgRunner.ID, repoRunner.ID}) {
		t.Fatalf("visible repository list: %v", got)
	}
	e.expect(http.MethodGet, orgPrefix+"?visible=true", orgTok, nil, http.StatusOK, &list)
	if got := ids(list); !slices.Equal(got, []int64{global.ID, orgRunner.ID}) {
		t.Fatalf("visible organization list: %v", got)
	}
	// The admin list shows instance runners only, unless visible=true.
	e.expect(http.MethodGet, adminPrefix, adminToken, nil, http.StatusOK, &list)
	if got := ids(list); !slices.Equal(got, []int64{global.ID}) {
		t.Fatalf("admin list: %v", got)
	}
	e.expect(http.MethodGet, adminPrefix+"?visible=true", adminToken, nil, http.StatusOK, &list)
	if got := ids(list); !slices.Equal(got, []int64{global.ID, orgRunner.ID, repoRunner.ID}) {
		t.Fatalf("visible admin list: %v", got)
	}
	// By id, the admin routes see every runner.
	e.expect(http.MethodGet, adminPrefix+"/"+itoa(repoRunner.ID), adminToken, nil, http.StatusOK, nil)
}

func testJobsListing(t *testing.T) {
	e := newEnv(t)
	e.queue("acme/app", 2, "docker")
	gpu := e.queue("acme/app", 1, "docker", "gpu")
	e.queue("globex/site", 1, "docker")
	done := e.queue("acme/app", 1, "docker")
	_, err := e.sim.CompleteJob(done[0].ID, forgejosim.JobSuccess)
	mustNoErr(t, err, "complete job")

	repoTok := e.token(forgejosim.RepositoryScope("acme/app"))
	var jobs []forgejosim.APIJob
	e.expect(http.MethodGet, repoPrefix+"/jobs", repoTok, nil, http.StatusOK, &jobs)
	if len(jobs) != 3 {
		t.Fatalf("repository jobs: %+v", jobs)
	}
	for _, j := range jobs {
		if j.Handle == "" || j.Status != "waiting" || j.Attempt != 1 || j.RepoID == 0 || j.OwnerID == 0 {
			t.Fatalf("job %+v", j)
		}
	}
	e.expect(http.MethodGet, repoPrefix+"/jobs?labels=docker", repoTok, nil, http.StatusOK, &jobs)
	if len(jobs) != 2 {
		t.Fatalf("labels=docker: %+v", jobs)
	}
	e.expect(http.MethodGet, repoPrefix+"/jobs?labels=docker,gpu", repoTok, nil, http.StatusOK, &jobs)
	if len(jobs) != 3 || !slices.ContainsFunc(jobs, func(j forgejosim.APIJob) bool { return j.ID == gpu[0].ID }) {
		t.Fatalf("labels=docker,gpu: %+v", jobs)
	}
	e.expect(http.MethodGet, adminPrefix+"/jobs", adminToken, nil, http.StatusOK, &jobs)
	if len(jobs) != 4 {
		t.Fatalf("instance jobs: %+v", jobs)
	}
	// The deprecated route KEDA polls answers the same.
	e.expect(http.MethodGet, "/api/v1/admin/runners/jobs", adminToken, nil, http.StatusOK, &jobs)
	if len(jobs) != 4 {
		t.Fatalf("deprecated jobs route: %+v", jobs)
	}
	// No job: Forgejo encodes a nil list as null.
	_, body := e.do(http.MethodGet, "/api/v1/repos/acme/app/actions/runners/jobs?labels=none", repoTok, nil)
	if strings.TrimSpace(string(body)) != "null" {
		t.Fatalf("empty jobs list: %s", body)
	}
}

func testLabelMatching(t *testing.T) {
	e := newEnv(t)
	plain := e.queue("acme/app", 1, "docker")
	gpu := e.queue("acme/app", 1, "docker", "gpu")

	small := e.runner(e.register(adminPrefix, adminToken, "small", false), "docker:docker://node:22-bookworm")
	task, err := small.fetch()
	mustNoErr(t, err, "fetch")
	if task == nil || task.GetId() == 0 {
		t.Fatal("runner with label docker got no task for runs-on [docker]")
	}
	if j, _ := e.sim.Job(plain[0].ID); j.Status != forgejosim.JobRunning || j.TaskID != task.GetId() {
		t.Fatalf("job after fetch: %+v", j)
	}
	if task, err = small.fetch(); err != nil || task != nil {
		t.Fatalf("runner without gpu got %v, %v for runs-on [docker gpu]", task, err)
	}
	big := e.runner(e.register(adminPrefix, adminToken, "big", false), "docker:docker://node:22", "gpu:host")
	if task, err = big.fetch(); err != nil || task == nil {
		t.Fatalf("runner with docker and gpu: %v, %v", task, err)
	}
	if j, _ := e.sim.Job(gpu[0].ID); j.TaskID != task.GetId() {
		t.Fatalf("gpu job after fetch: %+v", j)
	}
}

func testHandleBinding(t *testing.T) {
	e := newEnv(t)
	jobs := e.queue("acme/app", 2, "docker")
	wrong := e.runner(e.register(adminPrefix, adminToken, "wrong", true), "ubuntu:docker://ubuntu")
	if task, err := wrong.fetchSingle(jobs[1].Handle); err != nil || task != nil {
		t.Fatalf("non-matching runner: %v, %v", task, err)
	}
	bound := e.runner(e.register(adminPrefix, adminToken, "bound", true), "docker")
	task, err := bound.fetchSingle(jobs[1].Handle)
	mustNoErr(t, err, "fetch single")
	if task == nil {
		t.Fatal("matching runner got no task for its handle")
	}
	if j, _ := e.sim.Job(jobs[1].ID); j.TaskID != task.GetId() {
		t.Fatalf("task %d is not job %d's", task.GetId(), jobs[1].ID)
	}
	// An ephemeral runner gets no second task.
	if task, err := bound.fetch(); err != nil || task != nil {
		t.Fatalf("bound runner fetched %v, %v", task, err)
	}
	if j, _ := e.sim.Job(jobs[0].ID); j.Status != forgejosim.JobWaiting {
		t.Fatalf("other job: %+v", j)
	}
	// An empty handle is no handle: any job the runner can take (Forgejo's nil handle).
	anyJob := e.runner(e.register(adminPrefix, adminToken, "any", true), "docker")
	if task, err := anyJob.fetchSingle(""); err != nil || task == nil {
		t.Fatalf("empty handle: %v, %v", task, err)
	}
}

func testEphemeralDeletion(t *testing.T) {
	e := newEnv(t)
	jobs := e.queue("acme/app", 2, "docker")
	idle := e.register(adminPrefix, adminToken, "never-used", true)
	r := e.runner(e.register(adminPrefix, adminToken, "ephemeral", true), "docker")
	task, err := r.fetch()
	mustNoErr(t, err, "fetch")
	if task == nil {
		t.Fatal("no task")
	}
	// At most one task: the second job stays waiting.
	if next, err := r.fetch(); err != nil || next != nil {
		t.Fatalf("second fetch: %v, %v", next, err)
	}
	// A non-final update keeps the runner.
	if _, err := r.finish(task.GetId(), runnerv1.Result_RESULT_UNSPECIFIED); err != nil {
		t.Fatalf("progress update: %v", err)
	}
	if _, ok := e.sim.RunnerByUUID(r.uuid); !ok {
		t.Fatal("runner deleted before its task ended")
	}
	resp, err := r.finish(task.GetId(), runnerv1.Result_RESULT_SUCCESS)
	mustNoErr(t, err, "final update")
	if resp.GetState().GetResult() != runnerv1.Result_RESULT_SUCCESS {
		t.Fatalf("final update answer: %v", resp)
	}
	if _, ok := e.sim.RunnerByUUID(r.uuid); ok {
		t.Fatal("ephemeral runner still registered after its final UpdateTask")
	}
	if _, err := r.fetch(); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("call after deletion: %v, want unauthenticated", err)
	}
	if j, _ := e.sim.Job(jobs[0].ID); j.Status != forgejosim.JobSuccess {
		t.Fatalf("job: %+v", j)
	}
	if _, ok := e.sim.RunnerByUUID(idle.UUID); !ok {
		t.Fatal("an ephemeral runner that never took a task was deleted")
	}
	e.expect(http.MethodGet, adminPrefix+"/"+itoa(idle.ID), adminToken, nil, http.StatusOK, nil)
}

func testCancelEphemeral(t *testing.T) {
	e := newEnv(t)
	jobs := e.queue("acme/app", 1, "docker")
	r := e.runner(e.register(adminPrefix, adminToken, "ephemeral", true), "docker")
	task, err := r.fetch()
	mustNoErr(t, err, "fetch")
	if task == nil {
		t.Fatal("no task")
	}
	e.expect(http.MethodPost, "/_sim/jobs/"+itoa(jobs[0].ID)+"/cancel", adminToken, nil, http.StatusOK, nil)
	if _, ok := e.sim.RunnerByUUID(r.uuid); ok {
		t.Fatal("ephemeral runner of a cancelled job still registered")
	}
	if _, err := r.finish(task.GetId(), runnerv1.Result_RESULT_UNSPECIFIED); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("update after cancel: %v", err)
	}

	// A persistent runner is told through UpdateTask that its job was cancelled.
	jobs = e.queue("acme/app", 1, "docker")
	p := e.runner(e.register(adminPrefix, adminToken, "persistent", false), "docker")
	task, err = p.fetch()
	mustNoErr(t, err, "fetch")
	_, err = e.sim.CancelJob(jobs[0].ID)
	mustNoErr(t, err, "cancel")
	resp, err := p.finish(task.GetId(), runnerv1.Result_RESULT_UNSPECIFIED)
	mustNoErr(t, err, "update")
	if resp.GetState().GetResult() != runnerv1.Result_RESULT_CANCELLED {
		t.Fatalf("update answer: %v", resp)
	}
}

func testRequestKeyIdempotency(t *testing.T) {
	e := newEnv(t)
	e.queue("acme/app", 2, "docker")
	r := e.runner(e.register(adminPrefix, adminToken, "r", false), "docker")
	call := func(key string) *runnerv1.Task {
		req := authed(r, &runnerv1.FetchTaskRequest{})
		req.Header().Set(forgejosim.HeaderRunnerRequestKey, key)
		resp, err := r.client.FetchTask(t.Context(), req)
		mustNoErr(t, err, "fetch")
		return resp.Msg.GetTask()
	}
	first, again, next := call("k1"), call("k1"), call("k2")
	if first == nil || again.GetId() != first.GetId() || next.GetId() == first.GetId() {
		t.Fatalf("tasks %d, %d, %d", first.GetId(), again.GetId(), next.GetId())
	}
	if n := len(e.sim.State().Tasks); n != 2 {
		t.Fatalf("%d tasks, want 2", n)
	}
}

// receiver records webhook deliveries; failFirst makes its first answers 500.
type receiver struct {
	mu        sync.Mutex
	failFirst int
	calls     int
	got       []delivered
}

type delivered struct {
	header http.Header
	body   []byte
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.calls++
	if rc.calls <= rc.failFirst {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	rc.got = append(rc.got, delivered{header: r.Header.Clone(), body: body})
}

func (rc *receiver) deliveries() []delivered {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.got)
}

func newReceiver(t *testing.T, failFirst int) (*receiver, string) {
	rc := &receiver{failFirst: failFirst}
	ts := httptest.NewServer(rc)
	t.Cleanup(ts.Close)
	return rc, ts.URL
}

func testWebhookSignature(t *testing.T) {
	e := newEnv(t)
	rc, url := newReceiver(t, 0)
	const secret = "s3cret"
	_, err := e.sim.AddHook(forgejosim.HookConfig{URL: url, Secret: secret, Scope: forgejosim.OrganizationScope("acme")})
	mustNoErr(t, err, "add hook")
	_, err = e.sim.AddHook(forgejosim.HookConfig{URL: url, Secret: secret, Scope: forgejosim.RepositoryScope("acme/app"),
		Events: []string{forgejosim.EventActionRunSuccess}})
	mustNoErr(t, err, "add hook")

	jobs := e.queue("acme/app", 1, "docker")
	r := e.runner(e.register(adminPrefix, adminToken, "r", true), "docker")
	task, err := r.fetch()
	mustNoErr(t, err, "fetch")
	_, err = r.finish(task.GetId(), runnerv1.Result_RESULT_SUCCESS)
	mustNoErr(t, err, "finish")

	// Organization hook: push, then action_run_success; repository hook: action_run_success only.
	eventually(t, "3 deliveries", func() bool { return len(rc.deliveries()) == 3 })
	var events []string
	for _, d := range rc.deliveries() {
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(d.body)
		want := hex.EncodeToString(mac.Sum(nil))
		for _, h := range []string{"X-Forgejo-Signature", "X-Gitea-Signature", "X-Gogs-Signature"} {
			if d.header.Get(h) != want {
				t.Fatalf("%s %q, want HMAC %q", h, d.header.Get(h), want)
			}
		}
		if d.header.Get("X-Hub-Signature-256") != "sha256="+want || !strings.HasPrefix(d.header.Get("X-Hub-Signature"), "sha1=") {
			t.Fatalf("hub signatures %v", d.header)
		}
		ev := d.header.Get("X-Forgejo-Event-Type")
		if d.header.Get("X-Forgejo-Event") != ev || d.header.Get("X-Gitea-Event-Type") != ev || d.header.Get("X-GitHub-Event") == "" ||
			d.header.Get("X-Forgejo-Delivery") == "" || d.header.Get("X-Forgejo-Delivery") != d.header.Get("X-GitHub-Delivery") {
			t.Fatalf("headers %v", d.header)
		}
		if !strings.HasPrefix(string(d.body), "{\n  \"") {
			t.Fatalf("body is not indented as json.MarshalIndent does: %.40q", d.body)
		}
		var p struct {
			Ref    string `json:"ref"`
			After  string `json:"after"`
			Action string `json:"action"`
			Repo   *struct {
				ID       int64  `json:"id"`
				FullName string `json:"full_name"`
				Owner    struct {
					Login string `json:"login"`
				} `json:"owner"`
			} `json:"repository"`
			Run *struct {
				ID     int64  `json:"id"`
				Status string `json:"status"`
				Repo   struct {
					FullName string `json:"full_name"`
				} `json:"repository"`
			} `json:"run"`
			PriorStatus string `json:"prior_status"`
		}
		mustNoErr(t, json.Unmarshal(d.body, &p), "decode payload")
		switch ev {
		case forgejosim.EventPush:
			if p.Ref != "refs/heads/main" || len(p.After) != 40 || p.Repo == nil || p.Repo.ID != jobs[0].RepoID ||
				p.Repo.FullName != "acme/app" || p.Repo.Owner.Login != "acme" {
				t.Fatalf("push payload %s", d.body)
			}
		case forgejosim.EventActionRunSuccess:
			if p.Action != "success" || p.Run == nil || p.Run.ID != jobs[0].RunID || p.Run.Status != "success" ||
				p.Run.Repo.FullName != "acme/app" || p.PriorStatus != "running" || strings.Contains(string(d.body), "last_run") {
				t.Fatalf("action_run_success payload %s", d.body)
			}
		}
		events = append(events, ev)
	}
	slices.Sort(events)
	if want := []string{"action_run_success", "action_run_success", "push"}; !slices.Equal(events, want) {
		t.Fatalf("events %v, want %v", events, want)
	}
	for _, d := range e.sim.Deliveries() {
		if strings.HasPrefix(d.Event, "workflow_job") {
			t.Fatalf("Forgejo 15 sent a job event: %+v", d)
		}
	}
}

func testWebhookRetry(t *testing.T) {
	// Forgejo delivers once: a failed delivery stays failed.
	once := newEnv(t)
	_, onceURL := newReceiver(t, 1)
	_, err := once.sim.AddHook(forgejosim.HookConfig{URL: onceURL, Scope: forgejosim.InstanceScope()})
	mustNoErr(t, err, "add hook")
	once.queue("acme/app", 1, "docker")
	eventually(t, "failed delivery", func() bool {
		d := once.sim.Deliveries()
		return len(d) == 1 && d[0].Status == forgejosim.DeliveryFailed && d[0].Attempts == 1
	})

	e := newEnv(t, func(o *forgejosim.Options) { o.WebhookMaxAttempts = 3 })
	rc, url := newReceiver(t, 2)
	_, err = e.sim.AddHook(forgejosim.HookConfig{URL: url, Scope: forgejosim.InstanceScope()})
	mustNoErr(t, err, "add hook")
	e.queue("acme/app", 1, "docker")
	eventually(t, "delivery after retries", func() bool {
		d := e.sim.Deliveries()
		return len(d) == 1 && d[0].Status == forgejosim.DeliveryDelivered
	})
	if d := e.sim.Deliveries()[0]; d.Attempts != 3 || len(rc.deliveries()) != 1 {
		t.Fatalf("delivery %+v, received %d", d, len(rc.deliveries()))
	}

	// A receiver that always fails exhausts the bounded attempts.
	_, badURL := newReceiver(t, 1000)
	_, err = e.sim.AddHook(forgejosim.HookConfig{URL: badURL, Scope: forgejosim.RepositoryScope("acme/app")})
	mustNoErr(t, err, "add hook")
	e.queue("acme/app", 1, "docker")
	eventually(t, "failed delivery", func() bool {
		return slices.ContainsFunc(e.sim.Deliveries(), func(d forgejosim.Delivery) bool {
			return d.Status == forgejosim.DeliveryFailed && d.Attempts == 3 && d.LastStatusCode == 500
		})
	})
}

func testWebhookFaults(t *testing.T) {
	e := newEnv(t)
	rc, url := newReceiver(t, 0)
	_, err := e.sim.AddHook(forgejosim.HookConfig{URL: url, Scope: forgejosim.InstanceScope()})
	mustNoErr(t, err, "add hook")

	mustNoErr(t, e.sim.SetFaults(forgejosim.Faults{Webhooks: forgejosim.WebhookFaults{DropRate: 1}}), "set faults")
	e.queue("acme/app", 1, "docker")
	if d := e.sim.Deliveries(); len(d) != 1 || d[0].Status != forgejosim.DeliveryDropped {
		t.Fatalf("dropped: %+v", d)
	}

	mustNoErr(t, e.sim.SetFaults(forgejosim.Faults{Webhooks: forgejosim.WebhookFaults{DuplicateRate: 1}}), "set faults")
	e.queue("acme/app", 1, "docker")
	eventually(t, "duplicated delivery", func() bool { return len(rc.deliveries()) == 2 })
	got := rc.deliveries()
	if got[0].header.Get("X-Forgejo-Delivery") != got[1].header.Get("X-Forgejo-Delivery") {
		t.Fatalf("duplicates carry different delivery ids")
	}
	eventually(t, "duplicate recorded", func() bool { return e.sim.Deliveries()[1].Duplicates == 1 })
}

func testEndpointFaults(t *testing.T) {
	e := newEnv(t)
	r := e.runner(e.register(adminPrefix, adminToken, "r", false), "docker")
	mustNoErr(t, e.sim.SetFaults(forgejosim.Faults{Endpoints: []forgejosim.Fault{
		{Endpoint: forgejosim.EndpointListRunners, ErrorRate: 1, StatusCode: http.StatusServiceUnavailable},
		{Endpoint: forgejosim.EndpointFetchTask, ErrorRate: 1, StatusCode: http.StatusServiceUnavailable},
		{Endpoint: forgejosim.EndpointVersion, Latency: 50 * time.Millisecond},
	}}), "set faults")
	e.expect(http.MethodGet, adminPrefix, adminToken, nil, http.StatusServiceUnavailable, nil)
	e.expect(http.MethodGet, adminPrefix+"/jobs", adminToken, nil, http.StatusOK, nil)
	if _, err := r.fetch(); connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("fetch under fault: %v", err)
	}
	start := time.Now()
	e.expect(http.MethodGet, "/api/v1/version", "", nil, http.StatusOK, nil)
	if time.Since(start) < 50*time.Millisecond {
		t.Fatal("latency not added")
	}
	e.expect(http.MethodDelete, "/_sim/faults", adminToken, nil, http.StatusNoContent, nil)
	e.expect(http.MethodGet, adminPrefix, adminToken, nil, http.StatusOK, nil)

	mustNoErr(t, e.sim.SetFaults(forgejosim.Faults{Endpoints: []forgejosim.Fault{{Endpoint: "*", ErrorRate: 0.5}}}), "set faults")
	failures := 0
	for range 200 {
		if resp, _ := e.do(http.MethodGet, "/api/v1/version", "", nil); resp.StatusCode == http.StatusInternalServerError {
			failures++
		}
	}
	if failures < 50 || failures > 150 {
		t.Fatalf("%d of 200 calls failed at rate 0.5", failures)
	}
	if err := e.sim.SetFaults(forgejosim.Faults{Endpoints: []forgejosim.Fault{{Endpoint: "*", ErrorRate: 2}}}); err == nil {
		t.Fatal("error rate 2 accepted")
	}
}

func testOldVersion(t *testing.T) {
	e := newEnv(t, func(o *forgejosim.Options) { o.Version = "11.0.0" })
	var v struct{ Version string }
	e.expect(http.MethodGet, "/api/v1/version", "", nil, http.StatusOK, &v)
	if v.Version != "11.0.0" {
		t.Fatalf("version %q", v.Version)
	}
	for _, prefix := range []string{adminPrefix, repoPrefix} {
		if err := e.sim.EnsureRepository("acme/app"); err != nil {
			t.Fatal(err)
		}
		e.expect(http.MethodPost, prefix, adminToken, forgejosim.RegisterRunnerRequest{Name: "r"}, http.StatusNotFound, nil)
	}
	e.sim.SetVersion("15.0.0")
	reg := e.register(adminPrefix, adminToken, "r", true)
	e.sim.SetVersion("11.0.0")
	if _, err := e.runner(reg).fetchSingle("h"); connect.CodeOf(err) != connect.CodeUnimplemented {
		t.Fatalf("FetchSingleTask on 11.0.0: %v", err)
	}
}

func testBadJSON(t *testing.T) {
	e := newEnv(t)
	for _, body := range []string{"{", `{"name": 3}`, `{"name": ""}`} {
		resp, data := e.do(http.MethodPost, adminPrefix, adminToken, body)
		var apiErr forgejosim.APIError
		if resp.StatusCode != http.StatusUnprocessableEntity || json.Unmarshal(data, &apiErr) != nil || apiErr.Message == "" {
			t.Fatalf("body %q: %d %s", body, resp.StatusCode, data)
		}
	}
	// Forgejo reads a runner id that is not a number as 0, which no runner has.
	e.expect(http.MethodGet, adminPrefix+"/abc", adminToken, nil, http.StatusNotFound, nil)
	e.expect(http.MethodPost, "/_sim/jobs", adminToken, "{", http.StatusBadRequest, nil)
	e.expect(http.MethodPost, "/_sim/jobs", adminToken, `{"repo":"noslash"}`, http.StatusUnprocessableEntity, nil)
}

func testControlAPI(t *testing.T) {
	e := newEnv(t)
	e.expect(http.MethodGet, "/_sim/state", "", nil, http.StatusUnauthorized, nil)
	e.expect(http.MethodGet, "/_sim/state", "wrong", nil, http.StatusUnauthorized, nil)

	var tok struct{ Token string }
	e.expect(http.MethodPost, "/_sim/tokens", adminToken, map[string]any{"scope": forgejosim.RepositoryScope("acme/app")}, http.StatusCreated, &tok)
	reg := e.register(repoPrefix, tok.Token, "r", false)
	var jobs []forgejosim.Job
	e.expect(http.MethodPost, "/_sim/jobs", adminToken, forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"docker"}, Count: 3}, http.StatusCreated, &jobs)
	if len(jobs) != 3 || jobs[0].Handle == jobs[1].Handle {
		t.Fatalf("queued %+v", jobs)
	}
	e.expect(http.MethodPost, "/_sim/jobs/"+itoa(jobs[0].ID)+"/complete", adminToken, map[string]string{"status": "failure"}, http.StatusOK, nil)
	e.expect(http.MethodPost, "/_sim/jobs/"+itoa(jobs[0].ID)+"/complete", adminToken, map[string]string{"status": "success"}, http.StatusUnprocessableEntity, nil)
	e.expect(http.MethodPost, "/_sim/hooks", adminToken, forgejosim.HookConfig{URL: "http://127.0.0.1:1/hook", Secret: "hidden-secret", Scope: forgejosim.InstanceScope()}, http.StatusCreated, nil)
	e.expect(http.MethodPut, "/_sim/faults", adminToken, forgejosim.Faults{Endpoints: []forgejosim.Fault{{Endpoint: forgejosim.EndpointGetRunner, ErrorRate: 1}}}, http.StatusOK, nil)

	resp, body := e.do(http.MethodGet, "/_sim/state", adminToken, nil)
	var st forgejosim.State
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &st) != nil {
		t.Fatalf("state: %d %s", resp.StatusCode, body)
	}
	if len(st.Runners) != 1 || len(st.Jobs) != 3 || st.Jobs[0].Status != forgejosim.JobFailure || len(st.Hooks) != 1 || len(st.Faults.Endpoints) != 1 {
		t.Fatalf("state %s", body)
	}
	for _, secret := range []string{reg.Token, tok.Token, adminToken, "hidden-secret"} {
		if strings.Contains(string(body), secret) {
			t.Fatalf("state shows a secret %q", secret)
		}
	}
	e.expect(http.MethodPut, "/_sim/version", adminToken, map[string]string{"version": "11.0.0"}, http.StatusNoContent, nil)
	e.expect(http.MethodPost, repoPrefix, tok.Token, forgejosim.RegisterRunnerRequest{Name: "r"}, http.StatusNotFound, nil)
}

func itoa(i int64) string { return strconv.FormatInt(i, 10) }
