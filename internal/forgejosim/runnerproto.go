package forgejosim

import (
	"context"
	"errors"
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

// authRunnerLocked finds the calling runner by its UUID and token headers and marks it online.
// A deleted runner (e.g. an ephemeral one whose task ended) is unauthenticated.
func (s *Server) authRunnerLocked(h http.Header) (*runner, error) {
	rn, ok := s.runnerByUUID[h.Get(HeaderRunnerUUID)]
	if !ok || rn.tokenHash != hashToken(h.Get(HeaderRunnerToken)) {
		return nil, connect.NewError(connect.CodeUnauthenticated, errUnregistered)
	}
	rn.lastOnline = s.now()
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
	rn, err := s.authRunnerLocked(req.Header())
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

func (svc *runnerService) FetchTask(_ context.Context, req *connect.Request[runnerv1.FetchTaskRequest]) (*connect.Response[runnerv1.FetchTaskResponse], error) {
	s := svc.s
	s.mu.Lock()
	defer s.mu.Unlock()
	rn, err := s.authRunnerLocked(req.Header())
	if err != nil {
		return nil, err
	}
	t := s.fetchLocked(rn, "", req.Header().Get(HeaderRunnerRequestKey), req.Msg.GetTasksVersion())
	return connect.NewResponse(&runnerv1.FetchTaskResponse{Task: t, TasksVersion: s.tasksVersion}), nil
}

// FetchSingleTask (Forgejo 15) gives the runner the job attempt named by handle, and only it,
// only when the runner's labels and scope allow it; the runner stays bound to that handle. An
// unknown, taken or finished handle answers no task (the runner's one-job then exits 2).
func (svc *runnerService) FetchSingleTask(_ context.Context, req *connect.Request[runnerv1ext.FetchSingleTaskRequest]) (*connect.Response[runnerv1ext.FetchSingleTaskResponse], error) {
	s := svc.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.supportsRegistrationAPILocked() {
		return nil, connect.NewError(connect.CodeUnimplemented, errors.New("FetchSingleTask needs Forgejo 15"))
	}
	rn, err := s.authRunnerLocked(req.Header())
	if err != nil {
		return nil, err
	}
	handle := req.Msg.GetHandle()
	if handle == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("handle is required"))
	}
	t := s.fetchLocked(rn, handle, req.Header().Get(HeaderRunnerRequestKey), 0)
	return connect.NewResponse(&runnerv1ext.FetchSingleTaskResponse{Task: t, TasksVersion: s.tasksVersion}), nil
}

// fetchLocked picks a task for rn. handle restricts it to one job attempt (and binds the runner
// to it); tasksVersion equal to the current one means "nothing changed since I last asked".
func (s *Server) fetchLocked(rn *runner, handle, requestKey string, tasksVersion int64) *runnerv1.Task {
	if requestKey != "" && requestKey == rn.lastFetchKey {
		if t, ok := s.tasks[rn.lastFetchTaskID]; ok {
			return t.proto
		}
		return nil
	}
	rn.lastFetchKey, rn.lastFetchTaskID = requestKey, 0

	if handle == "" {
		handle = rn.boundHandle
	} else if rn.boundHandle != "" && rn.boundHandle != handle {
		return nil
	}
	if handle != "" {
		rn.boundHandle = handle
	} else if tasksVersion != 0 && tasksVersion == s.tasksVersion {
		return nil
	}
	if rn.ephemeral && rn.tasksTaken > 0 {
		return nil
	}

	for _, id := range sortedKeys(s.jobs) {
		j := s.jobs[id]
		if j.status != JobWaiting || (handle != "" && j.handle != handle) {
			continue
		}
		if !runnerReachesJob(rn, j) || !runnerCanRun(rn.labels, j.runsOn) {
			continue
		}
		t := s.assignLocked(rn, j)
		rn.lastFetchTaskID = t.id
		return t.proto
	}
	return nil
}

func (svc *runnerService) UpdateTask(_ context.Context, req *connect.Request[runnerv1.UpdateTaskRequest]) (*connect.Response[runnerv1.UpdateTaskResponse], error) {
	s := svc.s
	s.mu.Lock()
	defer s.mu.Unlock()
	rn, err := s.authRunnerLocked(req.Header())
	if err != nil {
		return nil, err
	}
	state := req.Msg.GetState()
	t, ok := s.tasks[state.GetId()]
	if !ok || t.runnerID != rn.id {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("task not found"))
	}
	for k, v := range req.Msg.GetOutputs() {
		if _, seen := t.outputs[k]; !seen {
			t.outputs[k] = v
		}
	}
	if !t.status.Done() && state.GetResult() != runnerv1.Result_RESULT_UNSPECIFIED {
		// The final UpdateTask: the job is over, and an ephemeral runner with it.
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
	rn, err := s.authRunnerLocked(req.Header())
	if err != nil {
		return nil, err
	}
	t, ok := s.tasks[req.Msg.GetTaskId()]
	if !ok || t.runnerID != rn.id {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("task not found"))
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
