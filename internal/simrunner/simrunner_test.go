package simrunner_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	runnerv1 "gitea.dev/actions-proto-go/runner/v1"
	"gitea.dev/actions-proto-go/runner/v1/runnerv1connect"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/runnerpb/runnerv1ext"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/simrunner"
)

const adminToken = "simrunner-test-admin-token"

type env struct {
	t      *testing.T
	sim    *forgejosim.Server
	url    string
	client *forgejo.Client
}

func newEnv(t *testing.T) *env {
	t.Helper()
	sim, url := forgejosim.NewTestServer(t, forgejosim.Options{AdminToken: adminToken, Seed: 1})
	c, err := forgejo.New(forgejo.Config{BaseURL: url, Token: adminToken, Scope: forgejo.GlobalScope()})
	if err != nil {
		t.Fatalf("forgejo client: %v", err)
	}
	return &env{t: t, sim: sim, url: url, client: c}
}

// runner registers an ephemeral runner the way the operator does and writes its token file the
// way the operator's Secret does: no trailing newline.
func (e *env) runner(name string) (forgejo.Registration, simrunner.Config) {
	e.t.Helper()
	reg, err := e.client.RegisterRunner(e.t.Context(), name, "pool=test", true)
	if err != nil {
		e.t.Fatalf("register: %v", err)
	}
	path := filepath.Join(e.t.TempDir(), "token")
	if err := os.WriteFile(path, []byte(reg.Token), 0o600); err != nil {
		e.t.Fatalf("write token: %v", err)
	}
	return reg, simrunner.Config{
		URL: e.url, UUID: reg.UUID, TokenURL: "file:" + path,
		Labels:       []string{"docker:docker://node:22-bookworm", "bad:scheme:x"},
		TaskDuration: 30 * time.Millisecond, PollInterval: 10 * time.Millisecond,
		Logf: e.t.Logf,
	}
}

func (e *env) queue(runsOn ...string) forgejosim.Job {
	e.t.Helper()
	jobs, err := e.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: runsOn})
	if err != nil {
		e.t.Fatalf("queue: %v", err)
	}
	return jobs[0]
}

func (e *env) job(id int64) forgejosim.Job {
	e.t.Helper()
	j, ok := e.sim.Job(id)
	if !ok {
		e.t.Fatalf("no job %d", id)
	}
	return j
}

func (e *env) taskOf(id int64) forgejosim.Task {
	e.t.Helper()
	for _, task := range e.sim.State().Tasks {
		if task.ID == id {
			return task
		}
	}
	e.t.Fatalf("no task %d", id)
	return forgejosim.Task{}
}

// eventually polls cond; the deadline only bounds a failing test.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type result struct {
	out simrunner.Outcome
	err error
}

func runAsync(ctx context.Context, cfg simrunner.Config) <-chan result {
	ch := make(chan result, 1)
	go func() {
		out, err := simrunner.Run(ctx, cfg)
		ch <- result{out, err}
	}()
	return ch
}

func await(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("runner did not return")
		return result{}
	}
}

func TestRanATask(t *testing.T) {
	for _, tc := range []struct {
		result runnerv1.Result
		status forgejosim.JobStatus
	}{
		{runnerv1.Result_RESULT_UNSPECIFIED, forgejosim.JobSuccess},
		{runnerv1.Result_RESULT_FAILURE, forgejosim.JobFailure},
	} {
		t.Run(string(tc.status), func(t *testing.T) {
			e := newEnv(t)
			job := e.queue("docker")
			reg, cfg := e.runner("r1")
			cfg.Result = tc.result

			out, err := simrunner.Run(t.Context(), cfg)
			if err != nil || out.ExitCode != simrunner.ExitTaskRan || out.TaskID == 0 {
				t.Fatalf("outcome %+v, %v", out, err)
			}
			if got := e.job(job.ID); got.Status != tc.status || got.TaskID != out.TaskID {
				t.Fatalf("job %+v, want %s with task %d", got, tc.status, out.TaskID)
			}
			if task := e.taskOf(out.TaskID); task.LogLines < 3 {
				t.Fatalf("task %+v: want at least 3 log lines", task)
			}
			// The ephemeral runner is gone, deleted by the server after its task.
			if _, ok := e.sim.RunnerByUUID(reg.UUID); ok {
				t.Fatalf("ephemeral runner %s still registered", reg.UUID)
			}
		})
	}
}

