package forgejosim_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	runnerv1 "gitea.dev/actions-proto-go/runner/v1"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/runnerpb/runnerv1ext"
)

// clock is a settable clock for Options.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 4, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// TestForgejo15 checks the behaviours of Forgejo v15.0.3 that the simulator follows beyond the
// reference notes' basics; each names the source file it comes from in the code.
func TestForgejo15(t *testing.T) {
	facts := []struct {
		fact string
		test func(t *testing.T)
	}{
		{"a run's jobs with needs are blocked, released without a webhook, skipped after a failure", testNeeds},
		{"a run queued behind its concurrency group is listed waiting but not taken", testConcurrencyGroup},
		{"runner status: idle when handed a task, active after a report, offline after a minute", testRunnerStatus},
		{"runner lists: last_online order, offset paging, capped limit, no Link when empty", testRunnerListOrder},
		{"the jobs list is newest first, and null when empty", testJobsNewestFirst},
		{"FetchTask and FetchSingleTask honour tasks_version", testTasksVersion},
		{"no runner takes a job with an empty runs-on", testEmptyRunsOn},
		{"a seeded race sends the push before the jobs are listed", testDeliveryRace},
		{"Forgejo 15 hooks take its event names; job events only on a newer server", testHookEvents},
		{"a failed or cancelled run sends action_run_failure", testRunFailureEvent},
		{"POST /_sim/runs queues one run with several jobs", testControlRuns},
	}
	for _, f := range facts {
		t.Run(f.fact, func(t *testing.T) {
			t.Parallel()
			f.test(t)
		})
	}
}

func (e *env) queueRun(req forgejosim.QueueRunRequest) forgejosim.Run {
	e.t.Helper()
	r, err := e.sim.QueueRun(req)
	if err != nil {
		e.t.Fatalf("queue run: %v", err)
	}
	return r
}

func (e *env) listJobs(prefix, token string) []forgejosim.ActionRunJob {
	e.t.Helper()
	var jobs []forgejosim.ActionRunJob
	e.expect(http.MethodGet, prefix+"/jobs", token, nil, http.StatusOK, &jobs)
	return jobs
}

func jobIDs(jobs []forgejosim.ActionRunJob) []int64 {
	out := []int64{}
	for _, j := range jobs {
		out = append(out, j.ID)
	}
	return out
}

func (e *env) status(id int64) forgejosim.JobStatus {
	e.t.Helper()
	j, ok := e.sim.Job(id)
	if !ok {
		e.t.Fatalf("no job %d", id)
	}
	return j.Status
}

