package forgejosim_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	runnerv1 "gitea.dev/actions-proto-go/runner/v1"
	"gitea.dev/actions-proto-go/runner/v1/runnerv1connect"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/runnerpb/runnerv1ext"
)

const adminToken = "admin-token"

type env struct {
	t   *testing.T
	sim *forgejosim.Server
	url string
}

func newEnv(t *testing.T, mutate ...func(*forgejosim.Options)) *env {
	t.Helper()
	opts := forgejosim.Options{
		AdminToken:       adminToken,
		Seed:             1,
		WebhookRetryBase: 5 * time.Millisecond,
	}
	for _, m := range mutate {
		m(&opts)
	}
	// Every REST answer of every test goes through the contract checker.
	sim := forgejosim.New(opts)
	ts := httptest.NewServer(newContract(t).wrap(t, sim))
	t.Cleanup(func() {
		ts.Close()
		sim.Close()
	})
	return &env{t: t, sim: sim, url: ts.URL}
}

// token mints an API token with scope sc.
func (e *env) token(sc forgejosim.Scope) string {
	e.t.Helper()
	tok, err := e.sim.CreateToken(sc)
	if err != nil {
		e.t.Fatalf("create token: %v", err)
	}
	return tok
}

// do sends a REST call and returns the response (body already read) and its body.
func (e *env) do(method, path, token string, body any) (*http.Response, []byte) {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			e.t.Fatalf("encode body: %v", err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		e.t.Fatalf("new request: %v", err)
	}
	if token != "" {
		req.Header.Set("Authorization", "token "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("read body of %s %s: %v", method, path, err)
	}
	return resp, data
}

// expect checks the status of a call and decodes its JSON body into out (when not nil).
func (e *env) expect(method, path, token string, body any, status int, out any) *http.Response {
	e.t.Helper()
	resp, data := e.do(method, path, token, body)
	if resp.StatusCode != status {
		e.t.Fatalf("%s %s: status %d, want %d; body %s", method, path, resp.StatusCode, status, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			e.t.Fatalf("%s %s: decode %s: %v", method, path, data, err)
		}
	}
	return resp
}

func (e *env) register(prefix, token, name string, ephemeral bool) forgejosim.RegisterRunnerResponse {
	e.t.Helper()
	var out forgejosim.RegisterRunnerResponse
	e.expect(http.MethodPost, prefix, token, forgejosim.RegisterRunnerRequest{Name: name, Ephemeral: ephemeral}, http.StatusCreated, &out)
	return out
}

func (e *env) queue(repo string, count int, runsOn ...string) []forgejosim.Job {
	e.t.Helper()
	jobs, err := e.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: repo, RunsOn: runsOn, Count: count})
	if err != nil {
		e.t.Fatalf("queue jobs: %v", err)
	}
	return jobs
}

// simRunner speaks the runner protocol with one registration's credentials.
type simRunner struct {
	t      *testing.T
	uuid   string
	token  string
	client runnerv1connect.RunnerServiceClient
	single *connect.Client[runnerv1ext.FetchSingleTaskRequest, runnerv1ext.FetchSingleTaskResponse]
}

func (e *env) runner(reg forgejosim.RegisterRunnerResponse, labels ...string) *simRunner {
	e.t.Helper()
	base := e.url + "/api/actions"
	r := &simRunner{
		t: e.t, uuid: reg.UUID, token: reg.Token,
		client: runnerv1connect.NewRunnerServiceClient(http.DefaultClient, base),
		single: runnerv1ext.NewFetchSingleTaskClient(http.DefaultClient, base),
	}
	if labels != nil {
		if _, err := r.client.Declare(e.t.Context(), r.req(&runnerv1.DeclareRequest{Version: "v12.8.2", Labels: labels})); err != nil {
			e.t.Fatalf("declare: %v", err)
		}
	}
	return r
}

func authed[T any](r *simRunner, msg *T) *connect.Request[T] {
	req := connect.NewRequest(msg)
	req.Header().Set(forgejosim.HeaderRunnerUUID, r.uuid)
	req.Header().Set(forgejosim.HeaderRunnerToken, r.token)
	return req
}

func (r *simRunner) req(msg *runnerv1.DeclareRequest) *connect.Request[runnerv1.DeclareRequest] {
	return authed(r, msg)
}

func (r *simRunner) fetch() (*runnerv1.Task, error) {
	resp, err := r.client.FetchTask(r.t.Context(), authed(r, &runnerv1.FetchTaskRequest{}))
	if err != nil {
		return nil, err
	}
	return resp.Msg.GetTask(), nil
}

func (r *simRunner) fetchSingle(handle string) (*runnerv1.Task, error) {
	resp, err := r.single.CallUnary(r.t.Context(), authed(r, &runnerv1ext.FetchSingleTaskRequest{Handle: handle}))
	if err != nil {
		return nil, err
	}
	return resp.Msg.GetTask(), nil
}

func (r *simRunner) finish(taskID int64, result runnerv1.Result) (*runnerv1.UpdateTaskResponse, error) {
	resp, err := r.client.UpdateTask(r.t.Context(), authed(r, &runnerv1.UpdateTaskRequest{
		State: &runnerv1.TaskState{Id: taskID, Result: result},
	}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

func mustNoErr(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// eventually polls cond until it holds or a generous deadline passes; the deadline only bounds
// a failing test, a passing one returns as soon as cond is true.
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
