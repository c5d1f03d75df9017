package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PoolLabel is set on every Runner (and its pod or Secret) to the name of its RunnerPool, so
// `kubectl get runners -l pool=NAME` lists a pool's live runners.
const PoolLabel = "pool"

// JobRef identifies the Forgejo job attempt a runner was created for.
type JobRef struct {
	// id of the job in Forgejo.
	ID int64 `json:"id"`
	// attempt number of the job.
	// +optional
	Attempt int64 `json:"attempt,omitempty"`
	// handle of the job attempt: the runner is started with `one-job --handle` and can take
	// no other job.
	// +kubebuilder:validation:MaxLength=255
	// +optional
	Handle string `json:"handle,omitempty"`
	// repository the job belongs to, as owner/repo, when a webhook named it.
	// +kubebuilder:validation:MaxLength=256
	// +optional
	Repository string `json:"repository,omitempty"`
	// repoID is the Forgejo id of the job's repository.
	// +optional
	RepoID int64 `json:"repoID,omitempty"`
	// runsOn is the job's runs-on labels.
	// +optional
	// +listType=atomic
	RunsOn []string `json:"runsOn,omitempty"`
}

// RunnerSpec is one runner: one Forgejo registration and the pod or VM that runs it. Runners are
// created by their RunnerPool; the spec does not change after creation.
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec of a Runner is immutable"
type RunnerSpec struct {
	// poolName is the RunnerPool that owns this runner.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	PoolName string `json:"poolName"`

	// mode copies the pool's mode at creation: an ephemeral runner takes one job.
	Mode Mode `json:"mode"`

	// job is the job attempt this runner was created for. Empty for a warm idle runner or a
	// persistent runner.
	// +optional
	Job *JobRef `json:"job,omitempty"`

	// trigger says what made the pool create this runner: a job seen by a poll or a webhook
	// delivery, or the pool's minIdle. The audit log names it as the trigger of the runner's
	// registration and pod; being part of the immutable spec, it cannot be rewritten later.
	// +kubebuilder:validation:MaxLength=512
	// +optional
	Trigger string `json:"trigger,omitempty"`
}

// RunnerPhase is where a runner is in its life.
// +kubebuilder:validation:Enum=Pending;Registered;Starting;Idle;Busy;Finished;Failed;Deregistering
type RunnerPhase string

const (
	// RunnerPending: created, not yet registered with Forgejo.
	RunnerPending RunnerPhase = "Pending"
	// RunnerRegistered: registered, credentials written, no pod or VM yet.
	RunnerRegistered RunnerPhase = "Registered"
	// RunnerStarting: the pod or VM exists and is starting.
	RunnerStarting RunnerPhase = "Starting"
	// RunnerIdle: the runner process is up and waiting for a job.
	RunnerIdle RunnerPhase = "Idle"
	// RunnerBusy: the runner is running a job.
	RunnerBusy RunnerPhase = "Busy"
	// RunnerFinished: the runner process ended; cleanup follows.
	RunnerFinished RunnerPhase = "Finished"
	// RunnerFailed: the runner could not be brought up or its process failed.
	RunnerFailed RunnerPhase = "Failed"
	// RunnerDeregistering: the registration is being removed from Forgejo.
	RunnerDeregistering RunnerPhase = "Deregistering"
)

// Registration is the public part of a runner's Forgejo registration. Its token lives only in
// the runner's Secret.
type Registration struct {
	// id of the runner in Forgejo.
	ID int64 `json:"id"`
	// uuid of the runner in Forgejo.
	UUID string `json:"uuid"`
	// name the runner was registered under.
	Name string `json:"name"`
	// registeredAt is when the registration was created.
	// +optional
	RegisteredAt *metav1.Time `json:"registeredAt,omitempty"`
}

// RunnerStatus is the observed state of one runner.
type RunnerStatus struct {
	// observedGeneration is the spec generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// phase is where the runner is in its life.
	// +optional
	Phase RunnerPhase `json:"phase,omitempty"`

	// conditions describe the runner's registration and workload.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// registration is the runner's Forgejo registration, once made.
	// +optional
	Registration *Registration `json:"registration,omitempty"`

	// credentialsSecret names the Secret holding the runner's token.
	// +optional
	CredentialsSecret string `json:"credentialsSecret,omitempty"`

	// workload names the pod (kubernetes backend) or VM (remote backend) running the runner.
	// +optional
	Workload string `json:"workload,omitempty"`

	// startedAt is when the runner process started.
	// +optional
	StartedAt *metav1.Time `json:"startedAt,omitempty"`

	// finishedAt is when the runner process ended.
	// +optional
	FinishedAt *metav1.Time `json:"finishedAt,omitempty"`

	// exitCode of the runner process: 0 ran a task, 2 received none, 1 failed.
	// +optional
	ExitCode *int32 `json:"exitCode,omitempty"`

	// outcome is how the runner ended, once it has.
	// +optional
	Outcome RunnerOutcome `json:"outcome,omitempty"`

	// jobResult is the result Forgejo reported for the runner's job (success, failure,
	// cancelled, skipped), when a webhook told it.
	// +optional
	JobResult string `json:"jobResult,omitempty"`

	// stop is set when the operator stops the runner before it ended by itself, before its
	// pod is deleted: forgejo-runner stopped while it waits for a task exits 0, as one that ran
	// a task does, so the end that follows is recorded as this stop, not as a job run.
	// +optional
	Stop *RunnerStop `json:"stop,omitempty"`
}

// RunnerStop is why and when the operator stopped a runner.
type RunnerStop struct {
	// reason is a short CamelCase cause, e.g. RegistrationGone.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	Reason string `json:"reason"`
	// message explains the stop.
	// +kubebuilder:validation:MaxLength=1024
	// +optional
	Message string `json:"message,omitempty"`
	// outcome the runner ends with unless it turns out to have run a task.
	Outcome RunnerOutcome `json:"outcome"`
	// requestedAt is when the operator decided to stop the runner.
	RequestedAt metav1.Time `json:"requestedAt"`
}

// Runner is one Forgejo runner managed by a RunnerPool.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=fjr,categories=forgejo
// +kubebuilder:printcolumn:name="Pool",type=string,JSONPath=`.spec.poolName`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Job",type=integer,JSONPath=`.spec.job.id`
// +kubebuilder:printcolumn:name="Workload",type=string,JSONPath=`.status.workload`
// +kubebuilder:printcolumn:name="UUID",type=string,JSONPath=`.status.registration.uuid`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Runner struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   RunnerSpec   `json:"spec,omitempty"`
	Status RunnerStatus `json:"status,omitempty"`
}

// RunnerList is a list of Runners.
// +kubebuilder:object:root=true
type RunnerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Runner `json:"items"`
}