func testNeeds(t *testing.T) {
	e := newEnv(t)
	rc, url := newReceiver(t, 0)
	_, err := e.sim.AddHook(forgejosim.HookConfig{URL: url, Scope: forgejosim.InstanceScope()})
	mustNoErr(t, err, "add hook")
	run := e.queueRun(forgejosim.QueueRunRequest{Repo: "acme/app", Jobs: []forgejosim.RunJobSpec{
		{Name: "build", RunsOn: []string{"docker"}},
		{Name: "test", RunsOn: []string{"docker"}, Needs: []string{"build"}},
		{Name: "deploy", RunsOn: []string{"docker"}, Needs: []string{"test"}},
		{Name: "lint", RunsOn: []string{"docker"}},
	}})
	build, test, deploy, lint := run.Jobs[0], run.Jobs[1], run.Jobs[2], run.Jobs[3]
	if test.Status != forgejosim.JobBlocked || deploy.Status != forgejosim.JobBlocked || build.Status != forgejosim.JobWaiting {
		t.Fatalf("run %+v", run)
	}
	// Blocked jobs are not listed and no runner takes them.
	if got := jobIDs(e.listJobs(repoPrefix, adminToken)); !slices.Equal(got, []int64{lint.ID, build.ID}) {
		t.Fatalf("listed %v", got)
	}
	r := e.runner(e.register(adminPrefix, adminToken, "r", false), "docker")
	first, err := r.fetch()
	mustNoErr(t, err, "fetch")
	second, err := r.fetch()
	mustNoErr(t, err, "fetch")
	if third, err := r.fetch(); err != nil || third != nil {
		t.Fatalf("a blocked job was handed out: %v, %v", third, err)
	}
	buildTask := first.GetId()
	if j, _ := e.sim.Job(build.ID); j.TaskID != buildTask {
		buildTask = second.GetId()
	}
	_, err = r.finish(buildTask, runnerv1.Result_RESULT_SUCCESS)
	mustNoErr(t, err, "finish build")
	if e.status(test.ID) != forgejosim.JobWaiting || e.status(deploy.ID) != forgejosim.JobBlocked {
		t.Fatalf("after build: test %s, deploy %s", e.status(test.ID), e.status(deploy.ID))
	}
	task, err := r.fetch()
	mustNoErr(t, err, "fetch test")
	if j, _ := e.sim.Job(test.ID); task == nil || j.TaskID != task.GetId() {
		t.Fatalf("released job not taken: %v", task)
	}
	if _, ok := task.GetNeeds()["build"]; !ok {
		t.Fatalf("task needs %v", task.GetNeeds())
	}
	// Until now, the push was the only delivery: releasing a job sends nothing.
	for _, d := range e.sim.Deliveries() {
		if d.Event != forgejosim.EventPush {
			t.Fatalf("delivery %s before the run ended", d.Event)
		}
	}
	_, err = r.finish(task.GetId(), runnerv1.Result_RESULT_FAILURE)
	mustNoErr(t, err, "finish test")
	if e.status(deploy.ID) != forgejosim.JobSkipped {
		t.Fatalf("deploy after a failed need: %s", e.status(deploy.ID))
	}
	// AggregateJobStatus puts failure before running: the run is failed, and reported, while
	// lint still runs; lint's end reports nothing more.
	eventually(t, "push and action_run_failure", func() bool { return len(rc.deliveries()) == 2 })
	if cur, _ := e.sim.Job(lint.ID); cur.Status == forgejosim.JobRunning {
		_, err := r.finish(cur.TaskID, runnerv1.Result_RESULT_SUCCESS)
		mustNoErr(t, err, "finish lint")
	}
	var events []string
	for _, d := range e.sim.Deliveries() {
		events = append(events, d.Event)
	}
	if !slices.Equal(events, []string{"push", "action_run_failure"}) {
		t.Fatalf("events %v", events)
	}
	if st := e.sim.State(); st.Runs[0].Status != forgejosim.JobFailure {
		t.Fatalf("run %+v", st.Runs[0])
	}

	if _, err := e.sim.QueueRun(forgejosim.QueueRunRequest{Repo: "acme/app", Jobs: []forgejosim.RunJobSpec{
		{Name: "a", Needs: []string{"b"}}, {Name: "b", Needs: []string{"a"}},
	}}); err == nil {
		t.Fatal("a cycle of needs was accepted")
	}
	if _, err := e.sim.QueueRun(forgejosim.QueueRunRequest{Repo: "acme/app", Jobs: []forgejosim.RunJobSpec{
		{Name: "a", Needs: []string{"missing"}},
	}}); err == nil {
		t.Fatal("a need on a missing job was accepted")
	}
}

