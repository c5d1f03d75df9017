package runnerpod

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"path"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
)

// Container names in a runner pod.
const (
	// RunnerContainerName is the container running forgejo-runner.
	RunnerContainerName = "runner"
	// DinDContainerName is the Docker daemon sidecar.
	DinDContainerName = "dind"
)

// Paths and identities inside a runner pod.
const (
	// TokenMountDir is where the token Secret is mounted in the runner container; the token is
	// the file TokenKey inside it.
	TokenMountDir = "/etc/forgejo-runner"
	// DataDir is the runner's HOME and working directory, on an emptyDir so nothing outlives the
	// pod. The forgejo-runner image uses the same path.
	DataDir = "/data"
	// DockerSocketDir is shared between the DinD sidecar and the runner. It is mounted at the same
	// path in both, so a job that asks the runner to mount the socket into its container names a
	// path that exists inside the daemon too.
	DockerSocketDir = "/var/run/docker"
	// DockerHost is the runner's DOCKER_HOST when DinD is enabled.
	DockerHost = "unix://" + DockerSocketDir + "/docker.sock"
	// DockerDataDir is the daemon's data root.
	DockerDataDir = "/var/lib/docker"
	// RunnerUID and RunnerGID are the identity the forgejo-runner image is built to run as. The
	// pod's fsGroup and the Docker socket's group are RunnerGID so the runner can read its token
	// and reach the daemon without being root.
	RunnerUID = 1000
	RunnerGID = 1000
)

// Volume names the operator uses; a pool's podTemplate.volumes may not reuse them.
const (
	volumeData         = "runner-data"
	volumeToken        = "runner-token"
	volumeDockerSocket = "dind-socket"
	volumeDockerData   = "dind-storage"
)

// Runner CLI words. The program is named, not pathed, so images that install it elsewhere than
// /bin still work.
const (
	runnerProgram      = "forgejo-runner"
	subcommandOneJob   = "one-job"
	subcommandDaemon   = "daemon"
	tokenURLFilePrefix = "file:"
)

// tokenFileMode lets the runner read its token through the pod's fsGroup and nobody else.
const tokenFileMode int32 = 0o440

// DinD sidecar start-up: probe every second, give the daemon up to two minutes (it usually
// needs one to three seconds; a slow node pulling nothing should still make it).
const (
	dindProbePeriodSeconds    = 1
	dindProbeTimeoutSeconds   = 5
	dindProbeFailureThreshold = 120
)

// BuildPod builds the pod that runs runner for pool. It fails, wrapping ErrInvalidInput, when
// the inputs cannot make a working pod: no registration yet, no labels, a remote pool, volumes
// that clash with the operator's own, and the like.
func BuildPod(pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner) (*corev1.Pod, error) {
	if err := checkParents(pool, runner); err != nil {
		return nil, fmt.Errorf("building runner pod: %w", err)
	}
	if err := checkPodInputs(pool, runner); err != nil {
		return nil, fmt.Errorf("building pod for runner %s: %w", runner.Name, err)
	}

	spec := &pool.Spec
	tpl := spec.Runner.PodTemplate
	if tpl == nil {
		tpl = &v1alpha1.PodTemplateOverrides{}
	}
	dind := dindEnabled(pool)

	pod := &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Name:            PodName(runner),
			Namespace:       runner.Namespace,
			Labels:          podLabels(pool, runner),
			Annotations:     maps.Clone(tpl.Annotations),
			OwnerReferences: []metav1.OwnerReference{ownerReference(runner)},
		},
		Spec: corev1.PodSpec{
			// The Runner decides what follows a runner's exit (record, deregister, replace); a
			// restarted one-job would fetch a second job under a registration Forgejo may already
			// have deleted.
			RestartPolicy:                 corev1.RestartPolicyNever,
			ServiceAccountName:            spec.Runner.ServiceAccountName,
			AutomountServiceAccountToken:  ptr.To(ptr.Deref(spec.Runner.AutomountServiceAccountToken, false)),
			EnableServiceLinks:            ptr.To(false),
			NodeSelector:                  maps.Clone(spec.Runner.NodeSelector),
			Tolerations:                   deepCopyTolerations(spec.Runner.Tolerations),
			Affinity:                      spec.Runner.Affinity.DeepCopy(),
			PriorityClassName:             tpl.PriorityClassName,
			RuntimeClassName:              copyPtr(tpl.RuntimeClassName),
			ImagePullSecrets:              slices.Clone(tpl.ImagePullSecrets),
			TerminationGracePeriodSeconds: copyPtr(tpl.TerminationGracePeriodSeconds),
			SecurityContext:               podSecurityContext(tpl),
			Containers:                    []corev1.Container{runnerContainer(pool, runner, dind)},
			Volumes:                       volumes(pool, runner, dind),
		},
	}
	if dind {
		pod.Spec.InitContainers = []corev1.Container{dindContainer(pool)}
	}

	hash, err := specHash(pod)
	if err != nil {
		return nil, fmt.Errorf("building pod for runner %s: %w", runner.Name, err)
	}
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[AnnotationPodSpecHash] = hash
	return pod, nil
}

