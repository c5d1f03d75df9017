package forgejosim

import (
	"fmt"
	"slices"
	"strings"
	"time"

	runnerv1 "gitea.dev/actions-proto-go/runner/v1"
	"google.golang.org/protobuf/types/known/structpb"
)

// Job is a job attempt as the simulator's state shows it.
type Job struct {
	ID       int64     `json:"id"`
	RunID    int64     `json:"run_id"`
	Attempt  int64     `json:"attempt"`
	Handle   string    `json:"handle"`
	Repo     string    `json:"repo"`
	RepoID   int64     `json:"repo_id"`
	OwnerID  int64     `json:"owner_id"`
	Name     string    `json:"name"`
	Needs    []string  `json:"needs"`
	RunsOn   []string  `json:"runs_on"`
	TaskID   int64     `json:"task_id"`
	Status   JobStatus `json:"status"`
	Created  time.Time `json:"created"`
	Started  time.Time `json:"started,omitzero"`
	Stopped  time.Time `json:"stopped,omitzero"`
	RunnerID int64     `json:"runner_id,omitempty"`
}

// Task is one job attempt given to one runner.
type Task struct {
	ID       int64             `json:"id"`
	JobID    int64             `json:"job_id"`
	RunnerID int64             `json:"runner_id"`
	Status   JobStatus         `json:"status"`
	LogLines int64             `json:"log_lines"`
	Outputs  map[string]string `json:"outputs,omitempty"`
	Started  time.Time         `json:"started"`
	Stopped  time.Time         `json:"stopped,omitzero"`
}

// QueueJobsRequest asks for Count new waiting jobs (each its own run) in repository Repo.
type QueueJobsRequest struct {
	// Repo is "owner/name"; it is created (with its owner, as an organization) if unknown.
	Repo string `json:"repo"`
	// RunsOn are the job's runs-on labels.
	RunsOn []string `json:"runs_on"`
	// Count defaults to 1.
	Count int `json:"count,omitempty"`
	// Name defaults to "build".
	Name string `json:"name,omitempty"`
	// EmptyHandle simulates jobs created before an upgrade to Forgejo 15, which have no handle.
	EmptyHandle bool `json:"empty_handle,omitempty"`
}