func testConcurrencyGroup(t *testing.T) {
	e := newEnv(t)
	first := e.queueRun(forgejosim.QueueRunRequest{Repo: "acme/app", Concurrency: "Deploy",
		Jobs: []forgejosim.RunJobSpec{{Name: "deploy", RunsOn: []string{"docker"}}}})
	second := e.queueRun(forgejosim.QueueRunRequest{Repo: "acme/app", Concurrency: "deploy",
		Jobs: []forgejosim.RunJobSpec{{Name: "deploy", RunsOn: []string{"docker"}}}})
	other := e.queueRun(forgejosim.QueueRunRequest{Repo: "acme/other", Concurrency: "deploy",
		Jobs: []forgejosim.RunJobSpec{{Name: "deploy", RunsOn: []string{"docker"}}}})

	held := second.Jobs[0]
	if !held.Held || held.Status != forgejosim.JobWaiting || first.Jobs[0].Held || other.Jobs[0].Held {
		t.Fatalf("held flags: first %+v second %+v other %+v", first.Jobs[0], held, other.Jobs[0])
	}
	// Listed waiting, newest first…
	jobs := e.listJobs(adminPrefix, adminToken)
	if !slices.Equal(jobIDs(jobs), []int64{other.Jobs[0].ID, held.ID, first.Jobs[0].ID}) || jobs[1].Status != "waiting" {
		t.Fatalf("listed %+v", jobs)
	}
	// …but not taken, not even by handle, while the group's older run is pending.
	byHandle := e.runner(e.register(adminPrefix, adminToken, "by-handle", true), "docker")
	if task, err := byHandle.fetchSingle(held.Handle); err != nil || task != nil {
		t.Fatalf("held job taken by handle: %v, %v", task, err)
	}
	r := e.runner(e.register(adminPrefix, adminToken, "r", false), "docker")
	a, err := r.fetch()
	mustNoErr(t, err, "fetch")
	b, err := r.fetch()
	mustNoErr(t, err, "fetch")
	if c, err := r.fetch(); err != nil || c != nil || a == nil || b == nil {
		t.Fatalf("fetches %v %v %v (%v)", a, b, c, err)
	}
	if e.status(held.ID) != forgejosim.JobWaiting {
		t.Fatalf("held job %s", e.status(held.ID))
	}
	firstTask := a.GetId()
	if j, _ := e.sim.Job(first.Jobs[0].ID); j.TaskID != firstTask {
		firstTask = b.GetId()
	}
	// The group frees when the first run ends; the final UpdateTask moves the tasks version.
	_, err = r.finish(firstTask, runnerv1.Result_RESULT_SUCCESS)
	mustNoErr(t, err, "finish")
	if task, err := byHandle.fetchSingle(held.Handle); err != nil || task == nil {
		t.Fatalf("freed job not taken by handle: %v, %v", task, err)
	}
}

func testRunnerStatus(t *testing.T) {
	clk := newClock()
	e := newEnv(t, func(o *forgejosim.Options) { o.Now = clk.Now })
	e.queue("acme/app", 1, "docker")
	reg := e.register(adminPrefix, adminToken, "r", true)
	status := func() string {
		var rn forgejosim.APIRunner
		e.expect(http.MethodGet, adminPrefix+"/"+itoa(reg.ID), adminToken, nil, http.StatusOK, &rn)
		return rn.Status
	}
	if got := status(); got != "offline" {
		t.Fatalf("registered: %s", got)
	}
	r := e.runner(reg, "docker")
	task, err := r.fetch()
	mustNoErr(t, err, "fetch")
	if got := status(); got != "idle" || task == nil {
		t.Fatalf("just handed a task: %s (task %v)", got, task)
	}
	_, err = r.client.UpdateLog(t.Context(), authed(r, &runnerv1.UpdateLogRequest{TaskId: task.GetId()}))
	mustNoErr(t, err, "update log")
	if got := status(); got != "active" {
		t.Fatalf("after a log report: %s", got)
	}
	clk.advance(11 * time.Second)
	if got := status(); got != "idle" {
		t.Fatalf("11 s after the last report: %s", got)
	}
	_, err = r.finish(task.GetId(), runnerv1.Result_RESULT_UNSPECIFIED)
	mustNoErr(t, err, "state report")
	if got := status(); got != "active" {
		t.Fatalf("after a state report: %s", got)
	}
	clk.advance(61 * time.Second)
	if got := status(); got != "offline" {
		t.Fatalf("61 s after the last call: %s", got)
	}
}

