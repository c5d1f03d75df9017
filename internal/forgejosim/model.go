package forgejosim

import (
	"slices"
	"strings"
	"time"

	runnerv1 "gitea.dev/actions-proto-go/runner/v1"
)

// JobStatus is the status of a job attempt, spelled as Forgejo's actions Status.String().
type JobStatus string

// Job statuses. Blocked and skipped exist in Forgejo; the simulator only reaches them through
// CompleteJob.
const (
	JobWaiting   JobStatus = "waiting"
	JobRunning   JobStatus = "running"
	JobSuccess   JobStatus = "success"
	JobFailure   JobStatus = "failure"
	JobCancelled JobStatus = "cancelled"
	JobSkipped   JobStatus = "skipped"
	JobBlocked   JobStatus = "blocked"
)

// Done reports whether the status is final.
func (st JobStatus) Done() bool {
	switch st {
	case JobSuccess, JobFailure, JobCancelled, JobSkipped:
		return true
	}
	return false
}

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
	lastOnline  time.Time // zero until the runner first calls in
	// tasksTaken counts tasks ever given to the runner: an ephemeral runner gets at most one.
	tasksTaken int
	// boundHandle is set by FetchSingleTask: from then on the runner may only take that attempt.
	boundHandle string
	// lastFetchKey and lastFetchTaskID make a repeated x-runner-request-key answer the same task.
	lastFetchKey    string
	lastFetchTaskID int64
}

type job struct {
	id      int64
	runID   int64
	attempt int64
	handle  string
	repo    *repository
	name    string
	needs   []string
	runsOn  []string
	taskID  int64
	status  JobStatus
	created time.Time
	started time.Time
	stopped time.Time
}

type task struct {
	id        int64
	jobID     int64
	runnerID  int64
	status    JobStatus
	logLines  int64
	outputs   map[string]string
	started   time.Time
	stopped   time.Time
	tokenHash string
	// proto is what FetchTask answered, kept to answer a repeated request key identically.
	proto *runnerv1.Task
}

// labelName returns the name part of a runner label "name:scheme:arg".
func labelName(label string) string {
	name, _, _ := strings.Cut(label, ":")
	return name
}

// runnerCanRun reports whether a runner with these labels may take a job with runsOn: every
// label of runs-on must be among the runner's label names.
func runnerCanRun(runnerLabels, runsOn []string) bool {
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
// the jobs of its repository.
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

// online reports whether the runner called in recently enough to count as connected.
func (s *Server) runnerOnlineLocked(r *runner) bool {
	return !r.lastOnline.IsZero() && s.now().Sub(r.lastOnline) < s.opts.RunnerOfflineAfter
}

func (s *Server) runnerBusyLocked(r *runner) bool {
	for _, t := range s.tasks {
		if t.runnerID == r.id && t.status == JobRunning {
			return true
		}
	}
	return false
}

// runnerStatusLocked is Forgejo's runner status enum: offline, idle or active.
func (s *Server) runnerStatusLocked(r *runner) string {
	switch {
	case !s.runnerOnlineLocked(r):
		return "offline"
	case s.runnerBusyLocked(r):
		return "active"
	default:
		return "idle"
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
