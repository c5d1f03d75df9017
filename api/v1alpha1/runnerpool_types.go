package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// DefaultRunnerImage is the forgejo-runner release runner pods use unless a pool names another.
// 12.8.2 is the first release whose `one-job` takes `--handle` and `--token-url` and exits 2
// when no task was received, which the ephemeral flow depends on.
const DefaultRunnerImage = "data.forgejo.org/forgejo/runner:12.8.2"

// DefaultDinDImage is the Docker daemon image of a Privileged DinD sidecar.
const DefaultDinDImage = "docker.io/library/docker:28.5-dind"

// DefaultDinDRootlessImage is the Docker daemon image of a Rootless DinD sidecar: the same
// release, with rootlesskit and a non-root user (uid 1000) prepared for it.
const DefaultDinDRootlessImage = "docker.io/library/docker:28.5-dind-rootless"

// Scope says which part of Forgejo a pool's runners serve, and so which API prefix and token
// permission registration uses.
// +kubebuilder:validation:Enum=global;organization;repository;user
type Scope string

const (
	// ScopeGlobal registers instance-wide runners (needs a token with write:admin).
	ScopeGlobal Scope = "global"
	// ScopeOrganization registers runners for one organization (write:organization).
	ScopeOrganization Scope = "organization"
	// ScopeRepository registers runners for one repository (write:repository).
	ScopeRepository Scope = "repository"
	// ScopeUser registers runners for the user who owns the token (write:user).
	ScopeUser Scope = "user"
)

// Backend selects where a pool's runners execute.
// +kubebuilder:validation:Enum=kubernetes;remote
type Backend string

const (
	// BackendKubernetes runs each runner as a pod in the pool's namespace.
	BackendKubernetes Backend = "kubernetes"
	// BackendRemote runs each runner in a microVM created by a provisioner on a VM host.
	BackendRemote Backend = "remote"
)

// Mode selects the runner lifecycle.
// +kubebuilder:validation:Enum=ephemeral;persistent
type Mode string

const (
	// ModeEphemeral creates one runner per queued job; it runs that job and is destroyed.
	ModeEphemeral Mode = "ephemeral"
	// ModePersistent keeps a fixed number of long-lived runners that take job after job.
	ModePersistent Mode = "persistent"
)

// SecretKeySelector names one key of a Secret in the pool's namespace.
type SecretKeySelector struct {
	// name of the Secret, in the same namespace as the RunnerPool.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// key within the Secret's data.
	// +kubebuilder:default=token
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Key string `json:"key,omitempty"`
}

// ForgejoConnection says which Forgejo to talk to, for which scope, and with which credentials.
// +kubebuilder:validation:XValidation:rule="self.scope != 'repository' || (has(self.repository) && self.repository.matches('^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$'))",message="spec.forgejo.repository must be set in owner/repo form when scope is repository",fieldPath=".repository"
// +kubebuilder:validation:XValidation:rule="!has(self.repository) || self.scope == 'repository'",message="spec.forgejo.repository is only used with scope: repository",fieldPath=".repository"
// +kubebuilder:validation:XValidation:rule="self.scope != 'organization' || has(self.organization)",message="spec.forgejo.organization must be set when scope is organization",fieldPath=".organization"
// +kubebuilder:validation:XValidation:rule="!has(self.organization) || self.scope == 'organization'",message="spec.forgejo.organization is only used with scope: organization",fieldPath=".organization"
type ForgejoConnection struct {
	// url is the Forgejo instance's base URL, e.g. https://forgejo.example.com. Forgejo 15 or
	// newer is required: runners are registered through its HTTP API.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.matches('^https?://[^/?#\\\\s]+(/[^?#\\\\s]*)?$')",message="spec.forgejo.url must be an http:// or https:// URL without query or fragment"
	URL string `json:"url"`

	// scope is where the pool's runners are registered: global (the whole instance),
	// organization, repository, or user (the token owner's own repositories).
	Scope Scope `json:"scope"`

	// organization is the organization name; required when scope is organization.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +optional
	Organization string `json:"organization,omitempty"`

	// repository is the repository as owner/repo; required when scope is repository.
	// +kubebuilder:validation:MaxLength=512
	// +optional
	Repository string `json:"repository,omitempty"`

	// tokenSecretRef points at the Forgejo API token the operator registers and removes
	// runners with. It needs write:admin (global), write:organization, write:repository or
	// write:user to match the scope. The token stays with the operator: it never enters a
	// runner pod or VM.
	TokenSecretRef SecretKeySelector `json:"tokenSecretRef"`

	// webhookSecretRef points at the secret Forgejo signs Actions job webhooks with. When set,
	// deliveries for this pool are accepted only with a valid X-Forgejo-Signature.
	// +optional
	WebhookSecretRef *SecretKeySelector `json:"webhookSecretRef,omitempty"`
}

