package forgejo_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
)

// scopeCase is one of the four scopes with a token that may manage it and the repository whose
// jobs it sees.
type scopeCase struct {
	name  string
	scope forgejo.Scope
	token string
	repo  string
}

func scopeCases(e *env) []scopeCase {
	mustNoErr(e.t, e.sim.EnsureUser("alice"), "ensure user")
	return []scopeCase{
		{"global", forgejo.GlobalScope(), adminToken, "acme/app"},
		{"organization", forgejo.OrganizationScope("acme"), e.token(forgejosim.OrganizationScope("acme")), "acme/app"},
		{"repository", forgejo.RepositoryScope("acme", "app"), e.token(forgejosim.RepositoryScope("acme/app")), "acme/app"},
		{"user", forgejo.UserScope(), e.token(forgejosim.UserScope("alice")), "alice/tools"},
	}
}

func TestEveryEndpointInEveryScope(t *testing.T) {
	e := newEnv(t)
	for _, sc := range scopeCases(e) {
		t.Run(sc.name, func(t *testing.T) {
			e.t = t
			c := e.client(sc.scope, sc.token)
			v, err := c.CheckVersion(ctx(t))
			mustNoErr(t, err, "check version")
			if v.Major != 15 || v.Raw != forgejosim.DefaultVersion {
				t.Fatalf("version %+v", v)
			}

			reg := e.register(c, "runner-"+sc.name)
			if reg.ID == 0 || reg.UUID == "" || reg.Token == "" {
				t.Fatalf("registration %v", reg)
			}
			js, _ := json.Marshal(reg)
			for _, shown := range []string{reg.String(), fmt.Sprintf("%v %+v %#v", reg, reg, reg), string(js), c.String()} {
				if strings.Contains(shown, reg.Token) || strings.Contains(shown, sc.token) {
					t.Fatalf("a token is shown in %q", shown)
				}
			}

			got, err := c.GetRunner(ctx(t), reg.ID)
			mustNoErr(t, err, "get runner")
			if got.UUID != reg.UUID || got.Name != "runner-"+sc.name || got.Description != "pool=test" ||
				!got.Ephemeral || got.Status != forgejo.RunnerOffline || got.Labels == nil {
				t.Fatalf("runner %+v", got)
			}

			found, err := c.FindRunnerByUUID(ctx(t), reg.UUID)
			mustNoErr(t, err, "find by uuid")
			if found.ID != reg.ID {
				t.Fatalf("found %+v, want id %d", found, reg.ID)
			}

			list, err := c.ListRunners(ctx(t), forgejo.ListOptions{})
			mustNoErr(t, err, "list runners")
			if !slices.ContainsFunc(list, func(r forgejo.Runner) bool { return r.ID == reg.ID }) {
				t.Fatalf("list %+v lacks runner %d", list, reg.ID)
			}

			jobs, err := e.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: sc.repo, RunsOn: []string{"docker-" + sc.name}})
			mustNoErr(t, err, "queue job")
			listed, err := c.ListJobs(ctx(t), "docker-"+sc.name)
			mustNoErr(t, err, "list jobs")
			if len(listed) != 1 || listed[0].ID != jobs[0].ID || listed[0].Handle != jobs[0].Handle ||
				listed[0].Status != "waiting" || !slices.Equal(listed[0].RunsOn, []string{"docker-" + sc.name}) {
				t.Fatalf("jobs %+v, want job %+v", listed, jobs[0])
			}

			mustNoErr(t, c.DeleteRunner(ctx(t), reg.ID), "delete runner")
			_, err = c.GetRunner(ctx(t), reg.ID)
			wantIs(t, err, []error{forgejo.ErrNotFound}, []error{forgejo.ErrRetryable})
			wantIs(t, c.ClassifyNotFound(ctx(t), err), []error{forgejo.ErrNotFound, forgejo.ErrGone}, []error{forgejo.ErrScopeNotVisible})
			_, err = c.FindRunnerByUUID(ctx(t), reg.UUID)
			wantIs(t, err, []error{forgejo.ErrNotFound, forgejo.ErrGone}, nil)
			err = c.DeleteRunner(ctx(t), reg.ID)
			wantIs(t, c.ClassifyNotFound(ctx(t), err), []error{forgejo.ErrNotFound, forgejo.ErrGone}, nil)
		})
	}
}