// checkPodInputs rejects what the API types allow but no working runner pod can be made of.
// CRD validation catches most of it first; repeating it here keeps the builder safe to call with
// objects that never went through the API server (tests, a stale cache, a future field).
func checkPodInputs(pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner) error {
	spec := &pool.Spec
	if spec.Backend != "" && spec.Backend != v1alpha1.BackendKubernetes {
		return invalid("pool %s uses the %q backend, which runs no pods", pool.Name, spec.Backend)
	}
	if spec.Forgejo.URL == "" {
		return invalid("pool %s has no spec.forgejo.url", pool.Name)
	}
	if runner.Status.Registration == nil || runner.Status.Registration.UUID == "" {
		return invalid("runner is not registered with Forgejo yet (status.registration.uuid is empty)")
	}
	if len(spec.Labels) == 0 {
		return invalid("pool %s has no labels; a runner without labels can take no job", pool.Name)
	}
	if slices.Contains(spec.Labels, "") {
		return invalid("pool %s has an empty label", pool.Name)
	}
	mode := runnerMode(pool, runner)
	if mode == v1alpha1.ModePersistent {
		if runnerHandle(runner) != "" {
			return invalid("a persistent runner cannot be bound to a job handle")
		}
		// daemon takes its capacity only from a config file, which this builder does not write.
		if spec.Runner.Capacity > 1 {
			return invalid("runner.capacity %d needs a runner config file, which persistent pods do not get yet; use 1", spec.Runner.Capacity)
		}
	}
	if dindEnabled(pool) {
		if st := spec.DinD.Storage; st != nil && st.StorageClassName != nil && st.SizeLimit == nil {
			return invalid("dind.storage.storageClassName needs dind.storage.sizeLimit to size the volume")
		}
	}
	if tpl := spec.Runner.PodTemplate; tpl != nil {
		reserved := []string{volumeData, volumeToken, volumeDockerSocket, volumeDockerData}
		seen := map[string]bool{}
		for _, v := range tpl.Volumes {
			if slices.Contains(reserved, v.Name) {
				return invalid("podTemplate volume %q uses a name the operator reserves", v.Name)
			}
			if seen[v.Name] {
				return invalid("podTemplate volume %q is listed twice", v.Name)
			}
			seen[v.Name] = true
		}
	}
	reservedPaths := []string{DataDir, TokenMountDir}
	if dindEnabled(pool) {
		reservedPaths = append(reservedPaths, DockerSocketDir)
	}
	for _, m := range spec.Runner.VolumeMounts {
		if slices.Contains(reservedPaths, path.Clean(m.MountPath)) {
			return invalid("runner volumeMount %q mounts over %s, which the operator provides", m.Name, m.MountPath)
		}
	}
	return nil
}

// dindEnabled: DinD is on unless the pool turns it off, and only the kubernetes backend has it.
func dindEnabled(pool *v1alpha1.RunnerPool) bool {
	if pool.Spec.Backend != "" && pool.Spec.Backend != v1alpha1.BackendKubernetes {
		return false
	}
	return ptr.Deref(pool.Spec.DinD.Enabled, true)
}

// runnerMode is the mode copied onto the Runner at creation, which wins over a pool edited since;
// ephemeral when neither says.
func runnerMode(pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner) v1alpha1.Mode {
	switch {
	case runner.Spec.Mode != "":
		return runner.Spec.Mode
	case pool.Spec.Mode != "":
		return pool.Spec.Mode
	default:
		return v1alpha1.ModeEphemeral
	}
}

func runnerHandle(runner *v1alpha1.Runner) string {
	if runner.Spec.Job == nil {
		return ""
	}
	return runner.Spec.Job.Handle
}