// Scaling bounds how many runners a pool keeps.
// +kubebuilder:validation:XValidation:rule="!has(self.minIdle) || !has(self.maxRunners) || self.minIdle <= self.maxRunners",message="spec.scaling.minIdle must not exceed spec.scaling.maxRunners",fieldPath=".minIdle"
// +kubebuilder:validation:XValidation:rule="!has(self.replicas) || !has(self.maxRunners) || self.replicas <= self.maxRunners",message="spec.scaling.replicas must not exceed spec.scaling.maxRunners",fieldPath=".replicas"
type Scaling struct {
	// minIdle is how many registered runners without a job the pool keeps warm (ephemeral
	// mode), so a job that arrives without a webhook still starts at once.
	// +kubebuilder:default=0
	// +kubebuilder:validation:Minimum=0
	// +optional
	MinIdle int32 `json:"minIdle,omitempty"`

	// maxRunners caps the runners the pool has at any one time, busy or idle.
	// +kubebuilder:default=10
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	// +optional
	MaxRunners int32 `json:"maxRunners,omitempty"`

	// replicas is how many long-lived runners a persistent pool keeps. Ignored in ephemeral
	// mode. Defaults to 1 in persistent mode.
	// +kubebuilder:validation:Minimum=0
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// scaleDownDelay is how long an idle runner above minIdle lingers before it is removed.
	// +kubebuilder:default="5m"
	// +optional
	ScaleDownDelay *metav1.Duration `json:"scaleDownDelay,omitempty"`
}

// PodTemplateOverrides are extra pod settings applied to every runner pod.
type PodTemplateOverrides struct {
	// labels are added to every runner pod.
	// +optional
	Labels map[string]string `json:"labels,omitempty"`

	// annotations are added to every runner pod.
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`

	// priorityClassName for runner pods.
	// +optional
	PriorityClassName string `json:"priorityClassName,omitempty"`

	// runtimeClassName for runner pods, e.g. a sandboxed runtime such as gVisor or Kata. A
	// sandbox is the way to run Privileged DinD without handing jobs the node's kernel: the
	// privileged container is then privileged inside the sandbox only.
	// +optional
	RuntimeClassName *string `json:"runtimeClassName,omitempty"`

	// imagePullSecrets for the runner and DinD images.
	// +optional
	// +listType=atomic
	ImagePullSecrets []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`

	// securityContext for the runner pod.
	// +optional
	SecurityContext *corev1.PodSecurityContext `json:"securityContext,omitempty"`

	// terminationGracePeriodSeconds gives a running job this long to stop when its pod is
	// deleted.
	// +kubebuilder:validation:Minimum=0
	// +optional
	TerminationGracePeriodSeconds *int64 `json:"terminationGracePeriodSeconds,omitempty"`

	// volumes are added to the runner pod; mount them with spec.runner.volumeMounts.
	// +optional
	// +listType=atomic
	Volumes []corev1.Volume `json:"volumes,omitempty"`
}

