package forgejosim

import (
	"slices"
	"strings"
	"time"

	runnerv1 "gitea.dev/actions-proto-go/runner/v1"
)

// JobStatus is the status of a job attempt or a run, spelled as Forgejo's actions Status.String()
// (models/actions/status.go).
type JobStatus string

// Job statuses. A job with unmet needs is blocked; one whose needs did not all succeed is skipped
// (services/actions/job_emitter.go).
const (
	JobWaiting   JobStatus = "waiting"
	JobRunning   JobStatus = "running"
	JobSuccess   JobStatus = "success"
	JobFailure   JobStatus = "failure"
	JobCancelled JobStatus = "cancelled"
	JobSkipped   JobStatus = "skipped"
	JobBlocked   JobStatus = "blocked"
)

// Done reports whether the status is final (models/actions/status.go DoneStatuses).
func (st JobStatus) Done() bool {
	switch st {
	case JobSuccess, JobFailure, JobCancelled, JobSkipped:
		return true
	}
	return false
}

// Forgejo's runner status thresholds (models/actions/runner.go RunnerOfflineTime, RunnerIdleTime).
const (
	defaultRunnerOfflineAfter = time.Minute
	runnerIdleAfter           = 10 * time.Second
)

type runner struct {
	id          int64
	uuid        string
	tokenHash   string
	name        string
	description string
	ephemeral   bool
	ownerID     int64 // user or organization; 0 for instance and repository runners
	repoID      int64 // 0 unless a repository runner
	labels      []string
	version     string
	created     time.Time
	lastOnline  time.Time // any runner call; zero until the runner first calls in
	lastActive  time.Time // UpdateTask or UpdateLog only (routers/api/actions/runner/interceptor.go)
	// tasksTaken counts tasks ever given to the runner: an ephemeral runner gets at most one.
	tasksTaken int
	// lastHandle is the handle of the runner's last FetchSingleTask, shown in State only: Forgejo
	// keeps no binding between a runner and a handle.
	lastHandle string
}

// run is one workflow run: what Forgejo inserts when an event triggers a workflow
// (services/actions/notifier_helper.go handleWorkflows, models/actions/run.go InsertRun).
type run struct {
	id          int64
	index       int64 // per repository (action_run_index)
	repo        *repository
	title       string
	workflowID  string
	ref         string
	commitSHA   string
	event       string // the triggering webhook event; always push here
	payload     string // the triggering event's payload, compact JSON (json.Marshal in handleWorkflows)
	concurrency string // lower-cased workflow concurrency group; "" for none
	trigger     *owner
	status      JobStatus
	created     time.Time
	started     time.Time
	stopped     time.Time
	jobs        []*job
	// hiddenUntil is set while a seeded delivery race holds the run's jobs back: until then the
	// run is not yet inserted as far as the jobs list and runners can tell.
	hiddenUntil time.Time
}

type job struct {
	id      int64
	run     *run
	key     string // the job's id in the workflow, which needs: refers to; also its name here
	attempt int64
	handle  string
	repo    *repository
	name    string
	needs   []string
	runsOn  []string
	taskID  int64
	status  JobStatus
	created time.Time
	updated time.Time // Forgejo picks waiting jobs by updated, then id (models/actions/task.go)
	started time.Time
	stopped time.Time
	// openIDConnect is the job's evaluated enable-openid-connect (oidc.go).
	openIDConnect bool
}

func (j *job) runID() int64 { return j.run.id }

// listed reports whether the job's run is visible yet (see run.hiddenUntil).
func (j *job) listed() bool { return j.run.hiddenUntil.IsZero() }

type task struct {
	id         int64
	jobID      int64
	runnerID   int64
	status     JobStatus
	logLines   int64
	outputs    map[string]string
	started    time.Time
	stopped    time.Time
	tokenHash  string
	requestKey string
	// proto is what FetchTask answered, kept to answer a repeated request key.
	proto *runnerv1.Task
}

// labelName returns the name part of a runner label "name:scheme:arg". forgejo-runner declares
// names only; the simulator also accepts full labels from a runner and compares their names.
func labelName(label string) string {
	name, _, _ := strings.Cut(label, ":")
	return name
}

// runnerCanRun is Forgejo's ActionRunJob.ItRunsOn (models/actions/run_job.go): a job runs on a
// runner only if every label of its runs-on is among the runner's labels; a runner without
// labels, or a job with an empty runs-on, never matches.
func runnerCanRun(runnerLabels, runsOn []string) bool {
	if len(runnerLabels) == 0 || len(runsOn) == 0 {
		return false
	}
	names := make([]string, 0, len(runnerLabels))
	for _, l := range runnerLabels {
		names = append(names, labelName(l))
	}
	for _, want := range runsOn {
		if !slices.Contains(names, want) {
			return false
		}
	}
	return true
}

// runnerReachesJob reports whether the runner's scope covers the job's repository: an instance
// runner takes any job, an owner runner the jobs of its owner's repositories, a repository runner
// the jobs of its repository (models/actions/task.go GetAvailableJobsForRunner).
func runnerReachesJob(r *runner, j *job) bool {
	switch {
	case r.repoID != 0:
		return r.repoID == j.repo.id
	case r.ownerID != 0:
		return r.ownerID == j.repo.owner.id
	default:
		return true
	}
}

// runnerStatusLocked is Forgejo's ActionRunner.Status (models/actions/runner.go): offline when the
// last call of any kind is more than the offline timeout ago, idle when the last task report
// (UpdateTask or UpdateLog) is more than 10 s ago, active otherwise. Being handed a task is not a
// report, so a runner that has just fetched its task still reads idle.
func (s *Server) runnerStatusLocked(r *runner) string {
	now := s.now()
	switch {
	case r.lastOnline.IsZero() || now.Sub(r.lastOnline) > s.opts.RunnerOfflineAfter:
		return "offline"
	case r.lastActive.IsZero() || now.Sub(r.lastActive) > runnerIdleAfter:
		return "idle"
	default:
		return "active"
	}
}

func sortedKeys[V any](m map[int64]V) []int64 {
	keys := make([]int64, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