func testRunnerListOrder(t *testing.T) {
	clk := newClock()
	e := newEnv(t, func(o *forgejosim.Options) { o.Now = clk.Now })
	resp := e.expect(http.MethodGet, adminPrefix, adminToken, nil, http.StatusOK, nil)
	if link := resp.Header.Get("Link"); link != "" || resp.Header.Get("X-Total-Count") != "0" {
		t.Fatalf("empty list: Link %q, X-Total-Count %q", link, resp.Header.Get("X-Total-Count"))
	}
	var regs []forgejosim.RegisterRunnerResponse
	for i := range 55 {
		regs = append(regs, e.register(adminPrefix, adminToken, "r"+itoa(int64(i)), false))
	}
	// Runner 3 called last, runner 1 before it; the others never called in.
	e.runner(regs[0], "docker")
	clk.advance(2 * time.Second)
	e.runner(regs[2], "docker")
	var page []forgejosim.APIRunner
	resp = e.expect(http.MethodGet, adminPrefix+"?limit=100", adminToken, nil, http.StatusOK, &page)
	if len(page) != 50 || resp.Header.Get("X-Total-Count") != "55" {
		t.Fatalf("limit 100 gave %d runners of %s", len(page), resp.Header.Get("X-Total-Count"))
	}
	if page[0].ID != regs[2].ID || page[1].ID != regs[0].ID || page[2].ID != regs[1].ID {
		t.Fatalf("order %d, %d, %d", page[0].ID, page[1].ID, page[2].ID)
	}
	if link := resp.Header.Get("Link"); !strings.HasPrefix(link, "<"+e.url+adminPrefix+"?limit=100&page=2>; rel=\"next\",") {
		t.Fatalf("Link %q", link)
	}
	// A page past the end is empty, and its links are those of the last page.
	resp = e.expect(http.MethodGet, adminPrefix+"?page=9", adminToken, nil, http.StatusOK, &page)
	if len(page) != 0 || strings.Contains(resp.Header.Get("Link"), `rel="next"`) || !strings.Contains(resp.Header.Get("Link"), `page=1>; rel="prev"`) {
		t.Fatalf("page 9: %d runners, Link %q", len(page), resp.Header.Get("Link"))
	}
}