// RunnerTemplate describes the forgejo-runner process of every runner in a pool.
type RunnerTemplate struct {
	// image is the forgejo-runner image. It must be release 12.8.2 or newer.
	// +kubebuilder:default="data.forgejo.org/forgejo/runner:12.8.2"
	// +kubebuilder:validation:MinLength=1
	// +optional
	Image string `json:"image,omitempty"`

	// imagePullPolicy for the runner image.
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	// +optional
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`

	// capacity is how many jobs one persistent runner runs at once. Ephemeral runners always
	// run exactly one.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=64
	// +optional
	Capacity int32 `json:"capacity,omitempty"`

	// resources for the runner container.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`

	// env is added to the runner container's environment.
	// +optional
	// +listType=map
	// +listMapKey=name
	Env []corev1.EnvVar `json:"env,omitempty"`

	// volumeMounts are added to the runner container.
	// +optional
	// +listType=atomic
	VolumeMounts []corev1.VolumeMount `json:"volumeMounts,omitempty"`

	// nodeSelector for runner pods.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// tolerations for runner pods.
	// +optional
	// +listType=atomic
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// affinity for runner pods.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`

	// serviceAccountName runner pods run as. Empty uses the namespace's default account.
	// +optional
	ServiceAccountName string `json:"serviceAccountName,omitempty"`

	// automountServiceAccountToken mounts a Kubernetes API token into runner pods. Off by
	// default: jobs run untrusted code and should not reach the cluster's API.
	// +kubebuilder:default=false
	// +optional
	AutomountServiceAccountToken *bool `json:"automountServiceAccountToken,omitempty"`

	// podTemplate holds further pod settings applied to every runner pod.
	// +optional
	PodTemplate *PodTemplateOverrides `json:"podTemplate,omitempty"`
}

// DinDStorage is where the Docker daemon keeps images and containers.
type DinDStorage struct {
	// sizeLimit caps the daemon's data volume.
	// +optional
	SizeLimit *resource.Quantity `json:"sizeLimit,omitempty"`

	// storageClassName, when set, backs the data volume with a generic ephemeral
	// PersistentVolumeClaim of this class (sized by sizeLimit) instead of an emptyDir.
	// +optional
	StorageClassName *string `json:"storageClassName,omitempty"`
}

// DinDMode says whether runner pods get a Docker daemon, and with how much privilege.
// +kubebuilder:validation:Enum=None;Rootless;Privileged
type DinDMode string

const (
	// DinDNone runs no Docker daemon: the pod is the runner container alone and meets the
	// Pod Security "restricted" profile. Jobs that use the docker label scheme need a daemon
	// from elsewhere (DOCKER_HOST in spec.runner.env).
	DinDNone DinDMode = "None"
	// DinDRootless runs a rootless Docker daemon (uid 1000, in a user namespace of its own)
	// beside the runner. It is not privileged, but needs seccomp and AppArmor unconfined, an
	// unmasked /proc and a pod user namespace (hostUsers: false); see docs/security.md.
	DinDRootless DinDMode = "Rootless"
	// DinDPrivileged runs the Docker daemon as root in a privileged container: a job can
	// become root on the node. The operator starts it only where the cluster admin allows it
	// (the namespace label AllowPrivilegedDinDLabel, or the operator's --allow-privileged-dind).
	DinDPrivileged DinDMode = "Privileged"
)

// AllowPrivilegedDinDLabel is the namespace label that, set to "true", lets the RunnerPools in
// the namespace run Privileged DinD. Only whoever may label namespaces (normally the cluster admin) can set it.
const AllowPrivilegedDinDLabel = "forgejo.brooktrails.org/allow-privileged-dind"

// DinD configures the Docker-in-Docker sidecar that runs job containers.
// +kubebuilder:validation:XValidation:rule="!has(self.storage) || !has(self.storage.storageClassName) || has(self.storage.sizeLimit)",message="spec.dind.storage.sizeLimit is required when storageClassName is set",fieldPath=".storage.sizeLimit"
// +kubebuilder:validation:XValidation:rule="!has(self.enabled) || !has(self.mode) || self.enabled == (self.mode != 'None')",message="spec.dind.enabled is deprecated and contradicts spec.dind.mode: remove enabled and keep mode (enabled: false meant None, enabled: true meant Privileged)",fieldPath=".enabled"
type DinD struct {
	// mode is None (no Docker daemon; the pod meets Pod Security "restricted"), Rootless (a
	// rootless daemon; needs user namespaces and unconfined seccomp/AppArmor, see
	// docs/security.md) or Privileged (a root daemon in a privileged container, which any job
	// can use to become root on the node; refused unless the cluster admin allows it). Unset
	// is None, or what the deprecated enabled field says.
	// +optional
	Mode DinDMode `json:"mode,omitempty"`

	// enabled is deprecated: use mode. true means mode Privileged, false means None. It may
	// be set together with mode only when the two agree.
	// +optional
	Enabled *bool `json:"enabled,omitempty"`

	// image of the Docker daemon. Defaults to docker:28.5-dind for Privileged and
	// docker:28.5-dind-rootless for Rootless.
	// +kubebuilder:validation:MinLength=1
	// +optional
	Image string `json:"image,omitempty"`

	// resources for the Docker daemon container.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`

	// storage for the daemon's images and containers. Defaults to an emptyDir, so nothing
	// survives from one runner to the next.
	// +optional
	Storage *DinDStorage `json:"storage,omitempty"`
}

