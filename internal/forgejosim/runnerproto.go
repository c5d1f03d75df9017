package forgejosim

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"connectrpc.com/connect"
	pingv1 "gitea.dev/actions-proto-go/ping/v1"
	"gitea.dev/actions-proto-go/ping/v1/pingv1connect"
	runnerv1 "gitea.dev/actions-proto-go/runner/v1"
	"gitea.dev/actions-proto-go/runner/v1/runnerv1connect"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/runnerpb/runnerv1ext"
)

// Endpoint names of the runner protocol, used to aim injected faults: the Connect procedure
// without its leading slash.
const (
	EndpointPing            = "ping.v1.PingService/Ping"
	EndpointRegister        = "runner.v1.RunnerService/Register"
	EndpointDeclare         = "runner.v1.RunnerService/Declare"
	EndpointFetchTask       = "runner.v1.RunnerService/FetchTask"
	EndpointFetchSingleTask = "runner.v1.RunnerService/FetchSingleTask"
	EndpointUpdateTask      = "runner.v1.RunnerService/UpdateTask"
	EndpointUpdateLog       = "runner.v1.RunnerService/UpdateLog"
)

// Runner protocol headers (Forgejo's routers/api/actions/runner interceptor).
const (
	HeaderRunnerUUID       = "x-runner-uuid"
	HeaderRunnerToken      = "x-runner-token"
	HeaderRunnerRequestKey = "x-runner-request-key"
)

const actionsPrefix = "/api/actions"

func (s *Server) routeRunnerProtocol() {
	svc := &runnerService{s: s}
	endpointOf := func(r *http.Request) string { return strings.TrimPrefix(r.URL.Path, actionsPrefix+"/") }
	mount := func(path string, h http.Handler) {
		s.mux.Handle(actionsPrefix+path, s.withFaultsFor(endpointOf, http.StripPrefix(actionsPrefix, h)))
	}
	mount(runnerv1connect.NewRunnerServiceHandler(svc))
	mount(pingv1connect.NewPingServiceHandler(svc))
	// More specific than the RunnerService prefix above, so ServeMux routes it here.
	mount(runnerv1ext.FetchSingleTaskProcedure, connect.NewUnaryHandler(runnerv1ext.FetchSingleTaskProcedure, svc.FetchSingleTask))
}

type runnerService struct {
	s *Server
}

var errUnregistered = errors.New("unregistered runner")

// authRunnerLocked finds the calling runner by its UUID and token headers and records the call:
// every call moves last_online, UpdateTask and UpdateLog also last_active
// (routers/api/actions/runner/interceptor.go). A deleted runner (e.g. an ephemeral one whose task
// ended) is unauthenticated.
func (s *Server) authRunnerLocked(h http.Header, method string) (*runner, error) {
	rn, ok := s.runnerByUUID[h.Get(HeaderRunnerUUID)]
	if !ok || rn.tokenHash != hashToken(h.Get(HeaderRunnerToken)) {
		return nil, connect.NewError(connect.CodeUnauthenticated, errUnregistered)
	}
	rn.lastOnline = s.now()
	if method == "UpdateTask" || method == "UpdateLog" {
		rn.lastActive = rn.lastOnline
	}
	return rn, nil
}

func (svc *runnerService) Ping(_ context.Context, req *connect.Request[pingv1.PingRequest]) (*connect.Response[pingv1.PingResponse], error) {
	return connect.NewResponse(&pingv1.PingResponse{Data: "Hello, " + req.Msg.GetData() + "!"}), nil
}

// Register is the pre-15 registration-token flow, which the project does not use.
func (svc *runnerService) Register(context.Context, *connect.Request[runnerv1.RegisterRequest]) (*connect.Response[runnerv1.RegisterResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errors.New("forgejosim: register runners through the HTTP API"))
}

func (svc *runnerService) Declare(_ context.Context, req *connect.Request[runnerv1.DeclareRequest]) (*connect.Response[runnerv1.DeclareResponse], error) {
	s := svc.s
	s.mu.Lock()
	defer s.mu.Unlock()
	rn, err := s.authRunnerLocked(req.Header(), methodOf(req.Spec().Procedure))
	if err != nil {
		return nil, err
	}
	rn.labels = slices.Clone(req.Msg.GetLabels())
	rn.version = req.Msg.GetVersion()
	return connect.NewResponse(&runnerv1.DeclareResponse{Runner: &runnerv1.Runner{
		Id: rn.id, Uuid: rn.uuid, Name: rn.name, Version: rn.version, Labels: slices.Clone(rn.labels),
		Ephemeral: rn.ephemeral, Status: runnerv1.RunnerStatus_RUNNER_STATUS_IDLE,
	}}), nil
}

