package forgejosim

import (
	"errors"
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
	// Held is true while a waiting job cannot be taken because its run queues behind another run
	// of the same concurrency group.
	Held bool `json:"held,omitempty"`
	// Listed is false while a seeded delivery race keeps the job out of the jobs list.
	Listed bool `json:"listed"`
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

// Run is a workflow run as the simulator's state shows it.
type Run struct {
	ID          int64     `json:"id"`
	Index       int64     `json:"index_in_repo"`
	Repo        string    `json:"repo"`
	Title       string    `json:"title"`
	WorkflowID  string    `json:"workflow_id"`
	CommitSHA   string    `json:"commit_sha"`
	Concurrency string    `json:"concurrency,omitempty"`
	Status      JobStatus `json:"status"`
	Created     time.Time `json:"created"`
	Started     time.Time `json:"started,omitzero"`
	Stopped     time.Time `json:"stopped,omitzero"`
	Jobs        []Job     `json:"jobs"`
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

// RunJobSpec is one job of a QueueRunRequest.
type RunJobSpec struct {
	// Name is the job's id in the workflow (what needs: refers to) and its name.
	Name string `json:"name"`
	// RunsOn are the job's runs-on labels.
	RunsOn []string `json:"runs_on"`
	// Needs names other jobs of the same run that must succeed before this one is waiting.
	Needs []string `json:"needs,omitempty"`
	// EnableOpenIDConnect is the job's enable-openid-connect; set, it wins over the workflow's.
	EnableOpenIDConnect *bool `json:"enable_openid_connect,omitempty"`
}

// QueueRunRequest asks for one workflow run with several jobs, as one push that triggers one
// workflow would make.
type QueueRunRequest struct {
	// Repo is "owner/name"; it is created (with its owner, as an organization) if unknown.
	Repo string `json:"repo"`
	// Jobs are the run's jobs; at least one.
	Jobs []RunJobSpec `json:"jobs"`
	// Concurrency is the workflow's concurrency group, with cancel-in-progress false: the run
	// queues behind the other runs of the same group in the same repository. In Forgejo 15.0.3
	// concurrency is a property of the whole run (workflow level), not of single jobs
	// (services/actions/workflows.go ConfigureActionRunConcurrency). Empty: no group.
	Concurrency string `json:"concurrency,omitempty"`
	// Title defaults to "simulated run"; Workflow (the workflow file) to "simulated.yml".
	Title    string `json:"title,omitempty"`
	Workflow string `json:"workflow,omitempty"`
	// EmptyHandle simulates jobs created before an upgrade to Forgejo 15, which have no handle.
	EmptyHandle bool `json:"empty_handle,omitempty"`
	// EnableOpenIDConnect is the workflow's enable-openid-connect: its jobs' tasks may request
	// an ID token (oidc.go).
	EnableOpenIDConnect bool `json:"enable_openid_connect,omitempty"`
}

// QueueJobs creates Count runs of one job each, as Count pushes would; each run sends a push
// delivery to the hooks that want it.
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
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Job, 0, req.Count)
	for range req.Count {
		r, err := s.queueRunLocked(QueueRunRequest{
			Repo: req.Repo, EmptyHandle: req.EmptyHandle,
			Jobs: []RunJobSpec{{Name: req.Name, RunsOn: req.RunsOn}},
		})
		if err != nil {
			return nil, fmt.Errorf("queue jobs: %w", err)
		}
		out = append(out, s.jobViewLocked(r.jobs[0]))
	}
	return out, nil
}

// QueueRun creates one run with several jobs and sends one push delivery for it. Jobs without
// needs are waiting at once; the others are blocked until their needs finish.
func (s *Server) QueueRun(req QueueRunRequest) (Run, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.queueRunLocked(req)
	if err != nil {
		return Run{}, fmt.Errorf("queue run: %w", err)
	}
	return s.runViewLocked(r), nil
}