// EffectiveMode is the mode the pool's pods get: mode when set, else what the deprecated
// enabled says, else None. Only the kubernetes backend runs a DinD sidecar; callers check the
// backend.
func (d *DinD) EffectiveMode() DinDMode {
	switch {
	case d.Mode != "":
		return d.Mode
	case d.Enabled == nil:
		return DinDNone
	case *d.Enabled:
		return DinDPrivileged
	default:
		return DinDNone
	}
}

// MachineShape is the size and boot image of each runner VM.
type MachineShape struct {
	// vcpus of each VM.
	// +kubebuilder:default=2
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=128
	// +optional
	VCPUs int32 `json:"vcpus,omitempty"`

	// memoryMiB of each VM.
	// +kubebuilder:default=2048
	// +kubebuilder:validation:Minimum=128
	// +optional
	MemoryMiB int32 `json:"memoryMiB,omitempty"`

	// kernel is the provisioner-side name or path of the guest kernel.
	// +optional
	Kernel string `json:"kernel,omitempty"`

	// rootfs is the provisioner-side name or path of the guest root filesystem image.
	// +optional
	RootFS string `json:"rootfs,omitempty"`
}

// RemoteBackend says which provisioners create a pool's runner VMs and how to reach them.
type RemoteBackend struct {
	// endpoints are provisioner addresses as host:port. Runners are spread across them.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=255
	// +kubebuilder:validation:XValidation:rule="self.all(e, e.matches('^[A-Za-z0-9.:\\\\[\\\\]-]+:[0-9]{1,5}$'))",message="spec.remote.endpoints must be host:port addresses"
	// +listType=set
	Endpoints []string `json:"endpoints"`

	// clientTLSSecretRef names a kubernetes.io/tls Secret (tls.crt, tls.key and ca.crt) the
	// operator presents to provisioners. Provisioners speak only mutual TLS.
	ClientTLSSecretRef corev1.LocalObjectReference `json:"clientTLSSecretRef"`

	// machine is the shape of each runner VM.
	// +optional
	Machine MachineShape `json:"machine,omitempty"`
}

// History controls how much of the destroyed runners' record the pool's status keeps.
type History struct {
	// limit is how many destroyed runners status.recentRunners keeps.
	// +kubebuilder:default=20
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	// +optional
	Limit *int32 `json:"limit,omitempty"`
}

// Failures bounds what a pool spends on jobs whose runners fail, and how long a runner may take
// to start.
type Failures struct {
	// maxPerJob is how many of a job's runners may fail (end without running it, or miss the
	// start deadline) before the pool makes no more for it: the job is then left waiting, the
	// pool's JobsFailing condition names it, and a Warning Event says so. Each retry waits 5 s,
	// doubling, up to 5 minutes.
	// +kubebuilder:default=5
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +optional
	MaxPerJob int32 `json:"maxPerJob,omitempty"`
	// startDeadline is how long a runner may take, from its creation, to have its runner
	// container running; one that does not (an image that cannot be pulled, a pod no node
	// takes, a registration Forgejo refuses) is ended as Failed with the reason.
	// +kubebuilder:default="10m"
	// +optional
	StartDeadline *metav1.Duration `json:"startDeadline,omitempty"`
}