func testJobsNewestFirst(t *testing.T) {
	e := newEnv(t)
	if _, body := e.do(http.MethodGet, adminPrefix+"/jobs", adminToken, nil); strings.TrimSpace(string(body)) != "null" {
		t.Fatalf("empty jobs list: %s", body)
	}
	jobs := e.queue("acme/app", 3, "docker")
	listed := e.listJobs(adminPrefix, adminToken)
	if !slices.Equal(jobIDs(listed), []int64{jobs[2].ID, jobs[1].ID, jobs[0].ID}) {
		t.Fatalf("order %v", jobIDs(listed))
	}
	_, body := e.do(http.MethodGet, adminPrefix+"/jobs", adminToken, nil)
	var raw []map[string]any
	mustNoErr(t, json.Unmarshal(body, &raw), "decode jobs")
	var keys []string
	for k := range raw[0] {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{"attempt", "handle", "id", "name", "needs", "owner_id", "repo_id", "runs_on", "status", "task_id"}; !slices.Equal(keys, want) {
		t.Fatalf("job fields %v, want %v", keys, want)
	}
}

func (r *simRunner) fetchVersion(version int64) (*runnerv1.Task, int64) {
	r.t.Helper()
	resp, err := r.client.FetchTask(r.t.Context(), authed(r, &runnerv1.FetchTaskRequest{TasksVersion: version}))
	mustNoErr(r.t, err, "fetch")
	return resp.Msg.GetTask(), resp.Msg.GetTasksVersion()
}

func testTasksVersion(t *testing.T) {
	e := newEnv(t)
	plain := e.runner(e.register(adminPrefix, adminToken, "plain", false), "gpu")
	task, version := plain.fetchVersion(0)
	if task != nil || version == 0 {
		t.Fatalf("first fetch: %v, version %d", task, version)
	}
	jobs := e.queue("acme/app", 1, "docker")
	// A runner that says it has seen the current version is not given a task…
	r := e.runner(e.register(adminPrefix, adminToken, "r", false), "docker")
	_, current := r.fetchVersion(0)
	if current == version {
		t.Fatal("queuing a waiting job did not move the tasks version")
	}
	// (the fetch above took the job; queue another to look at)
	e.queue("acme/app", 1, "docker")
	if task, v := r.fetchVersion(current + 1); task != nil || v != current+1 {
		t.Fatalf("fetch at version %d: %v, version %d", current+1, task, v)
	}
	resp, err := r.single.CallUnary(t.Context(), authed(r, &runnerv1ext.FetchSingleTaskRequest{TasksVersion: current + 1}))
	mustNoErr(t, err, "fetch single")
	if resp.Msg.GetTask() != nil {
		t.Fatal("FetchSingleTask at the current version looked a task up")
	}
	// …and a runner with an older version is.
	if task, _ := r.fetchVersion(current); task == nil {
		t.Fatal("fetch at an older version got no task")
	}
	_ = jobs
	// A repeated request key gets its task back, with version 0.
	e.queue("acme/app", 1, "docker")
	req := authed(r, &runnerv1.FetchTaskRequest{})
	req.Header().Set(forgejosim.HeaderRunnerRequestKey, "k")
	first, err := r.client.FetchTask(t.Context(), req)
	mustNoErr(t, err, "fetch")
	again, err := r.client.FetchTask(t.Context(), req)
	mustNoErr(t, err, "fetch again")
	if first.Msg.GetTask() == nil || again.Msg.GetTask().GetId() != first.Msg.GetTask().GetId() || again.Msg.GetTasksVersion() != 0 {
		t.Fatalf("request key: %v then %v (version %d)", first.Msg.GetTask(), again.Msg.GetTask(), again.Msg.GetTasksVersion())
	}
}

func testEmptyRunsOn(t *testing.T) {
	e := newEnv(t)
	jobs := e.queue("acme/app", 1)
	r := e.runner(e.register(adminPrefix, adminToken, "r", true), "docker")
	if task, err := r.fetchSingle(jobs[0].Handle); err != nil || task != nil {
		t.Fatalf("FetchSingleTask took a job without runs-on: %v, %v", task, err)
	}
	if task, err := r.fetch(); err != nil || task != nil {
		t.Fatalf("FetchTask took a job without runs-on: %v, %v", task, err)
	}
	// It is listed, and found by an empty labels filter.
	var listed []forgejosim.ActionRunJob
	e.expect(http.MethodGet, adminPrefix+"/jobs?labels=", adminToken, nil, http.StatusOK, &listed)
	if len(listed) != 1 || listed[0].ID != jobs[0].ID {
		t.Fatalf("labels= %+v", listed)
	}
}

func testDeliveryRace(t *testing.T) {
	clk := newClock()
	e := newEnv(t, func(o *forgejosim.Options) {
		o.Now = clk.Now
		o.DeliveryRaceProbability = 1
		o.DeliveryRaceDelay = time.Second
	})
	rc, url := newReceiver(t, 0)
	_, err := e.sim.AddHook(forgejosim.HookConfig{URL: url, Scope: forgejosim.RepositoryScope("acme/app"), Events: []string{forgejosim.EventPush}})
	mustNoErr(t, err, "add hook")
	jobs := e.queue("acme/app", 1, "docker")
	eventually(t, "push delivery", func() bool { return len(rc.deliveries()) == 1 })
	r := e.runner(e.register(adminPrefix, adminToken, "r", false), "docker")
	if got := e.listJobs(repoPrefix, adminToken); len(got) != 0 {
		t.Fatalf("listed before the insertion: %+v", got)
	}
	task, version := r.fetchVersion(0)
	if task != nil {
		t.Fatal("a runner took a job before its insertion")
	}
	clk.advance(time.Second)
	if got := e.listJobs(repoPrefix, adminToken); len(got) != 1 || got[0].ID != jobs[0].ID {
		t.Fatalf("listed after the delay: %+v", got)
	}
	// The insertion moves the tasks version, so a runner polling with the old one sees the job.
	if task, _ := r.fetchVersion(version); task == nil {
		t.Fatal("the job, once inserted, was not given to a runner at the old version")
	}

	// Off by default.
	plain := newEnv(t)
	plain.queue("acme/app", 1, "docker")
	if got := plain.listJobs(repoPrefix, adminToken); len(got) != 1 {
		t.Fatalf("default: %+v", got)
	}
}

func testHookEvents(t *testing.T) {
	e := newEnv(t)
	if _, err := e.sim.AddHook(forgejosim.HookConfig{URL: "http://127.0.0.1:1/", Scope: forgejosim.InstanceScope(),
		Events: []string{forgejosim.EventWorkflowJobWaiting}}); err == nil {
		t.Fatal("a Forgejo 15 hook accepted workflow_job_waiting")
	}
	if _, err := e.sim.AddHook(forgejosim.HookConfig{URL: "http://127.0.0.1:1/", Scope: forgejosim.InstanceScope(),
		Events: []string{"schedule"}}); err == nil {
		t.Fatal("a hook accepted schedule, which Forgejo's hooks cannot choose")
	}

	newer := newEnv(t, func(o *forgejosim.Options) { o.JobEvents = true })
	rc, url := newReceiver(t, 0)
	_, err := newer.sim.AddHook(forgejosim.HookConfig{URL: url, Scope: forgejosim.InstanceScope(),
		Events: []string{forgejosim.EventPush, forgejosim.EventWorkflowJobWaiting}})
	mustNoErr(t, err, "add hook")
	jobs := newer.queue("acme/app", 1, "docker")
	eventually(t, "push and workflow_job_waiting", func() bool { return len(rc.deliveries()) == 2 })
	var events []string
	for _, d := range rc.deliveries() {
		events = append(events, d.header.Get("X-Forgejo-Event"))
		if d.header.Get("X-Forgejo-Event") == forgejosim.EventWorkflowJobWaiting {
			var p forgejosim.WorkflowJobPayload
			mustNoErr(t, json.Unmarshal(d.body, &p), "decode")
			if p.Job == nil || p.Job.Handle != jobs[0].Handle || p.Action != forgejosim.ActionNewJobAttempt {
				t.Fatalf("job payload %s", d.body)
			}
		}
	}
	slices.Sort(events)
	if !slices.Equal(events, []string{"push", "workflow_job_waiting"}) {
		t.Fatalf("events %v", events)
	}
}

func testRunFailureEvent(t *testing.T) {
	e := newEnv(t)
	rc, url := newReceiver(t, 0)
	_, err := e.sim.AddHook(forgejosim.HookConfig{URL: url, Scope: forgejosim.OrganizationScope("acme"),
		Events: []string{forgejosim.EventActionRunFailure, forgejosim.EventActionRunSuccess, forgejosim.EventActionRunRecover}})
	mustNoErr(t, err, "add hook")
	jobs := e.queue("acme/app", 2, "docker")
	_, err = e.sim.CancelJob(jobs[0].ID)
	mustNoErr(t, err, "cancel")
	_, err = e.sim.CompleteJob(jobs[1].ID, forgejosim.JobSuccess)
	mustNoErr(t, err, "complete")
	eventually(t, "two run events", func() bool { return len(rc.deliveries()) == 2 })
	got := map[string]string{}
	for _, d := range rc.deliveries() {
		var p forgejosim.ActionPayload
		mustNoErr(t, json.Unmarshal(d.body, &p), "decode")
		got[d.header.Get("X-Forgejo-Event")] = p.Action + "/" + p.Run.Status + "/" + p.PriorStatus
	}
	// A cancelled run is reported as a failure; no recover ever (GetRunBefore is nil in 15.0.3).
	if got["action_run_failure"] != "failure/cancelled/waiting" || got["action_run_success"] != "success/success/waiting" {
		t.Fatalf("events %v", got)
	}
}

func testControlRuns(t *testing.T) {
	e := newEnv(t)
	var run forgejosim.Run
	e.expect(http.MethodPost, "/_sim/runs", adminToken, forgejosim.QueueRunRequest{Repo: "acme/app", Concurrency: "g",
		Jobs: []forgejosim.RunJobSpec{{Name: "build", RunsOn: []string{"docker"}}, {Name: "test", RunsOn: []string{"docker"}, Needs: []string{"build"}}}},
		http.StatusCreated, &run)
	if len(run.Jobs) != 2 || run.Jobs[1].Status != forgejosim.JobBlocked || run.Jobs[1].RunID != run.ID || run.Concurrency != "g" || run.Index != 1 {
		t.Fatalf("run %+v", run)
	}
	e.expect(http.MethodPost, "/_sim/runs", adminToken, forgejosim.QueueRunRequest{Repo: "acme/app"}, http.StatusUnprocessableEntity, nil)
	e.expect(http.MethodPost, "/_sim/runs", adminToken, `{"repo":"acme/app","jobs":[{"name":"a","concurrency":"g"}]}`, http.StatusBadRequest, nil)
}