func TestPagination(t *testing.T) {
	e := newEnv(t)
	var calls []string
	c := e.client(forgejo.GlobalScope(), adminToken, func(cfg *forgejo.Config) {
		cfg.Observer = forgejo.ObserverFunc(func(endpoint, code string, _ time.Duration) {
			calls = append(calls, endpoint+" "+code)
		})
	})
	var want []int64
	for i := range 55 {
		want = append(want, e.register(c, "r"+strings.Repeat("x", i%3)+string(rune('a'+i%26))).ID)
	}

	for _, tc := range []struct {
		pageSize, pages int
	}{{7, 8}, {0, 2}, {500, 2}} {
		calls = nil
		got, err := c.ListRunners(ctx(t), forgejo.ListOptions{PageSize: tc.pageSize})
		mustNoErr(t, err, "list runners")
		ids := make([]int64, 0, len(got))
		for _, r := range got {
			ids = append(ids, r.ID)
		}
		if !slices.Equal(ids, want) {
			t.Fatalf("page size %d: ids %v, want %v", tc.pageSize, ids, want)
		}
		if len(calls) != tc.pages {
			t.Fatalf("page size %d: %d requests %v, want %d", tc.pageSize, len(calls), calls, tc.pages)
		}
	}

	// Forgejo 15 has no filter by UUID: finding one runner lists the scope (two pages here).
	calls = nil
	r, err := c.FindRunnerByUUID(ctx(t), mustRunner(t, e.sim, want[53]).UUID)
	mustNoErr(t, err, "find by uuid")
	if r.ID != want[53] || len(calls) != 2 {
		t.Fatalf("found %d with %d requests", r.ID, len(calls))
	}
}

func mustRunner(t *testing.T, sim *forgejosim.Server, id int64) forgejosim.Runner {
	t.Helper()
	for _, r := range sim.State().Runners {
		if r.ID == id {
			return r
		}
	}
	t.Fatalf("no runner %d in simulator", id)
	return forgejosim.Runner{}
}

func TestVisibleAndInheritedRunners(t *testing.T) {
	e := newEnv(t)
	org := e.client(forgejo.OrganizationScope("acme"), e.token(forgejosim.OrganizationScope("acme")))
	repo := e.client(forgejo.RepositoryScope("acme", "app"), e.token(forgejosim.RepositoryScope("acme/app")))
	orgRunner := e.register(org, "org-runner")
	repoRunner := e.register(repo, "repo-runner")

	own, err := repo.ListRunners(ctx(t), forgejo.ListOptions{})
	mustNoErr(t, err, "list own")
	visible, err := repo.ListRunners(ctx(t), forgejo.ListOptions{Visible: true})
	mustNoErr(t, err, "list visible")
	if len(own) != 1 || own[0].ID != repoRunner.ID || len(visible) != 2 {
		t.Fatalf("own %+v, visible %+v", own, visible)
	}

	// The repository route sees the organization's runner but may not delete it: 404, and the
	// classification says so instead of "gone".
	err = repo.DeleteRunner(ctx(t), orgRunner.ID)
	wantIs(t, repo.ClassifyNotFound(ctx(t), err), []error{forgejo.ErrNotFound, forgejo.ErrNotDeletable}, []error{forgejo.ErrGone})
}