// runnerArgs is the forgejo-runner command line. It is given as the container's args, not its
// command: the image's entrypoint stays in charge (recent forgejo-runner images run the program
// under dumb-init so zombie grandchildren of cancelled jobs get reaped; older ones have no
// entrypoint and run the args as given). Both shapes start "forgejo-runner one-job …" from
// these args. Flags use the --name=value form so that no value, whatever it starts with, can be
// mistaken for a flag.
func runnerArgs(pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner) []string {
	subcommand := subcommandOneJob
	if runnerMode(pool, runner) == v1alpha1.ModePersistent {
		subcommand = subcommandDaemon
	}
	args := []string{
		runnerProgram, subcommand,
		"--url=" + pool.Spec.Forgejo.URL,
		"--uuid=" + runner.Status.Registration.UUID,
		"--token-url=" + tokenURLFilePrefix + path.Join(TokenMountDir, TokenKey),
	}
	for _, label := range pool.Spec.Labels {
		args = append(args, "--label="+label)
	}
	if handle := runnerHandle(runner); handle != "" {
		args = append(args, "--handle="+handle)
	}
	if subcommand == subcommandOneJob {
		// A warm runner has no job yet and must wait for one; a runner with a handle may start
		// before Forgejo has made its task available. The operator, not an idle timeout, ends a
		// runner that waits too long.
		args = append(args, "--wait")
	}
	return args
}