// QueueJobs creates waiting jobs and announces them to webhooks (workflow_job_waiting).
func (s *Server) QueueJobs(req QueueJobsRequest) ([]Job, error) {
	if req.Count == 0 {
		req.Count = 1
	}
	if req.Count < 0 || req.Count > 10000 {
		return nil, fmt.Errorf("queue jobs: count %d out of range 1..10000", req.Count)
	}
	if req.Name == "" {
		req.Name = "build"
	}
	for _, l := range req.RunsOn {
		if l == "" || strings.Contains(l, ",") {
			return nil, fmt.Errorf("queue jobs: invalid runs-on label %q", l)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	repo, err := s.ensureRepoLocked(req.Repo)
	if err != nil {
		return nil, fmt.Errorf("queue jobs: %w", err)
	}
	out := make([]Job, 0, req.Count)
	for range req.Count {
		j := &job{
			id:      s.nextIDLocked("job"),
			runID:   s.nextIDLocked("run"),
			attempt: 1,
			repo:    repo,
			name:    req.Name,
			needs:   []string{},
			runsOn:  slices.Clone(req.RunsOn),
			status:  JobWaiting,
			created: s.now(),
		}
		if !req.EmptyHandle {
			j.handle = s.uuidLocked()
		}
		s.jobs[j.id] = j
		s.tasksVersion++
		s.emitJobEventLocked(j, ActionNewJobAttempt)
		out = append(out, s.jobViewLocked(j))
	}
	return out, nil
}

// CancelJob cancels a waiting or running job. A running task learns it from its next UpdateTask
// answer; an ephemeral runner that held the task is deleted at once.
func (s *Server) CancelJob(id int64) (Job, error) {
	return s.CompleteJob(id, JobCancelled)
}

// CompleteJob ends a job with a final status (success, failure, cancelled or skipped), as if its
// runner had reported it (or, for a waiting job, as if Forgejo had decided it).
func (s *Server) CompleteJob(id int64, status JobStatus) (Job, error) {
	if !status.Done() {
		return Job{}, fmt.Errorf("complete job %d: %q is not a final status", id, status)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.jobs[id]
	if !ok {
		return Job{}, fmt.Errorf("complete job %d: no such job", id)
	}
	if j.status.Done() {
		return Job{}, fmt.Errorf("complete job %d: already %s", id, j.status)
	}
	s.finishJobLocked(j, status)
	return s.jobViewLocked(j), nil
}

// finishJobLocked moves j to a final status, ends its task and deletes the task's runner if it
// was ephemeral, as Forgejo does once an ephemeral runner's only task is over.
func (s *Server) finishJobLocked(j *job, status JobStatus) {
	now := s.now()
	j.status = status
	j.stopped = now
	s.tasksVersion++
	if t, ok := s.tasks[j.taskID]; ok && !t.status.Done() {
		t.status = status
		t.stopped = now
		if rn, ok := s.runners[t.runnerID]; ok && rn.ephemeral {
			s.deleteRunnerLocked(rn)
		}
	}
	s.emitJobEventLocked(j, ActionJobCompleted)
}

// assignLocked gives job j to runner rn as a new task.
func (s *Server) assignLocked(rn *runner, j *job) *task {
	now := s.now()
	token := s.randomHexLocked(20)
	t := &task{
		id:        s.nextIDLocked("task"),
		jobID:     j.id,
		runnerID:  rn.id,
		status:    JobRunning,
		outputs:   map[string]string{},
		started:   now,
		tokenHash: hashToken(token),
	}
	t.proto = s.taskProtoLocked(t, j, token)
	s.tasks[t.id] = t
	j.status = JobRunning
	j.taskID = t.id
	j.started = now
	rn.tasksTaken++
	s.tasksVersion++
	s.emitJobEventLocked(j, ActionJobStatusChanged)
	return t
}

// taskProtoLocked builds what FetchTask hands the runner: a tiny workflow that runs on the job's
// labels and a github-style context, enough for a simulated runner to "run" it.
func (s *Server) taskProtoLocked(t *task, j *job, token string) *runnerv1.Task {
	base := s.baseURLLocked()
	workflow := fmt.Sprintf("name: simulated\non: push\njobs:\n  %s:\n    name: %s\n    runs-on: [%s]\n    steps:\n      - run: echo simulated job %d\n",
		j.name, j.name, strings.Join(j.runsOn, ", "), j.id)
	ctx, err := structpb.NewStruct(map[string]any{
		"token":              token,
		"server_url":         base,
		"api_url":            base + "/api/v1",
		"repository":         j.repo.fullName(),
		"repository_owner":   j.repo.owner.name,
		"run_id":             fmt.Sprint(j.runID),
		"run_number":         fmt.Sprint(j.runID),
		"run_attempt":        fmt.Sprint(j.attempt),
		"job":                j.name,
		"event_name":         "push",
		"ref":                "refs/heads/main",
		"sha":                "0000000000000000000000000000000000000000",
		"workflow":           "simulated",
		"actor":              j.repo.owner.name,
		"forgejo_job_handle": j.handle,
	})
	if err != nil {
		// Only non-JSON values fail here, and all of the above are strings.
		panic(fmt.Sprintf("build task context: %v", err))
	}
	return &runnerv1.Task{
		Id:              t.id,
		WorkflowPayload: []byte(workflow),
		Context:         ctx,
		Secrets:         map[string]string{"FORGEJO_TOKEN": token, "GITHUB_TOKEN": token, "GITEA_TOKEN": token},
		Needs:           map[string]*runnerv1.TaskNeed{},
		Vars:            map[string]string{},
	}
}

func (s *Server) jobViewLocked(j *job) Job {
	v := Job{
		ID: j.id, RunID: j.runID, Attempt: j.attempt, Handle: j.handle, Repo: j.repo.fullName(),
		RepoID: j.repo.id, OwnerID: j.repo.owner.id, Name: j.name, Needs: nonNil(j.needs),
		RunsOn: nonNil(j.runsOn), TaskID: j.taskID, Status: j.status, Created: j.created,
		Started: j.started, Stopped: j.stopped,
	}
	if t, ok := s.tasks[j.taskID]; ok {
		v.RunnerID = t.runnerID
	}
	return v
}

func taskView(t *task) Task {
	outputs := map[string]string{}
	for k, v := range t.outputs {
		outputs[k] = v
	}
	return Task{ID: t.id, JobID: t.jobID, RunnerID: t.runnerID, Status: t.status, LogLines: t.logLines,
		Outputs: outputs, Started: t.started, Stopped: t.stopped}
}

// baseURLLocked is the instance URL put into payloads: Options.PublicURL, else the one the last
// request came in on.
func (s *Server) baseURLLocked() string {
	switch {
	case s.opts.PublicURL != "":
		return s.opts.PublicURL
	case s.seenBaseURL != "":
		return s.seenBaseURL
	default:
		return "http://forgejo.invalid"
	}
}