func TestListJobs(t *testing.T) {
	e := newEnv(t)
	c := e.client(forgejo.GlobalScope(), adminToken)

	// No job: Forgejo sends JSON null, which is an empty list.
	req, _ := http.NewRequest(http.MethodGet, e.url+"/api/v1/admin/actions/runners/jobs", nil)
	req.Header.Set("Authorization", "token "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	mustNoErr(t, err, "raw get")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.TrimSpace(string(body)) != "null" {
		t.Fatalf("simulator sent %q for no jobs, want null", body)
	}
	jobs, err := c.ListJobs(ctx(t))
	mustNoErr(t, err, "list jobs (null)")
	if len(jobs) != 0 {
		t.Fatalf("jobs %+v", jobs)
	}

	queue := func(runsOn ...string) forgejosim.Job {
		j, err := e.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: runsOn})
		mustNoErr(t, err, "queue")
		return j[0]
	}
	docker, gpu, both := queue("docker"), queue("gpu"), queue("docker", "gpu")
	ids := func(js []forgejo.Job) []int64 {
		var out []int64
		for _, j := range js {
			out = append(out, j.ID)
		}
		slices.Sort(out) // Forgejo lists jobs newest first; the order is not the point here
		return out
	}
	for _, tc := range []struct {
		labels []string
		want   []int64
	}{
		{nil, []int64{docker.ID, gpu.ID, both.ID}},
		{[]string{"docker"}, []int64{docker.ID}},
		{[]string{"docker:docker://node:22-bookworm", "gpu:host"}, []int64{docker.ID, gpu.ID, both.ID}},
		{[]string{"arm64"}, nil},
	} {
		got, err := c.ListJobs(ctx(t), tc.labels...)
		mustNoErr(t, err, "list jobs")
		if !slices.Equal(ids(got), tc.want) {
			t.Errorf("labels %v: jobs %v, want %v", tc.labels, ids(got), tc.want)
		}
	}
	if _, err := c.ListJobs(ctx(t), "a,b"); err == nil {
		t.Fatalf("a label with a comma was accepted")
	}
}

