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

// AnnotationSubIDs holds the subordinate id ranges of a Rootless daemon's user; the sidecar
// reads it as /etc/subuid and /etc/subgid through the downward API.
const AnnotationSubIDs = "forgejo.brooktrails.org/rootless-subids"

// Paths and identities inside a runner pod.
const (
	// TokenMountDir is where the token Secret is mounted in the runner container; the token is
	// the file TokenKey inside it.
	TokenMountDir = "/etc/forgejo-runner"
	// DataDir is the runner's HOME and working directory, on an emptyDir so nothing outlives the
	// pod. The forgejo-runner image uses the same path.
	DataDir = "/data"
	// DockerSocketDir is shared between a Privileged DinD sidecar and the runner. It is mounted at
	// the same path in both, so a job that asks the runner to mount the socket into its container
	// names a path that exists inside the daemon too.
	DockerSocketDir = "/var/run/docker"
	// DockerHost is the runner's DOCKER_HOST with Privileged DinD.
	DockerHost = "unix://" + DockerSocketDir + "/docker.sock"
	// DockerDataDir is a Privileged daemon's data root.
	DockerDataDir = "/var/lib/docker"
	// RootlessDockerSocketDir is DockerSocketDir of a Rootless sidecar. It is outside /run and
	// /etc, which rootlesskit replaces with copies in the daemon's mount namespace, so the
	// daemon and the runner see one directory.
	RootlessDockerSocketDir = "/var/lib/dind-socket"
	// RootlessDockerHost is the runner's DOCKER_HOST with Rootless DinD.
	RootlessDockerHost = "unix://" + RootlessDockerSocketDir + "/docker.sock"
	// RootlessDockerDataDir is where the rootless image's daemon keeps its data (its HOME is
	// /home/rootless).
	RootlessDockerDataDir = "/home/rootless/.local/share/docker"
	// RootlessUID is the user the rootless image runs its daemon as. The daemon's user
	// namespace maps its root to this uid, so the socket it creates belongs to uid 1000, which
	// is also RunnerUID: the runner reaches it as its owner.
	RootlessUID = 1000
	// rootlessSubIDs are the ids the daemon's user namespace maps besides its root. A pod in a
	// user namespace of its own (hostUsers: false) has 65536 ids, 0 to 65535; the image's own
	// /etc/subuid names 100000 and up, which such a pod does not have. 1001-65535 is what is
	// left beside uid 1000: images whose files belong to ids above 64535 cannot be pulled.
	rootlessSubIDs = "rootless:1001:64535\n"
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
	volumeSubIDs       = "dind-subids"
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
	mode := dindMode(pool)

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
			Containers:                    []corev1.Container{runnerContainer(pool, runner, mode)},
			Volumes:                       volumes(pool, runner, mode),
		},
	}
	switch mode {
	case v1alpha1.DinDPrivileged:
		pod.Spec.InitContainers = []corev1.Container{dindContainer(pool)}
	case v1alpha1.DinDRootless:
		pod.Spec.InitContainers = []corev1.Container{rootlessDinDContainer(pool)}
		// An unmasked /proc is allowed only in a pod with a user namespace of its own, which
		// also keeps the pod's ids, root included, off the node's.
		pod.Spec.HostUsers = ptr.To(false)
		if pod.Annotations == nil {
			pod.Annotations = map[string]string{}
		}
		pod.Annotations[AnnotationSubIDs] = rootlessSubIDs
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
	dmode := dindMode(pool)
	switch dmode {
	case v1alpha1.DinDNone, v1alpha1.DinDRootless, v1alpha1.DinDPrivileged:
	default:
		return invalid("pool %s has dind.mode %q; it must be None, Rootless or Privileged", pool.Name, dmode)
	}
	if dmode != v1alpha1.DinDNone {
		if st := spec.DinD.Storage; st != nil && st.StorageClassName != nil && st.SizeLimit == nil {
			return invalid("dind.storage.storageClassName needs dind.storage.sizeLimit to size the volume")
		}
	}
	if tpl := spec.Runner.PodTemplate; tpl != nil {
		reserved := []string{volumeData, volumeToken, volumeDockerSocket, volumeDockerData, volumeSubIDs}
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
	if dmode != v1alpha1.DinDNone {
		reservedPaths = append(reservedPaths, socketDir(dmode))
	}
	for _, m := range spec.Runner.VolumeMounts {
		if slices.Contains(reservedPaths, path.Clean(m.MountPath)) {
			return invalid("runner volumeMount %q mounts over %s, which the operator provides", m.Name, m.MountPath)
		}
	}
	return nil
}

// dindMode is the pool's DinD mode; only the kubernetes backend has a sidecar.
func dindMode(pool *v1alpha1.RunnerPool) v1alpha1.DinDMode {
	if pool.Spec.Backend != "" && pool.Spec.Backend != v1alpha1.BackendKubernetes {
		return v1alpha1.DinDNone
	}
	return pool.Spec.DinD.EffectiveMode()
}

// socketDir is where the daemon of mode puts its socket, in its container and the runner's.
func socketDir(mode v1alpha1.DinDMode) string {
	if mode == v1alpha1.DinDRootless {
		return RootlessDockerSocketDir
	}
	return DockerSocketDir
}

func dockerHost(mode v1alpha1.DinDMode) string {
	return "unix://" + socketDir(mode) + "/docker.sock"
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

func runnerContainer(pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner, mode v1alpha1.DinDMode) corev1.Container {
	dind := mode != v1alpha1.DinDNone
	rt := &pool.Spec.Runner
	image := rt.Image
	if image == "" {
		image = v1alpha1.DefaultRunnerImage
	}

	// Variables the pod's wiring depends on come first and cannot be replaced by the pool's env:
	// a different DOCKER_HOST would point the runner away from its own daemon.
	env := []corev1.EnvVar{{Name: "HOME", Value: DataDir}}
	if dind {
		env = append(env, corev1.EnvVar{Name: "DOCKER_HOST", Value: dockerHost(mode)})
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
		mounts = append(mounts, corev1.VolumeMount{Name: volumeDockerSocket, MountPath: socketDir(mode)})
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

// rootlessDinDContainer is a rootless Docker daemon as a native sidecar (see dindContainer for
// why a sidecar). It runs as the image's uid 1000 and never as root on the node: rootlesskit
// puts the daemon and every job container in a user namespace whose root is uid 1000. Making
// that namespace and mounting inside it is what the security context below allows.
func rootlessDinDContainer(pool *v1alpha1.RunnerPool) corev1.Container {
	d := &pool.Spec.DinD
	image := d.Image
	// Pools written before mode existed had the rootful image filled in by the API server's
	// default; that daemon cannot run rootless, so the old default counts as unset.
	if image == "" || image == v1alpha1.DefaultDinDImage {
		image = v1alpha1.DefaultDinDRootlessImage
	}
	host := dockerHost(v1alpha1.DinDRootless)
	return corev1.Container{
		Name:  DinDContainerName,
		Image: image,
		// The image's entrypoint runs dockerd under rootlesskit when it is not root. No
		// --group: the socket belongs to uid 1000, the runner's own uid.
		Args: []string{"dockerd", "--host=" + host},
		Env: []corev1.EnvVar{
			{Name: "DOCKER_TLS_CERTDIR", Value: ""},
			{Name: "DOCKER_HOST", Value: host},
		},
		RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
		Resources:     *d.Resources.DeepCopy(),
		VolumeMounts: []corev1.VolumeMount{
			{Name: volumeDockerSocket, MountPath: RootlessDockerSocketDir},
			{Name: volumeDockerData, MountPath: RootlessDockerDataDir},
			{Name: volumeSubIDs, MountPath: "/etc/subuid", SubPath: "subuid", ReadOnly: true},
			{Name: volumeSubIDs, MountPath: "/etc/subgid", SubPath: "subgid", ReadOnly: true},
		},
		StartupProbe: &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{
				Command: []string{"docker", "--host=" + host, "version"},
			}},
			PeriodSeconds:    dindProbePeriodSeconds,
			TimeoutSeconds:   dindProbeTimeoutSeconds,
			FailureThreshold: dindProbeFailureThreshold,
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:    ptr.To(int64(RootlessUID)),
			RunAsGroup:   ptr.To(int64(RootlessUID)),
			RunAsNonRoot: ptr.To(true),
			// newuidmap and newgidmap, set-uid programs, write the id maps of the daemon's
			// user namespace.
			AllowPrivilegeEscalation: ptr.To(true),
			// Capabilities stay the runtime's default: the daemon's capabilities inside its
			// user namespace are bounded by this container's, and it needs them there to set
			// up job containers. They are capabilities of the pod's user namespace, not the node's.
			//
			// The runtime's default seccomp and AppArmor profiles refuse the unshare and mount
			// calls that make the daemon's namespaces.
			SeccompProfile:  &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined},
			AppArmorProfile: &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeUnconfined},
			// The kernel lets a user namespace mount a fresh /proc for a job container only when
			// no part of the /proc it sees is masked.
			ProcMount: ptr.To(corev1.UnmaskedProcMount),
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

func volumes(pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner, mode v1alpha1.DinDMode) []corev1.Volume {
	vols := []corev1.Volume{
		{Name: volumeData, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: volumeToken, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName:  SecretName(runner),
			Items:       []corev1.KeyToPath{{Key: TokenKey, Path: TokenKey}},
			DefaultMode: ptr.To(tokenFileMode),
		}}},
	}
	if mode != v1alpha1.DinDNone {
		vols = append(vols,
			corev1.Volume{Name: volumeDockerSocket, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			dockerDataVolume(pool, runner),
		)
	}
	if mode == v1alpha1.DinDRootless {
		subIDs := &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations['" + AnnotationSubIDs + "']"}
		vols = append(vols, corev1.Volume{Name: volumeSubIDs, VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
			Items: []corev1.DownwardAPIVolumeFile{
				{Path: "subuid", FieldRef: subIDs.DeepCopy()},
				{Path: "subgid", FieldRef: subIDs.DeepCopy()},
			},
		}}})
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
