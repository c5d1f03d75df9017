// Package journal keeps the record of what the operator did, for after the short-lived things
// it did it to are gone. A runner's every change of phase is one Event, written to an
// append-only JSON-lines file, to the structured log, to Kubernetes Events (aggregated per pool
// so a burst does not flood etcd) and to the metrics derived from it. Every action on Forgejo
// registrations, pods and pools goes to the tamper-evident audit log.
//
// Events are written ahead: a controller records a transition before it commits it to the
// Runner's status. A transition retried after a failed update or a restart carries the same id
// and is written once; one committed is never missing from the file.
package journal

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
)

// PhaseDeleted is the last phase of every runner in the event log: its Runner object is gone,
// whether it ended by itself (reason Retired) or was deleted before (ScaledDown, JobGone, ...).
const PhaseDeleted = "Deleted"

// Names of the durations an Event may carry, in seconds.
const (
	// DurationRegistration: registering with Forgejo and storing the token (to Registered).
	DurationRegistration = "registration"
	// DurationStartup: pod created to runner container running (to Idle).
	DurationStartup = "startup"
	// DurationQueueWait: job seen waiting to job seen running (to Busy).
	DurationQueueWait = "queueWait"
	// DurationExecution: job or runner running to runner ended (to Finished or Failed).
	DurationExecution = "execution"
	// DurationLifetime: Runner created to Runner deleted (to Deleted).
	DurationLifetime = "lifetime"
)

// Event is one transition of one runner: the line the event log holds. It carries names and
// ids only, never a token.
type Event struct {
	// ID is the same for a retried transition, so it is written once.
	ID         string             `json:"id"`
	Time       time.Time          `json:"time"`
	Namespace  string             `json:"namespace"`
	Pool       string             `json:"pool"`
	Runner     string             `json:"runner"`
	RunnerUID  types.UID          `json:"runnerUID"`
	UUID       string             `json:"uuid,omitempty"`
	JobID      int64              `json:"jobID,omitempty"`
	Handle     string             `json:"handle,omitempty"`
	Repository string             `json:"repository,omitempty"`
	RepoID     int64              `json:"repoID,omitempty"`
	From       string             `json:"from"`
	To         string             `json:"to"`
	Reason     string             `json:"reason"`
	Message    string             `json:"message,omitempty"`
	Outcome    string             `json:"outcome,omitempty"`
	Durations  map[string]float64 `json:"durations,omitempty"`
}

// Transition describes the runner's move from its current phase to `to`. The caller adds
// durations and the outcome, records it, and then commits the new phase.
func Transition(rn *v1alpha1.Runner, to, reason, message string) Event {
	from := string(rn.Status.Phase)
	if from == "" && to != string(v1alpha1.RunnerPending) {
		from = string(v1alpha1.RunnerPending)
	}
	ev := Event{
		ID:        fmt.Sprintf("%s:%s", rn.UID, to),
		Namespace: rn.Namespace,
		Pool:      rn.Spec.PoolName,
		Runner:    rn.Name,
		RunnerUID: rn.UID,
		From:      from,
		To:        to,
		Reason:    reason,
		Message:   message,
		Outcome:   string(rn.Status.Outcome),
	}
	if reg := rn.Status.Registration; reg != nil {
		ev.UUID = reg.UUID
		if to == string(v1alpha1.RunnerRegistered) {
			// A runner whose token was lost registers again, under a new uuid.
			ev.ID += ":" + reg.UUID
		}
	}
	if job := rn.Spec.Job; job != nil {
		ev.JobID, ev.Handle, ev.Repository, ev.RepoID = job.ID, job.Handle, job.Repository, job.RepoID
	}
	return ev
}

// WithDuration adds a duration, leaving out what was not measured (zero or negative).
func (e Event) WithDuration(name string, d time.Duration) Event {
	if d <= 0 {
		return e
	}
	durations := make(map[string]float64, len(e.Durations)+1)
	for k, v := range e.Durations {
		durations[k] = v
	}
	durations[name] = d.Seconds()
	e.Durations = durations
	return e
}

// Duration returns a duration the event carries.
func (e Event) Duration(name string) (time.Duration, bool) {
	s, ok := e.Durations[name]
	return time.Duration(s * float64(time.Second)), ok
}

// Deleted is the last event of a runner: its Runner object is deleted, for reason. A runner
// deleted before it ended has the outcome Deleted.
func Deleted(rn *v1alpha1.Runner, reason, message string, now time.Time) Event {
	ev := Transition(rn, PhaseDeleted, reason, message).
		WithDuration(DurationLifetime, now.Sub(rn.CreationTimestamp.Time))
	if ev.Outcome == "" {
		ev.Outcome = string(v1alpha1.OutcomeDeleted)
	}
	return ev
}

// Created is a runner's first event: its pool created it, for a waiting job or to keep minIdle
// warm runners, as its spec's trigger says.
func Created(rn *v1alpha1.Runner) Event {
	reason := "JobWaiting"
	if rn.Spec.Job == nil {
		reason = "MinIdle"
	}
	return Transition(rn, string(v1alpha1.RunnerPending), reason, rn.Spec.Trigger)
}