func runnerContainer(pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner, dind bool) corev1.Container {
	rt := &pool.Spec.Runner
	image := rt.Image
	if image == "" {
		image = v1alpha1.DefaultRunnerImage
	}

	// Variables the pod's wiring depends on come first and cannot be replaced by the pool's env:
	// a different DOCKER_HOST would point the runner away from its own daemon.
	env := []corev1.EnvVar{{Name: "HOME", Value: DataDir}}
	if dind {
		env = append(env, corev1.EnvVar{Name: "DOCKER_HOST", Value: DockerHost})
	}
	owned := map[string]bool{}
	for _, e := range env {
		owned[e.Name] = true
	}
	for _, e := range rt.Env {
		if !owned[e.Name] {
			env = append(env, *e.DeepCopy())
		}
	}

	mounts := []corev1.VolumeMount{
		{Name: volumeData, MountPath: DataDir},
		{Name: volumeToken, MountPath: TokenMountDir, ReadOnly: true},
	}
	if dind {
		mounts = append(mounts, corev1.VolumeMount{Name: volumeDockerSocket, MountPath: DockerSocketDir})
	}
	for _, m := range rt.VolumeMounts {
		mounts = append(mounts, *m.DeepCopy())
	}

	return corev1.Container{
		Name:            RunnerContainerName,
		Image:           image,
		ImagePullPolicy: rt.ImagePullPolicy,
		Args:            runnerArgs(pool, runner),
		WorkingDir:      DataDir,
		Env:             env,
		Resources:       *rt.Resources.DeepCopy(),
		VolumeMounts:    mounts,
		// The runner's last log lines become the termination message when it fails, so the
		// Runner's status can say why without anyone fetching logs of a pod about to vanish.
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		// Set on the container rather than the pod so that it holds even when a pool replaces
		// the pod's security context.
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                ptr.To(int64(RunnerUID)),
			RunAsGroup:               ptr.To(int64(RunnerGID)),
			RunAsNonRoot:             ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
}

// dindContainer is the Docker daemon as a native sidecar: an init container that keeps running.
// Kubelet starts the runner only after its startup probe passes, which matters because the runner
// pings Docker once at start and exits if it gets no answer; and the sidecar is stopped after the
// runner, so a job's containers are not pulled from under it.
func dindContainer(pool *v1alpha1.RunnerPool) corev1.Container {
	d := &pool.Spec.DinD
	image := d.Image
	if image == "" {
		image = v1alpha1.DefaultDinDImage
	}
	return corev1.Container{
		Name:  DinDContainerName,
		Image: image,
		// Naming dockerd explicitly keeps the image's entrypoint (it clears stale pid files and
		// loads ip_tables) but skips its default listeners, which include an unauthenticated TCP
		// port on the pod IP when TLS is off. The daemon listens only on the shared socket, owned
		// by the runner's group.
		Args: []string{
			"dockerd",
			"--host=" + DockerHost,
			fmt.Sprintf("--group=%d", RunnerGID),
		},
		Env: []corev1.EnvVar{
			// Empty turns off the entrypoint's certificate generation: nothing listens on TCP.
			{Name: "DOCKER_TLS_CERTDIR", Value: ""},
			// Lets `kubectl exec -c dind -- docker …` reach the daemon when debugging.
			{Name: "DOCKER_HOST", Value: DockerHost},
		},
		RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
		Resources:     *d.Resources.DeepCopy(),
		VolumeMounts: []corev1.VolumeMount{
			{Name: volumeDockerSocket, MountPath: DockerSocketDir},
			{Name: volumeDockerData, MountPath: DockerDataDir},
		},
		StartupProbe: &corev1.Probe{
			// `docker version` exits non-zero until the daemon answers API calls on the socket,
			// which is what the runner's start-up ping needs; the socket file alone appears earlier.
			ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{
				Command: []string{"docker", "--host=" + DockerHost, "version"},
			}},
			PeriodSeconds:    dindProbePeriodSeconds,
			TimeoutSeconds:   dindProbeTimeoutSeconds,
			FailureThreshold: dindProbeFailureThreshold,
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		// dockerd needs root and a privileged container to create namespaces, cgroups and
		// networks for job containers. This is the pod's only privileged container.
		SecurityContext: &corev1.SecurityContext{
			Privileged:   ptr.To(true),
			RunAsUser:    ptr.To(int64(0)),
			RunAsNonRoot: ptr.To(false),
		},
	}
}

// podSecurityContext is the pool's, when given, in place of the default: a pool that sets one
// has decided on its own fsGroup (without one, uid 1000 cannot read the 0440 token file).
func podSecurityContext(tpl *v1alpha1.PodTemplateOverrides) *corev1.PodSecurityContext {
	if tpl.SecurityContext != nil {
		return tpl.SecurityContext.DeepCopy()
	}
	return &corev1.PodSecurityContext{
		// Gives the runner's group ownership of the token file and the volumes.
		FSGroup: ptr.To(int64(RunnerGID)),
		// Skips the recursive chown of a large DinD volume when its root already matches.
		FSGroupChangePolicy: ptr.To(corev1.FSGroupChangeOnRootMismatch),
		SeccompProfile:      &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

func volumes(pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner, dind bool) []corev1.Volume {
	vols := []corev1.Volume{
		{Name: volumeData, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: volumeToken, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName:  SecretName(runner),
			Items:       []corev1.KeyToPath{{Key: TokenKey, Path: TokenKey}},
			DefaultMode: ptr.To(tokenFileMode),
		}}},
	}
	if dind {
		vols = append(vols,
			corev1.Volume{Name: volumeDockerSocket, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			dockerDataVolume(pool, runner),
		)
	}
	if tpl := pool.Spec.Runner.PodTemplate; tpl != nil {
		for _, v := range tpl.Volumes {
			vols = append(vols, *v.DeepCopy())
		}
	}
	return vols
}

// dockerDataVolume is an emptyDir unless the pool names a storage class: then a generic
// ephemeral volume, a PVC created and deleted with the pod, so image layers can live on storage
// other than the node's root disk.
func dockerDataVolume(pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner) corev1.Volume {
	st := pool.Spec.DinD.Storage
	if st == nil || st.StorageClassName == nil {
		ed := &corev1.EmptyDirVolumeSource{}
		if st != nil && st.SizeLimit != nil {
			ed.SizeLimit = ptr.To(st.SizeLimit.DeepCopy())
		}
		return corev1.Volume{Name: volumeDockerData, VolumeSource: corev1.VolumeSource{EmptyDir: ed}}
	}
	return corev1.Volume{Name: volumeDockerData, VolumeSource: corev1.VolumeSource{
		Ephemeral: &corev1.EphemeralVolumeSource{VolumeClaimTemplate: &corev1.PersistentVolumeClaimTemplate{
			ObjectMeta: metav1.ObjectMeta{Labels: Labels(pool, runner)},
			Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				StorageClassName: ptr.To(*st.StorageClassName),
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
					corev1.ResourceStorage: st.SizeLimit.DeepCopy(),
				}},
			},
		}},
	}}
}

// specHash hashes the pod as built, before the hash annotation is added. JSON encoding sorts map
// keys, so equal pods hash equally.
func specHash(pod *corev1.Pod) (string, error) {
	b, err := json.Marshal(struct {
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
		Spec        corev1.PodSpec    `json:"spec"`
	}{pod.Labels, pod.Annotations, pod.Spec})
	if err != nil {
		return "", fmt.Errorf("hashing pod spec: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8]), nil
}

func deepCopyTolerations(in []corev1.Toleration) []corev1.Toleration {
	if in == nil {
		return nil
	}
	out := make([]corev1.Toleration, len(in))
	for i := range in {
		in[i].DeepCopyInto(&out[i])
	}
	return out
}

func copyPtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	return ptr.To(*p)
}