// TestErrorClasses produces an error of every class against the simulator, checks its classes,
// and at the end checks that none of them shows a token.
func TestErrorClasses(t *testing.T) {
	e := newEnv(t)
	orgToken := e.token(forgejosim.OrganizationScope("acme"))
	org := e.client(forgejo.OrganizationScope("acme"), orgToken)
	reg := e.register(org, "keep")
	var all []error
	check := func(name string, err error, is, isNot []error) {
		t.Run(name, func(t *testing.T) {
			wantIs(t, err, is, isNot)
		})
		all = append(all, err)
	}

	// 401.
	bad := "not-a-valid-token-0123456789"
	e.secrets = append(e.secrets, bad)
	_, err := e.client(forgejo.GlobalScope(), bad).ListRunners(ctx(t), forgejo.ListOptions{})
	check("unauthorized", err, []error{forgejo.ErrUnauthorized}, []error{forgejo.ErrRetryable, forgejo.ErrNotFound})

	// A scope the token cannot see: listing, registering, deleting all say so.
	wrong := e.client(forgejo.OrganizationScope("other"), orgToken)
	_, err = wrong.ListRunners(ctx(t), forgejo.ListOptions{})
	check("list in invisible scope", err, []error{forgejo.ErrNotFound, forgejo.ErrScopeNotVisible}, []error{forgejo.ErrGone})
	_, err = wrong.RegisterRunner(ctx(t), "x", "", true)
	check("register in invisible scope", err, []error{forgejo.ErrNotFound, forgejo.ErrScopeNotVisible}, []error{forgejo.ErrForgejoTooOld})
	_, err = wrong.ListJobs(ctx(t))
	check("jobs in invisible scope", err, []error{forgejo.ErrScopeNotVisible}, nil)
	err = wrong.DeleteRunner(ctx(t), reg.ID)
	check("delete in invisible scope (unclassified)", err, []error{forgejo.ErrNotFound}, []error{forgejo.ErrGone, forgejo.ErrScopeNotVisible})
	check("delete in invisible scope (classified)", wrong.ClassifyNotFound(ctx(t), err),
		[]error{forgejo.ErrNotFound, forgejo.ErrScopeNotVisible}, []error{forgejo.ErrGone})
	mustNoErr(t, org.CheckScope(ctx(t)), "check visible scope")
	check("check invisible scope", wrong.CheckScope(ctx(t)), []error{forgejo.ErrScopeNotVisible}, nil)

	// A runner in another organization is invisible, hence "gone" as far as acme is concerned.
	other := e.client(forgejo.OrganizationScope("other"), e.token(forgejosim.OrganizationScope("other")))
	otherReg := e.register(other, "elsewhere")
	_, err = org.GetRunner(ctx(t), otherReg.ID)
	check("runner of another scope", org.ClassifyNotFound(ctx(t), err), []error{forgejo.ErrNotFound, forgejo.ErrGone}, nil)

	// 429 with Retry-After in seconds, then as an HTTP date.
	mustNoErr(t, e.sim.SetFaults(forgejosim.Faults{Endpoints: []forgejosim.Fault{
		{Endpoint: forgejosim.EndpointListJobs, ErrorRate: 1, StatusCode: http.StatusTooManyRequests, RetryAfter: "7"},
	}}), "set faults")
	_, err = org.ListJobs(ctx(t))
	check("429 seconds", err, []error{forgejo.ErrRateLimited, forgejo.ErrRetryable}, []error{forgejo.ErrServer})
	if d, ok := forgejo.RetryAfter(err); !ok || d != 7*time.Second {
		t.Errorf("retry after %v %v, want 7s", d, ok)
	}
	now := time.Date(2026, 4, 20, 10, 0, 0, 0, time.UTC)
	fixed := e.client(forgejo.OrganizationScope("acme"), orgToken, func(c *forgejo.Config) { c.Now = func() time.Time { return now } })
	mustNoErr(t, e.sim.SetFaults(forgejosim.Faults{Endpoints: []forgejosim.Fault{
		{Endpoint: forgejosim.EndpointListJobs, ErrorRate: 1, StatusCode: http.StatusTooManyRequests,
			RetryAfter: now.Add(90 * time.Second).Format(http.TimeFormat)},
	}}), "set faults")
	_, err = fixed.ListJobs(ctx(t))
	check("429 date", err, []error{forgejo.ErrRateLimited}, nil)
	if d, ok := forgejo.RetryAfter(err); !ok || d != 90*time.Second {
		t.Errorf("retry after %v %v, want 90s", d, ok)
	}

	// 5xx on every endpoint.
	mustNoErr(t, e.sim.SetFaults(forgejosim.Faults{Endpoints: []forgejosim.Fault{
		{Endpoint: "*", ErrorRate: 1, StatusCode: http.StatusServiceUnavailable, RetryAfter: "3"},
	}}), "set faults")
	_, err = org.RegisterRunner(ctx(t), "x", "", true)
	check("503", err, []error{forgejo.ErrServer, forgejo.ErrRetryable}, []error{forgejo.ErrRateLimited, forgejo.ErrNotFound})
	if d, _ := forgejo.RetryAfter(err); d != 3*time.Second {
		t.Errorf("503 retry after %v, want 3s", d)
	}
	_, err = org.CheckVersion(ctx(t))
	check("500 version", err, []error{forgejo.ErrServer}, []error{forgejo.ErrForgejoTooOld})
	e.sim.ClearFaults()

	// No answer at all.
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	down := e.client(forgejo.GlobalScope(), adminToken, func(c *forgejo.Config) { c.BaseURL = dead.URL })
	err = down.DeleteRunner(ctx(t), 1)
	check("connection refused", err, []error{forgejo.ErrUnavailable, forgejo.ErrRetryable}, []error{forgejo.ErrNotFound})

	// Deadlines: the caller's, and the default one for a context without any.
	mustNoErr(t, e.sim.SetFaults(forgejosim.Faults{Endpoints: []forgejosim.Fault{
		{Endpoint: forgejosim.EndpointListRunners, Latency: time.Minute},
	}}), "set faults")
	short, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = org.ListRunners(short, forgejo.ListOptions{})
	check("caller deadline", err, []error{context.DeadlineExceeded}, []error{forgejo.ErrRetryable})
	impatient := e.client(forgejo.OrganizationScope("acme"), orgToken, func(c *forgejo.Config) { c.Timeout = 50 * time.Millisecond })
	_, err = impatient.FindRunnerByUUID(context.Background(), reg.UUID)
	check("default deadline", err, []error{context.DeadlineExceeded, forgejo.ErrUnavailable, forgejo.ErrRetryable}, nil)
	if time.Since(start) > 20*time.Second {
		t.Errorf("deadlines were not applied: %s", time.Since(start))
	}
	cancelled, cancelNow := context.WithCancel(t.Context())
	cancelNow()
	_, err = org.ListRunners(cancelled, forgejo.ListOptions{})
	check("caller cancelled", err, []error{context.Canceled}, []error{forgejo.ErrRetryable})
	e.sim.ClearFaults()

	// Forgejo before 15: the version says so, and registration's 404 is explained by it.
	e.sim.SetVersion("11.0.0+gitea-1.22.0")
	_, err = org.CheckVersion(ctx(t))
	check("old version", err, []error{forgejo.ErrForgejoTooOld}, nil)
	_, err = org.RegisterRunner(ctx(t), "x", "", true)
	check("register on old version", err, []error{forgejo.ErrForgejoTooOld}, []error{forgejo.ErrScopeNotVisible})
	if !strings.Contains(err.Error(), "11.0.0") || !strings.Contains(err.Error(), "404") {
		t.Errorf("old-version error does not explain itself: %v", err)
	}

	t.Run("no secret in any error", func(t *testing.T) {
		for _, err := range all {
			msg := err.Error()
			for _, s := range e.secrets {
				if strings.Contains(msg, s) {
					t.Errorf("error %q contains a token", msg)
				}
			}
		}
		if len(all) < 15 {
			t.Fatalf("only %d errors collected", len(all))
		}
	})
}