// RunnerPoolSpec is the desired state of a pool of Forgejo runners.
// +kubebuilder:validation:XValidation:rule="self.backend != 'remote' || has(self.remote)",message="spec.remote is required when backend is remote",fieldPath=".remote"
// +kubebuilder:validation:XValidation:rule="self.backend == 'remote' || !has(self.remote)",message="spec.remote is only used with backend: remote",fieldPath=".remote"
// +kubebuilder:validation:XValidation:rule="self.backend == 'remote' || !self.labels.exists(l, l.matches('^[^:]+:docker(:|$)')) || (has(self.dind) && (has(self.dind.mode) ? self.dind.mode != 'None' : (has(self.dind.enabled) && self.dind.enabled)))",message="spec.labels with the docker scheme run their jobs in containers and need a Docker daemon: set spec.dind.mode to Rootless or Privileged, or give the labels the host scheme (name:host)",fieldPath=".dind"
type RunnerPoolSpec struct {
	// forgejo is the instance and scope the pool's runners are registered with.
	Forgejo ForgejoConnection `json:"forgejo"`

	// backend is where runners execute: kubernetes (pods in this namespace) or remote
	// (microVMs created by provisioners).
	// +kubebuilder:default=kubernetes
	// +optional
	Backend Backend `json:"backend,omitempty"`

	// mode is ephemeral (a fresh runner per queued job, never reused) or persistent
	// (long-lived runners that take job after job).
	// +kubebuilder:default=ephemeral
	// +optional
	Mode Mode `json:"mode,omitempty"`

	// labels are the runner's labels as name[:scheme[:arg]], scheme one of docker, host or
	// lxc, e.g. "docker:docker://node:22-bookworm". A job goes to this pool when every label
	// in its runs-on is among these label names.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="self.all(l, l.matches('^[^:\\\\s]+(:(docker|host|lxc)(:\\\\S*)?)?$'))",message="each of spec.labels must be name[:scheme[:arg]] with scheme docker, host or lxc"
	// +listType=set
	Labels []string `json:"labels"`

	// scaling bounds the number of runners.
	// +kubebuilder:default={}
	// +optional
	Scaling Scaling `json:"scaling"`

	// runner describes the forgejo-runner process.
	// +kubebuilder:default={}
	// +optional
	Runner RunnerTemplate `json:"runner"`

	// dind configures the Docker-in-Docker sidecar (kubernetes backend). By default there is
	// none: set mode to Rootless or Privileged for jobs that run containers.
	// +kubebuilder:default={}
	// +optional
	DinD DinD `json:"dind"`

	// remote configures the provisioners; required when backend is remote.
	// +optional
	Remote *RemoteBackend `json:"remote,omitempty"`

	// history controls the record of destroyed runners kept in status.
	// +kubebuilder:default={}
	// +optional
	History History `json:"history"`

	// failures bounds the retries of a job whose runners fail and the time a runner may take
	// to start.
	// +kubebuilder:default={}
	// +optional
	Failures Failures `json:"failures"`
}

// RunnerOutcome is how a runner's life ended.
// +kubebuilder:validation:Enum=Succeeded;Failed;NoJob;Error;Deleted;Stopped;RegistrationGone
type RunnerOutcome string

const (
	// OutcomeSucceeded: the runner took a job and exited cleanly (the job itself may have
	// failed; that is the job's result, not the runner's).
	OutcomeSucceeded RunnerOutcome = "Succeeded"
	// OutcomeFailed: the runner process failed.
	OutcomeFailed RunnerOutcome = "Failed"
	// OutcomeNoJob: the runner ended without receiving a task.
	OutcomeNoJob RunnerOutcome = "NoJob"
	// OutcomeError: the operator could not bring the runner up.
	OutcomeError RunnerOutcome = "Error"
	// OutcomeDeleted: the runner was removed before it finished, e.g. by scale-down.
	OutcomeDeleted RunnerOutcome = "Deleted"
	// OutcomeStopped: the runner process was stopped (SIGTERM) while it waited for a task,
	// by the operator or by whoever deleted its pod, and ran none. forgejo-runner exits 0
	// then, as after a task: its registration, which Forgejo deletes once an ephemeral
	// runner's task ends, was still there.
	OutcomeStopped RunnerOutcome = "Stopped"
	// OutcomeRegistrationGone: the runner's Forgejo registration was deleted (by an admin, or
	// Forgejo's cleanup) while the runner waited for a task; forgejo-runner would wait for
	// ever, so the operator stopped it.
	OutcomeRegistrationGone RunnerOutcome = "RegistrationGone"
)