func validateRunJobs(specs []RunJobSpec) error {
	if len(specs) == 0 {
		return errors.New("a run needs at least one job")
	}
	names := map[string]bool{}
	for _, js := range specs {
		if js.Name == "" || strings.ContainsAny(js.Name, ", ") {
			return fmt.Errorf("invalid job name %q", js.Name)
		}
		if names[js.Name] {
			return fmt.Errorf("job name %q used twice", js.Name)
		}
		names[js.Name] = true
		for _, l := range js.RunsOn {
			if l == "" || strings.Contains(l, ",") {
				return fmt.Errorf("job %s: invalid runs-on label %q", js.Name, l)
			}
		}
	}
	for _, js := range specs {
		for _, n := range js.Needs {
			if !names[n] || n == js.Name {
				return fmt.Errorf("job %s needs %q, which is not another job of the run", js.Name, n)
			}
		}
	}
	// A cycle would leave its jobs blocked for ever; Forgejo's workflow parser refuses it too.
	done := map[string]bool{}
	for len(done) < len(specs) {
		progress := false
		for _, js := range specs {
			if done[js.Name] {
				continue
			}
			if !slices.ContainsFunc(js.Needs, func(n string) bool { return !done[n] }) {
				done[js.Name] = true
				progress = true
			}
		}
		if !progress {
			return errors.New("the jobs' needs form a cycle")
		}
	}
	return nil
}

// queueRunLocked inserts a run as Forgejo does on a push: the push delivery is queued first (the
// webhook notifier is registered before the actions notifier, services/webhook/notifier.go and
// services/actions/init.go), then the run and its jobs are inserted, jobs with needs blocked and
// the others waiting (models/actions/run.go InsertRunJobs), and the tasks version is increased
// when a job is waiting.
func (s *Server) queueRunLocked(req QueueRunRequest) (*run, error) {
	if err := validateRunJobs(req.Jobs); err != nil {
		return nil, err
	}
	repo, err := s.ensureRepoLocked(req.Repo)
	if err != nil {
		return nil, err
	}
	if req.Title == "" {
		req.Title = "simulated run"
	}
	if req.Workflow == "" {
		req.Workflow = "simulated.yml"
	}
	now := s.now()
	repo.runIndex++
	before := repo.headSHA
	if before == "" {
		before = zeroSHA
	}
	r := &run{
		id: s.nextIDLocked("run"), index: repo.runIndex, repo: repo, title: req.Title,
		workflowID: req.Workflow, ref: "refs/heads/" + defaultBranch, commitSHA: s.randomHexLocked(20),
		event: "push", concurrency: strings.ToLower(req.Concurrency), trigger: repo.owner, created: now,
	}
	repo.headSHA = r.commitSHA
	for _, js := range req.Jobs {
		j := &job{
			id: s.nextIDLocked("job"), run: r, key: js.Name, attempt: 1, repo: repo, name: js.Name,
			needs: nonNil(js.Needs), runsOn: nonNil(js.RunsOn), status: JobWaiting, created: now, updated: now,
			openIDConnect: openIDConnectFor(req.EnableOpenIDConnect, js.EnableOpenIDConnect),
		}
		if len(j.needs) > 0 {
			j.status = JobBlocked
		}
		if !req.EmptyHandle {
			j.handle = s.uuidLocked()
		}
		r.jobs = append(r.jobs, j)
	}
	r.status = aggregateStatus(r.jobs)

	push := s.pushPayloadLocked(r, before)
	r.payload = string(mustMarshal(push, false))
	s.emitLocked(repo, EventPush, push, 0)

	if s.chanceLocked(s.opts.DeliveryRaceProbability) {
		// The push delivery overtakes the insertion: the jobs appear a little later.
		r.hiddenUntil = now.Add(s.opts.DeliveryRaceDelay)
		s.logf("forgejosim: run %d of %s is listed only from %s on (delivery race)", r.id, repo.fullName(), r.hiddenUntil.Format(time.RFC3339Nano))
	}
	s.runs[r.id] = r
	for _, j := range r.jobs {
		s.jobs[j.id] = j
	}
	if r.hiddenUntil.IsZero() {
		s.insertedLocked(r)
	}
	return r, nil
}