func TestNewValidates(t *testing.T) {
	good := forgejo.Config{BaseURL: "https://forgejo.example.com/sub/", Token: "abcdefgh12345678", Scope: forgejo.GlobalScope()}
	if c, err := forgejo.New(good); err != nil || strings.Contains(c.String(), good.Token) {
		t.Fatalf("good config: %v %v", c, err)
	}
	for name, mutate := range map[string]func(*forgejo.Config){
		"no token":         func(c *forgejo.Config) { c.Token = "" },
		"token newline":    func(c *forgejo.Config) { c.Token += "\n" },
		"ftp url":          func(c *forgejo.Config) { c.BaseURL = "ftp://x" },
		"no host":          func(c *forgejo.Config) { c.BaseURL = "https://" },
		"credentials":      func(c *forgejo.Config) { c.BaseURL = "https://u:p@x" },
		"invalid scope":    func(c *forgejo.Config) { c.Scope = forgejo.Scope{} },
		"org without name": func(c *forgejo.Config) { c.Scope = forgejo.OrganizationScope("") },
	} {
		cfg := good
		mutate(&cfg)
		_, err := forgejo.New(cfg)
		if err == nil {
			t.Errorf("%s: accepted", name)
		} else if strings.Contains(err.Error(), good.Token) {
			t.Errorf("%s: error shows the token: %v", name, err)
		}
	}
}

func TestSubPathBaseURL(t *testing.T) {
	sim := forgejosim.New(forgejosim.Options{AdminToken: adminToken, Seed: 1})
	defer sim.Close()
	mux := http.NewServeMux()
	mux.Handle("/forgejo/", http.StripPrefix("/forgejo", sim))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c, err := forgejo.New(forgejo.Config{BaseURL: srv.URL + "/forgejo/", Token: adminToken, Scope: forgejo.GlobalScope()})
	mustNoErr(t, err, "new")
	_, err = c.CheckVersion(ctx(t))
	mustNoErr(t, err, "version behind a sub-path")
}

// Forgejo builds Link headers from its ROOT_URL, which is often not the address the operator
// reaches it at (an in-cluster Service). The client takes only the page number from them.
func TestPaginationWithForeignRootURL(t *testing.T) {
	_, url := forgejosim.NewTestServer(t, forgejosim.Options{AdminToken: adminToken, Seed: 1, PublicURL: "https://forgejo.invalid"})
	c, err := forgejo.New(forgejo.Config{BaseURL: url, Token: adminToken, Scope: forgejo.GlobalScope()})
	mustNoErr(t, err, "new")
	for i := range 5 {
		_, err := c.RegisterRunner(ctx(t), "r"+string(rune('a'+i)), "", false)
		mustNoErr(t, err, "register")
	}
	got, err := c.ListRunners(ctx(t), forgejo.ListOptions{PageSize: 2})
	mustNoErr(t, err, "list")
	if len(got) != 5 {
		t.Fatalf("%d runners, want 5", len(got))
	}
}