// RunnerRecord is what the pool remembers of a runner after it is gone.
type RunnerRecord struct {
	// name of the Runner object.
	Name string `json:"name"`
	// uid of the Runner object: a job's retries reuse the name, never the uid.
	// +optional
	UID types.UID `json:"uid,omitempty"`
	// uuid of the Forgejo registration.
	// +optional
	UUID string `json:"uuid,omitempty"`
	// jobID of the job the runner was created for or ran.
	// +optional
	JobID int64 `json:"jobID,omitempty"`
	// handle of the job attempt the runner was bound to.
	// +optional
	Handle string `json:"handle,omitempty"`
	// repository of the job, as owner/repo, when a webhook named it.
	// +kubebuilder:validation:MaxLength=256
	// +optional
	Repository string `json:"repository,omitempty"`
	// createdAt is when the Runner was created.
	// +optional
	CreatedAt *metav1.Time `json:"createdAt,omitempty"`
	// startedAt is when the runner process started.
	// +optional
	StartedAt *metav1.Time `json:"startedAt,omitempty"`
	// finishedAt is when the runner process ended.
	// +optional
	FinishedAt *metav1.Time `json:"finishedAt,omitempty"`
	// outcome is how the runner ended.
	Outcome RunnerOutcome `json:"outcome"`
	// jobResult is the result Forgejo reported for the job (success, failure, ...), when known.
	// +optional
	JobResult string `json:"jobResult,omitempty"`
	// exitCode of the runner process, when it ran.
	// +optional
	ExitCode *int32 `json:"exitCode,omitempty"`
	// reason is a short CamelCase cause.
	// +optional
	Reason string `json:"reason,omitempty"`
	// message is a human-readable explanation.
	// +optional
	Message string `json:"message,omitempty"`
}

// RunnerPoolStatus is the observed state of a pool. Counts are derived from the pool's
// Runners on every reconcile.
type RunnerPoolStatus struct {
	// observedGeneration is the spec generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready, ForgejoReachable and others.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// desired is how many runners the pool wants now.
	// +optional
	Desired int32 `json:"desired"`
	// current is how many Runners exist.
	// +optional
	Current int32 `json:"current"`
	// idle is how many runners are registered and waiting for a job.
	// +optional
	Idle int32 `json:"idle"`
	// busy is how many runners are running a job.
	// +optional
	Busy int32 `json:"busy"`
	// pendingJobs is how many waiting jobs match the pool's labels.
	// +optional
	PendingJobs int32 `json:"pendingJobs"`

	// recentRunners are the most recently destroyed runners, newest first.
	// +optional
	// +listType=atomic
	RecentRunners []RunnerRecord `json:"recentRunners,omitempty"`

	// jobFailures counts the failed runners of jobs still listed in Forgejo, apart from
	// recentRunners so that neither history.limit nor a busy pool's turnover forgets them.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=500
	JobFailures []JobFailure `json:"jobFailures,omitempty"`
}

// JobFailure is how often a job's runners failed.
type JobFailure struct {
	// handle is the job attempt's handle.
	// +kubebuilder:validation:MaxLength=255
	Handle string `json:"handle"`
	// jobID is the job's id in Forgejo.
	// +optional
	JobID int64 `json:"jobID,omitempty"`
	// failures is how many of its runners failed.
	Failures int32 `json:"failures"`
	// lastFailureAt is when the last of them ended.
	// +optional
	LastFailureAt *metav1.Time `json:"lastFailureAt,omitempty"`
	// lastRunnerUID is the last runner counted, so that a runner is never counted twice.
	// +optional
	LastRunnerUID types.UID `json:"lastRunnerUID,omitempty"`
}

// RunnerPool is a pool of Forgejo Actions runners: ephemeral runners created per queued job,
// or long-lived ones, on Kubernetes or on remote microVM hosts.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=rp,categories=forgejo
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 63",message="metadata.name of a RunnerPool must be at most 63 characters: it is the pool label value on every runner"
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Backend",type=string,JSONPath=`.spec.backend`
// +kubebuilder:printcolumn:name="Desired",type=integer,JSONPath=`.status.desired`
// +kubebuilder:printcolumn:name="Current",type=integer,JSONPath=`.status.current`
// +kubebuilder:printcolumn:name="Busy",type=integer,JSONPath=`.status.busy`
// +kubebuilder:printcolumn:name="Pending",type=integer,JSONPath=`.status.pendingJobs`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type RunnerPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   RunnerPoolSpec   `json:"spec,omitempty"`
	Status RunnerPoolStatus `json:"status,omitempty"`
}

// RunnerPoolList is a list of RunnerPools.
// +kubebuilder:object:root=true
type RunnerPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []RunnerPool `json:"items"`
}