func TestDeclaresLabelNamesAndVersion(t *testing.T) {
	e := newEnv(t)
	reg, cfg := e.runner("r1")
	out, err := simrunner.Run(t.Context(), cfg)
	if err != nil || out.ExitCode != simrunner.ExitNoTask {
		t.Fatalf("outcome %+v, %v", out, err)
	}
	r, ok := e.sim.RunnerByUUID(reg.UUID)
	if !ok || !slices.Equal(r.Labels, []string{"docker"}) || r.Version != simrunner.DefaultVersion {
		t.Fatalf("runner %+v", r)
	}
}

func TestNoTask(t *testing.T) {
	e := newEnv(t)
	e.queue("gpu") // not for this runner
	reg, cfg := e.runner("r1")
	out, err := simrunner.Run(t.Context(), cfg)
	if err != nil || out.ExitCode != simrunner.ExitNoTask || out.TaskID != 0 {
		t.Fatalf("outcome %+v, %v", out, err)
	}
	// A runner that never got a task is not deleted by Forgejo: its owner must do it.
	if _, ok := e.sim.RunnerByUUID(reg.UUID); !ok {
		t.Fatalf("runner without a task was deleted")
	}
}

func TestHandleBinding(t *testing.T) {
	e := newEnv(t)
	first, second := e.queue("docker"), e.queue("docker")
	_, cfg := e.runner("bound")
	cfg.Handle = second.Handle
	out, err := simrunner.Run(t.Context(), cfg)
	if err != nil || out.ExitCode != simrunner.ExitTaskRan {
		t.Fatalf("outcome %+v, %v", out, err)
	}
	if got := e.job(second.ID); got.TaskID != out.TaskID || got.Status != forgejosim.JobSuccess {
		t.Fatalf("bound job %+v", got)
	}
	if got := e.job(first.ID); got.Status != forgejosim.JobWaiting {
		t.Fatalf("the other job was touched: %+v", got)
	}

	// A handle that names no waiting job: no task.
	_, cfg = e.runner("unknown-handle")
	cfg.Handle = "00000000-0000-4000-8000-000000000000"
	if out, err := simrunner.Run(t.Context(), cfg); err != nil || out.ExitCode != simrunner.ExitNoTask {
		t.Fatalf("unknown handle: %+v, %v", out, err)
	}
	if got := e.job(first.ID); got.Status != forgejosim.JobWaiting {
		t.Fatalf("a runner bound to another handle took %+v", got)
	}
}

func TestCredentialErrors(t *testing.T) {
	e := newEnv(t)
	e.queue("docker")
	reg, cfg := e.runner("r1")
	path := filepath.Join(t.TempDir(), "token")

	for name, content := range map[string]string{
		"wrong token":      "0000000000000000000000000000000000000000",
		"trailing newline": reg.Token + "\n",
		"empty":            "",
	} {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			bad := cfg
			bad.TokenURL = "file://" + path
			out, err := simrunner.Run(t.Context(), bad)
			if out.ExitCode != simrunner.ExitError || err == nil {
				t.Fatalf("outcome %+v, %v", out, err)
			}
			t.Logf("error: %v", err)
		})
	}
	missing := cfg
	missing.TokenURL = filepath.Join(t.TempDir(), "absent")
	if out, err := simrunner.Run(t.Context(), missing); out.ExitCode != simrunner.ExitError || err == nil {
		t.Fatalf("missing token file: %+v, %v", out, err)
	}
	// Nothing ran: the job still waits and the runner still exists.
	if st := e.sim.State(); st.Jobs[0].Status != forgejosim.JobWaiting || len(st.Runners) != 1 {
		t.Fatalf("state after failed runs: %+v", st)
	}
	// The same token without the newline works.
	if out, err := simrunner.Run(t.Context(), cfg); err != nil || out.ExitCode != simrunner.ExitTaskRan {
		t.Fatalf("good token: %+v, %v", out, err)
	}
}

func TestWaitPicksUpLaterJob(t *testing.T) {
	e := newEnv(t)
	reg, cfg := e.runner("waiter")
	cfg.Wait = true
	done := runAsync(t.Context(), cfg)
	// Once the runner has declared and polls, a job is queued.
	eventually(t, "runner online", func() bool {
		r, ok := e.sim.RunnerByUUID(reg.UUID)
		return ok && r.Status == "idle"
	})
	job := e.queue("docker")
	r := await(t, done)
	if r.err != nil || r.out.ExitCode != simrunner.ExitTaskRan {
		t.Fatalf("outcome %+v, %v", r.out, r.err)
	}
	if got := e.job(job.ID); got.Status != forgejosim.JobSuccess || got.TaskID != r.out.TaskID {
		t.Fatalf("job %+v", got)
	}
}