// insertedLocked is what follows a run's insertion: the tasks version moves when a job is
// waiting, and a newer server's job events are sent.
func (s *Server) insertedLocked(r *run) {
	if slices.ContainsFunc(r.jobs, func(j *job) bool { return j.status == JobWaiting }) {
		s.increaseTasksVersionLocked(r.repo.owner.id, r.repo.id)
	}
	for _, j := range r.jobs {
		s.emitJobEventLocked(j, ActionNewJobAttempt)
	}
}

// revealLocked ends the delivery races whose delay has passed. Every path that reads jobs calls
// it first, so a run appears at the same moment to the jobs list and to runners.
func (s *Server) revealLocked() {
	now := s.now()
	for _, id := range sortedKeys(s.runs) {
		r := s.runs[id]
		if !r.hiddenUntil.IsZero() && !now.Before(r.hiddenUntil) {
			r.hiddenUntil = time.Time{}
			s.insertedLocked(r)
		}
	}
}

// CancelJob cancels a waiting or running job. A running task learns it from its next UpdateTask
// answer; an ephemeral runner that held the task is deleted at once.
func (s *Server) CancelJob(id int64) (Job, error) {
	return s.CompleteJob(id, JobCancelled)
}

// CompleteJob ends a job with a final status (success, failure, cancelled or skipped), as if its
// runner had reported it (or, for a waiting or blocked job, as if Forgejo had decided it).
func (s *Server) CompleteJob(id int64, status JobStatus) (Job, error) {
	if !status.Done() {
		return Job{}, fmt.Errorf("complete job %d: %q is not a final status", id, status)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revealLocked()
	j, ok := s.jobs[id]
	if !ok {
		return Job{}, fmt.Errorf("complete job %d: no such job", id)
	}
	if j.status.Done() {
		return Job{}, fmt.Errorf("complete job %d: already %s", id, j.status)
	}
	if t, ok := s.tasks[j.taskID]; ok && status != JobCancelled {
		if rn, ok := s.runners[t.runnerID]; ok {
			// As if the runner's final UpdateTask had come (routers/api/actions/runner/runner.go).
			s.increaseTasksVersionLocked(rn.ownerID, rn.repoID)
		}
	}
	s.finishJobLocked(j, status)
	return s.jobViewLocked(j), nil
}

// finishJobLocked moves j to a final status, ends its task and deletes the task's runner if it
// was ephemeral, as Forgejo does once an ephemeral runner's only task is over; then it releases
// or skips the jobs that need j and updates the run.
func (s *Server) finishJobLocked(j *job, status JobStatus) {
	now := s.now()
	prior := j.run.status
	j.status = status
	j.stopped = now
	j.updated = now
	if t, ok := s.tasks[j.taskID]; ok && !t.status.Done() {
		t.status = status
		t.stopped = now
		if rn, ok := s.runners[t.runnerID]; ok && rn.ephemeral {
			s.deleteRunnerLocked(rn)
		}
	}
	s.emitJobEventLocked(j, ActionJobCompleted)
	s.emitReadyJobsLocked(j.run)
	s.updateRunLocked(j.run, prior)
}

// emitReadyJobsLocked is Forgejo's job emitter (services/actions/job_emitter.go checkJobsOfRun
// and jobStatusResolver.Resolve): a blocked job whose needs are all done becomes waiting when
// they all succeeded and skipped otherwise (the simulator's jobs have no if: condition), until
// nothing changes. No webhook is sent for it on Forgejo 15; the tasks version moves for each job
// that becomes waiting (models/actions/run_job.go UpdateRunJobWithoutNotification).
func (s *Server) emitReadyJobsLocked(r *run) {
	byKey := map[string]*job{}
	for _, j := range r.jobs {
		byKey[j.key] = j
	}
	for changed := true; changed; {
		changed = false
		for _, j := range r.jobs {
			if j.status != JobBlocked {
				continue
			}
			allDone, allSucceeded := true, true
			for _, n := range j.needs {
				st := byKey[n].status
				allDone = allDone && st.Done()
				allSucceeded = allSucceeded && st != JobFailure && st != JobCancelled && st != JobSkipped
			}
			if !allDone {
				continue
			}
			changed = true
			j.updated = s.now()
			if allSucceeded {
				j.status = JobWaiting
				s.increaseTasksVersionLocked(j.repo.owner.id, j.repo.id)
				s.emitJobEventLocked(j, ActionJobStatusChanged)
			} else {
				j.status = JobSkipped
				j.stopped = s.now()
				s.emitJobEventLocked(j, ActionJobCompleted)
			}
		}
	}
}

// aggregateStatus is Forgejo's AggregateJobStatus (models/actions/run_job.go), in its order of
// precedence: a failed job makes the run failed even while other jobs still run.
func aggregateStatus(jobs []*job) JobStatus {
	allSuccessOrSkipped, allSkipped := len(jobs) != 0, len(jobs) != 0
	has := map[JobStatus]bool{}
	for _, j := range jobs {
		allSuccessOrSkipped = allSuccessOrSkipped && (j.status == JobSuccess || j.status == JobSkipped)
		allSkipped = allSkipped && j.status == JobSkipped
		has[j.status] = true
	}
	switch {
	case allSkipped:
		return JobSkipped
	case allSuccessOrSkipped:
		return JobSuccess
	case has[JobCancelled]:
		return JobCancelled
	case has[JobFailure]:
		return JobFailure
	case has[JobRunning]:
		return JobRunning
	case has[JobWaiting]:
		return JobWaiting
	default:
		return JobBlocked
	}
}

// updateRunLocked recomputes the run's status (models/actions/run.go ComputeRunStatus) and, when
// it has just become done, sends the action_run_* events
// (services/actions/notifier.go sendActionRunNowDoneNotificationIfNeeded).
func (s *Server) updateRunLocked(r *run, prior JobStatus) {
	now := s.now()
	r.status = aggregateStatus(r.jobs)
	if r.started.IsZero() && r.status == JobRunning {
		r.started = now
	}
	if r.stopped.IsZero() && r.status.Done() {
		r.stopped = now
	}
	if !prior.Done() && r.status.Done() {
		s.emitRunDoneLocked(r, prior)
	}
}

// increaseTasksVersionLocked is Forgejo's IncreaseTaskVersion (models/actions/tasks_version.go):
// the global version, the owner's and the repository's each move by one.
func (s *Server) increaseTasksVersionLocked(ownerID, repoID int64) {
	s.tasksVersions[scopeKey{}]++
	if ownerID > 0 {
		s.tasksVersions[scopeKey{ownerID: ownerID}]++
	}
	if repoID > 0 {
		s.tasksVersions[scopeKey{repoID: repoID}]++
	}
}

// tasksVersionLocked is routers/api/actions/runner/runner.go getLatestTasksVersion: the version
// of the runner's own scope, started at 1 on first use.
func (s *Server) tasksVersionLocked(rn *runner) int64 {
	k := scopeKey{ownerID: rn.ownerID, repoID: rn.repoID}
	if s.tasksVersions[k] == 0 {
		s.increaseTasksVersionLocked(rn.ownerID, rn.repoID)
	}
	return s.tasksVersions[k]
}

// heldLocked reports whether a job's run queues behind another run of its concurrency group
// (models/actions/task.go getConcurrencyCondition): another run of the same repository and group
// that is running, or pending and older (a lower index).
func (s *Server) heldLocked(j *job) bool {
	r := j.run
	if r.concurrency == "" {
		return false
	}
	for _, other := range s.runs {
		if other == r || other.repo != r.repo || other.concurrency != r.concurrency || !other.hiddenUntil.IsZero() {
			continue
		}
		if other.status == JobRunning || !other.status.Done() && other.index < r.index {
			return true
		}
	}
	return false
}

// assignLocked gives job j to runner rn as a new task (models/actions/task.go
// CreateTaskForRunner). The tasks version does not move.
func (s *Server) assignLocked(rn *runner, j *job, requestKey string) *task {
	now := s.now()
	token := s.randomHexLocked(20)
	t := &task{
		id:         s.nextIDLocked("task"),
		jobID:      j.id,
		runnerID:   rn.id,
		status:     JobRunning,
		outputs:    map[string]string{},
		started:    now,
		tokenHash:  hashToken(token),
		requestKey: requestKey,
	}
	t.proto = s.taskProtoLocked(t, j, token)
	s.tasks[t.id] = t
	prior := j.run.status
	j.status = JobRunning
	j.taskID = t.id
	j.started = now
	j.updated = now
	rn.tasksTaken++
	s.emitJobEventLocked(j, ActionJobStatusChanged)
	s.updateRunLocked(j.run, prior)
	return t
}

// taskProtoLocked builds what FetchTask hands the runner: a tiny workflow that runs on the job's
// labels and a github-style context, enough for a simulated runner to "run" it.
func (s *Server) taskProtoLocked(t *task, j *job, token string) *runnerv1.Task {
	base := s.baseURLLocked()
	workflow := fmt.Sprintf("name: simulated\non: push\njobs:\n  %s:\n    name: %s\n    runs-on: [%s]\n    steps:\n      - run: echo simulated job %d\n",
		j.key, j.name, strings.Join(j.runsOn, ", "), j.id)
	fields := map[string]any{
		"token":              token,
		"server_url":         base,
		"api_url":            base + "/api/v1",
		"repository":         j.repo.fullName(),
		"repository_owner":   j.repo.owner.name,
		"run_id":             fmt.Sprint(j.runID()),
		"run_number":         fmt.Sprint(j.run.index),
		"run_attempt":        fmt.Sprint(j.attempt),
		"job":                j.key,
		"event_name":         j.run.event,
		"ref":                j.run.ref,
		"sha":                j.run.commitSHA,
		"workflow":           j.run.workflowID,
		"actor":              j.run.trigger.name,
		"forgejo_job_handle": j.handle,
	}
	s.addActionsTokensLocked(fields, t, j)
	ctx, err := structpb.NewStruct(fields)
	if err != nil {
		// Only non-JSON values fail here, and all of the above are strings or booleans.
		panic(fmt.Sprintf("build task context: %v", err))
	}
	needs := map[string]*runnerv1.TaskNeed{}
	for _, other := range j.run.jobs {
		if slices.Contains(j.needs, other.key) {
			needs[other.key] = &runnerv1.TaskNeed{Result: resultOfStatus(other.status), Outputs: map[string]string{}}
		}
	}
	return &runnerv1.Task{
		Id:              t.id,
		WorkflowPayload: []byte(workflowWithOpenIDConnect(workflow, j.openIDConnect)),
		Context:         ctx,
		Secrets:         map[string]string{"FORGEJO_TOKEN": token, "GITHUB_TOKEN": token, "GITEA_TOKEN": token},
		Needs:           needs,
		Vars:            map[string]string{},
	}
}

func (s *Server) jobViewLocked(j *job) Job {
	v := Job{
		ID: j.id, RunID: j.runID(), Attempt: j.attempt, Handle: j.handle, Repo: j.repo.fullName(),
		RepoID: j.repo.id, OwnerID: j.repo.owner.id, Name: j.name, Needs: nonNil(j.needs),
		RunsOn: nonNil(j.runsOn), TaskID: j.taskID, Status: j.status, Created: j.created,
		Started: j.started, Stopped: j.stopped, Listed: j.listed(),
		Held: j.status == JobWaiting && s.heldLocked(j),
	}
	if t, ok := s.tasks[j.taskID]; ok {
		v.RunnerID = t.runnerID
	}
	return v
}

func (s *Server) runViewLocked(r *run) Run {
	v := Run{
		ID: r.id, Index: r.index, Repo: r.repo.fullName(), Title: r.title, WorkflowID: r.workflowID,
		CommitSHA: r.commitSHA, Concurrency: r.concurrency, Status: r.status, Created: r.created,
		Started: r.started, Stopped: r.stopped, Jobs: []Job{},
	}
	for _, j := range r.jobs {
		v.Jobs = append(v.Jobs, s.jobViewLocked(j))
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

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return slices.Clone(s)
}