func methodOf(procedure string) string { return procedure[strings.LastIndex(procedure, "/")+1:] }

// FetchTask is routers/api/actions/runner/runner.go FetchTask: a repeated request key gets the
// tasks it got before (with tasks version 0); otherwise a task is looked up only when the
// runner's tasks_version differs from its scope's current one.
func (svc *runnerService) FetchTask(_ context.Context, req *connect.Request[runnerv1.FetchTaskRequest]) (*connect.Response[runnerv1.FetchTaskResponse], error) {
	s := svc.s
	s.mu.Lock()
	defer s.mu.Unlock()
	rn, err := s.authRunnerLocked(req.Header(), methodOf(req.Spec().Procedure))
	if err != nil {
		return nil, err
	}
	s.revealLocked()
	key := req.Header().Get(HeaderRunnerRequestKey)
	if t := s.recoverTaskLocked(rn, key); t != nil {
		return connect.NewResponse(&runnerv1.FetchTaskResponse{Task: t}), nil
	}
	version := s.tasksVersionLocked(rn)
	var t *runnerv1.Task
	if req.Msg.GetTasksVersion() != version {
		t = s.pickTaskLocked(rn, nil, key)
	}
	return connect.NewResponse(&runnerv1.FetchTaskResponse{Task: t, TasksVersion: version}), nil
}

// FetchSingleTask (Forgejo 15, routers/api/actions/runner/runner.go) is FetchTask for at most one
// task, restricted to the job attempt named by handle when one is given (an empty handle means
// any job). It honours tasks_version as FetchTask does. An unknown, taken or finished handle
// answers no task (the runner's one-job then exits 2). Forgejo keeps no binding between a runner
// and a handle.
func (svc *runnerService) FetchSingleTask(_ context.Context, req *connect.Request[runnerv1ext.FetchSingleTaskRequest]) (*connect.Response[runnerv1ext.FetchSingleTaskResponse], error) {
	s := svc.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.supportsRegistrationAPILocked() {
		return nil, connect.NewError(connect.CodeUnimplemented, errors.New("FetchSingleTask needs Forgejo 15"))
	}
	rn, err := s.authRunnerLocked(req.Header(), "FetchSingleTask")
	if err != nil {
		return nil, err
	}
	s.revealLocked()
	key := req.Header().Get(HeaderRunnerRequestKey)
	if t := s.recoverTaskLocked(rn, key); t != nil {
		return connect.NewResponse(&runnerv1ext.FetchSingleTaskResponse{Task: t}), nil
	}
	version := s.tasksVersionLocked(rn)
	var t *runnerv1.Task
	if req.Msg.GetTasksVersion() != version {
		var handle *string
		if h := req.Msg.GetHandle(); h != "" {
			handle = &h
			rn.lastHandle = h
		}
		t = s.pickTaskLocked(rn, handle, key)
	}
	return connect.NewResponse(&runnerv1ext.FetchSingleTaskResponse{Task: t, TasksVersion: version}), nil
}

// recoverTaskLocked answers a repeated x-runner-request-key with the task that key got
// (GetTasksByRunnerRequestKey: the runner's own tasks only).
func (s *Server) recoverTaskLocked(rn *runner, requestKey string) *runnerv1.Task {
	if requestKey == "" {
		return nil
	}
	for _, id := range sortedKeys(s.tasks) {
		if t := s.tasks[id]; t.runnerID == rn.id && t.requestKey == requestKey {
			return t.proto
		}
	}
	return nil
}

// pickTaskLocked is services/actions/task.go PickTask and models/actions/task.go
// CreateTaskForRunner: an ephemeral runner that has had a task gets no other; otherwise the first
// waiting, untaken job of the runner's scope whose run is not held by its concurrency group, by
// (updated, id), that the handle (if any) names and whose runs-on the runner's labels cover.
func (s *Server) pickTaskLocked(rn *runner, handle *string, requestKey string) *runnerv1.Task {
	if rn.ephemeral && rn.tasksTaken > 0 {
		return nil
	}
	var candidates []*job
	for _, j := range s.jobs {
		if j.status == JobWaiting && j.taskID == 0 && j.listed() && runnerReachesJob(rn, j) && !s.heldLocked(j) {
			candidates = append(candidates, j)
		}
	}
	slices.SortFunc(candidates, func(a, b *job) int {
		if c := cmp.Compare(unixSeconds(a.updated), unixSeconds(b.updated)); c != 0 {
			return c
		}
		return cmp.Compare(a.id, b.id)
	})
	for _, j := range candidates {
		if (handle == nil || j.handle == *handle) && runnerCanRun(rn.labels, j.runsOn) {
			return s.assignLocked(rn, j, requestKey).proto
		}
	}
	return nil
}