func TestWaitEndsWithContext(t *testing.T) {
	e := newEnv(t)
	reg, cfg := e.runner("waiter")
	cfg.Wait = true
	ctx, cancel := context.WithCancel(t.Context())
	done := runAsync(ctx, cfg)
	eventually(t, "runner online", func() bool {
		r, ok := e.sim.RunnerByUUID(reg.UUID)
		return ok && r.Status == "idle"
	})
	time.Sleep(50 * time.Millisecond) // past Declare: polling for a task
	cancel()
	// forgejo-runner one-job --wait stopped (SIGTERM) while waiting exits 0, as if a task ran:
	// only the missing task id tells them apart.
	if r := await(t, done); r.err != nil || r.out.ExitCode != simrunner.ExitTaskRan || r.out.TaskID != 0 {
		t.Fatalf("outcome %+v, %v", r.out, r.err)
	}
}

// A waiting runner whose registration is deleted keeps polling, as forgejo-runner does: it
// retries every error, Unauthenticated included, until it is stopped.
func TestWaitOutlivesItsRegistration(t *testing.T) {
	e := newEnv(t)
	reg, cfg := e.runner("waiter")
	cfg.Wait = true
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := runAsync(ctx, cfg)
	eventually(t, "runner online", func() bool {
		r, ok := e.sim.RunnerByUUID(reg.UUID)
		return ok && r.Status == "idle"
	})
	time.Sleep(50 * time.Millisecond) // past Declare: polling for a task
	if err := e.client.DeleteRunner(t.Context(), reg.ID); err != nil {
		t.Fatalf("delete registration: %v", err)
	}
	select {
	case r := <-done:
		t.Fatalf("runner ended after its registration was deleted: %+v, %v", r.out, r.err)
	case <-time.After(300 * time.Millisecond): // 30 polls
	}
	cancel()
	if r := await(t, done); r.err != nil || r.out.ExitCode != simrunner.ExitTaskRan || r.out.TaskID != 0 {
		t.Fatalf("outcome %+v, %v", r.out, r.err)
	}
}

// fakeServer answers Declare and FetchTask/FetchSingleTask as told and records the
// tasks_version of every fetch.
type fakeServer struct {
	runnerv1connect.UnimplementedRunnerServiceHandler
	fetchErr error // returned by every fetch; nil answers "no task, tasks_version 7"

	mu       sync.Mutex
	versions []int64
}

func (f *fakeServer) Declare(context.Context, *connect.Request[runnerv1.DeclareRequest]) (*connect.Response[runnerv1.DeclareResponse], error) {
	return connect.NewResponse(&runnerv1.DeclareResponse{}), nil
}

func (f *fakeServer) FetchTask(_ context.Context, req *connect.Request[runnerv1.FetchTaskRequest]) (*connect.Response[runnerv1.FetchTaskResponse], error) {
	f.record(req.Msg.GetTasksVersion())
	if f.fetchErr != nil {
		return nil, f.fetchErr
	}
	return connect.NewResponse(&runnerv1.FetchTaskResponse{TasksVersion: 7}), nil
}

func (f *fakeServer) fetchSingle(_ context.Context, req *connect.Request[runnerv1ext.FetchSingleTaskRequest]) (*connect.Response[runnerv1ext.FetchSingleTaskResponse], error) {
	f.record(req.Msg.GetTasksVersion())
	if f.fetchErr != nil {
		return nil, f.fetchErr
	}
	return connect.NewResponse(&runnerv1ext.FetchSingleTaskResponse{TasksVersion: 7}), nil
}

func (f *fakeServer) record(v int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.versions = append(f.versions, v)
}

func (f *fakeServer) fetches() []int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.versions)
}

func (f *fakeServer) start(t *testing.T) simrunner.Config {
	t.Helper()
	mux := http.NewServeMux()
	path, handler := runnerv1connect.NewRunnerServiceHandler(f)
	mux.Handle("/api/actions"+path, http.StripPrefix("/api/actions", handler))
	mux.Handle("/api/actions"+runnerv1ext.FetchSingleTaskProcedure,
		http.StripPrefix("/api/actions", connect.NewUnaryHandler(runnerv1ext.FetchSingleTaskProcedure, f.fetchSingle)))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("t"), 0o600); err != nil {
		t.Fatal(err)
	}
	return simrunner.Config{URL: srv.URL, UUID: "u", TokenURL: "file:" + token, Labels: []string{"docker"},
		PollInterval: time.Millisecond, Logf: t.Logf}
}

// The runner always sends tasks_version 0, whatever the server answered before.
func TestAlwaysSendsTasksVersionZero(t *testing.T) {
	for _, handle := range []string{"", "00000000-0000-4000-8000-000000000000"} {
		f := &fakeServer{}
		cfg := f.start(t)
		cfg.Wait, cfg.Handle = true, handle
		ctx, cancel := context.WithCancel(t.Context())
		done := runAsync(ctx, cfg)
		eventually(t, "several fetches", func() bool { return len(f.fetches()) >= 3 })
		cancel()
		await(t, done)
		for _, v := range f.fetches() {
			if v != 0 {
				t.Fatalf("handle %q: fetched with tasks_version %d, want always 0 (%v)", handle, v, f.fetches())
			}
		}
	}
}

// Without --wait a failed fetch is "no task received" (exit 2), not an error; with --wait it is
// retried, Unauthenticated included.
func TestFetchErrors(t *testing.T) {
	f := &fakeServer{fetchErr: connect.NewError(connect.CodeUnauthenticated, errors.New("unregistered runner"))}
	cfg := f.start(t)
	if out, err := simrunner.Run(t.Context(), cfg); err != nil || out.ExitCode != simrunner.ExitNoTask {
		t.Fatalf("once: %+v, %v", out, err)
	}
	cfg.Wait = true
	ctx, cancel := context.WithCancel(t.Context())
	done := runAsync(ctx, cfg)
	eventually(t, "retries", func() bool { return len(f.fetches()) >= 5 })
	cancel()
	if r := await(t, done); r.err != nil || r.out.ExitCode != simrunner.ExitTaskRan || r.out.TaskID != 0 {
		t.Fatalf("wait: %+v, %v", r.out, r.err)
	}
}

func TestCancelledWhileRunning(t *testing.T) {
	for _, how := range []string{"sigterm", "server"} {
		t.Run(how, func(t *testing.T) {
			e := newEnv(t)
			job := e.queue("docker")
			reg, cfg := e.runner("r1")
			cfg.TaskDuration = time.Minute
			cfg.LogLines = 600 // a heartbeat every 100ms notices a server-side cancel
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			done := runAsync(ctx, cfg)
			// The first log row shows the runner is executing the task, not still receiving it.
			eventually(t, "task running", func() bool {
				j := e.job(job.ID)
				return j.Status == forgejosim.JobRunning && e.taskOf(j.TaskID).LogLines > 0
			})
			if how == "sigterm" {
				cancel()
			} else if _, err := e.sim.CancelJob(job.ID); err != nil {
				t.Fatal(err)
			}
			r := await(t, done)
			if r.err != nil || r.out.ExitCode != simrunner.ExitTaskRan || r.out.Result != runnerv1.Result_RESULT_CANCELLED {
				t.Fatalf("outcome %+v, %v", r.out, r.err)
			}
			if got := e.job(job.ID); got.Status != forgejosim.JobCancelled {
				t.Fatalf("job %+v", got)
			}
			if _, ok := e.sim.RunnerByUUID(reg.UUID); ok {
				t.Fatalf("ephemeral runner still registered")
			}
		})
	}
}

func TestParseArgs(t *testing.T) {
	cfg, err := simrunner.ParseArgs([]string{"--url", "http://f", "--uuid", "u", "--token-url", "file:/t",
		"--label", "docker:docker://node:22", "--label", "host:host", "--handle", "h", "--wait"})
	if err != nil || cfg.URL != "http://f" || cfg.UUID != "u" || cfg.TokenURL != "file:/t" || cfg.Handle != "h" ||
		!cfg.Wait || !slices.Equal(cfg.Labels, []string{"docker:docker://node:22", "host:host"}) {
		t.Fatalf("%+v %v", cfg, err)
	}
	if _, err := simrunner.ParseArgs([]string{"--bogus"}); err == nil {
		t.Fatal("unknown flag accepted")
	}
}