func (svc *runnerService) UpdateTask(_ context.Context, req *connect.Request[runnerv1.UpdateTaskRequest]) (*connect.Response[runnerv1.UpdateTaskResponse], error) {
	s := svc.s
	s.mu.Lock()
	defer s.mu.Unlock()
	rn, err := s.authRunnerLocked(req.Header(), methodOf(req.Spec().Procedure))
	if err != nil {
		return nil, err
	}
	state := req.Msg.GetState()
	t, ok := s.tasks[state.GetId()]
	switch {
	case !ok:
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("update task: task with id %d: resource does not exist", state.GetId()))
	case t.runnerID != rn.id:
		// services/actions/task.go UpdateTaskByState.
		return nil, connect.NewError(connect.CodeInternal, errors.New("update task: invalid runner for task"))
	}
	for k, v := range req.Msg.GetOutputs() {
		if _, seen := t.outputs[k]; !seen {
			t.outputs[k] = v
		}
	}
	if !t.status.Done() && state.GetResult() != runnerv1.Result_RESULT_UNSPECIFIED {
		// The final UpdateTask: the job is over, jobs that need it may be released, the
		// runner's scope's tasks version moves (so a concurrency group it held can be taken),
		// and an ephemeral runner is deleted (routers/api/actions/runner/runner.go UpdateTask).
		s.increaseTasksVersionLocked(rn.ownerID, rn.repoID)
		s.finishJobLocked(s.jobs[t.jobID], statusOfResult(state.GetResult()))
	}
	sent := make([]string, 0, len(t.outputs))
	for k := range t.outputs {
		sent = append(sent, k)
	}
	slices.Sort(sent)
	return connect.NewResponse(&runnerv1.UpdateTaskResponse{
		State:       &runnerv1.TaskState{Id: t.id, Result: resultOfStatus(t.status)},
		SentOutputs: sent,
	}), nil
}

func (svc *runnerService) UpdateLog(_ context.Context, req *connect.Request[runnerv1.UpdateLogRequest]) (*connect.Response[runnerv1.UpdateLogResponse], error) {
	s := svc.s
	s.mu.Lock()
	defer s.mu.Unlock()
	rn, err := s.authRunnerLocked(req.Header(), methodOf(req.Spec().Procedure))
	if err != nil {
		return nil, err
	}
	t, ok := s.tasks[req.Msg.GetTaskId()]
	switch {
	case !ok:
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("get task: task with id %d: resource does not exist", req.Msg.GetTaskId()))
	case t.runnerID != rn.id:
		return nil, connect.NewError(connect.CodeInternal, errors.New("invalid runner for task"))
	}
	// Rows that would leave a gap are not taken: the ack tells the runner where to resume.
	if idx := req.Msg.GetIndex(); idx <= t.logLines {
		t.logLines = max(t.logLines, idx+int64(len(req.Msg.GetRows())))
	}
	return connect.NewResponse(&runnerv1.UpdateLogResponse{AckIndex: t.logLines}), nil
}

func statusOfResult(r runnerv1.Result) JobStatus {
	switch r {
	case runnerv1.Result_RESULT_SUCCESS:
		return JobSuccess
	case runnerv1.Result_RESULT_CANCELLED:
		return JobCancelled
	case runnerv1.Result_RESULT_SKIPPED:
		return JobSkipped
	default:
		return JobFailure
	}
}

func resultOfStatus(st JobStatus) runnerv1.Result {
	switch st {
	case JobSuccess:
		return runnerv1.Result_RESULT_SUCCESS
	case JobFailure:
		return runnerv1.Result_RESULT_FAILURE
	case JobCancelled:
		return runnerv1.Result_RESULT_CANCELLED
	case JobSkipped:
		return runnerv1.Result_RESULT_SKIPPED
	default:
		return runnerv1.Result_RESULT_UNSPECIFIED
	}
}
