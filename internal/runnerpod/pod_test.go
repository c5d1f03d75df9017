package runnerpod

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
)

// fullPool sets every pool field that reaches the pod.
func fullPool() *v1alpha1.RunnerPool {
	return pool(func(p *v1alpha1.RunnerPool) {
		p.Spec.Labels = []string{testLabel, "ubuntu-latest:docker://ghcr.io/catthehacker/ubuntu:act-22.04", "shell:host"}
		p.Spec.Runner = v1alpha1.RunnerTemplate{
			Image:           "registry.example.com/forgejo/runner:12.10.1",
			ImagePullPolicy: corev1.PullAlways,
			Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: *quantity("500m"), corev1.ResourceMemory: *quantity("512Mi")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: *quantity("1Gi")},
			},
			Env:                          []corev1.EnvVar{{Name: "TZ", Value: "Europe/Berlin"}},
			VolumeMounts:                 []corev1.VolumeMount{{Name: "ca", MountPath: "/etc/ssl/custom", ReadOnly: true}},
			NodeSelector:                 map[string]string{"kubernetes.io/arch": "amd64"},
			Tolerations:                  []corev1.Toleration{{Key: "ci", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
			Affinity:                     &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "ci", Operator: corev1.NodeSelectorOpIn, Values: []string{"yes"}}}}}}}},
			ServiceAccountName:           "runner",
			AutomountServiceAccountToken: ptr.To(false),
			PodTemplate: &v1alpha1.PodTemplateOverrides{
				Labels:                        map[string]string{"team": "platform"},
				Annotations:                   map[string]string{"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"},
				PriorityClassName:             "ci",
				RuntimeClassName:              ptr.To("sysbox"),
				ImagePullSecrets:              []corev1.LocalObjectReference{{Name: "registry"}},
				TerminationGracePeriodSeconds: ptr.To(int64(600)),
				Volumes:                       []corev1.Volume{{Name: "ca", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "ca"}}}}},
			},
		}
		p.Spec.DinD = v1alpha1.DinD{
			Mode:  v1alpha1.DinDPrivileged,
			Image: "registry.example.com/docker:28.5-dind",
			Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: *quantity("1"), corev1.ResourceMemory: *quantity("2Gi")},
			},
			Storage: &v1alpha1.DinDStorage{SizeLimit: quantity("20Gi"), StorageClassName: ptr.To("fast")},
		}
	})
}

func TestBuildPodGolden(t *testing.T) {
	golden(t, "pod-default.yaml", mustBuildPod(t, pool(), runner()))
	golden(t, "pod-full.yaml", mustBuildPod(t, fullPool(), runner(withHandle("h-4711-1"))))
	golden(t, "pod-privileged.yaml", mustBuildPod(t, pool(withDinD(v1alpha1.DinDPrivileged)), runner()))
	golden(t, "pod-rootless.yaml", mustBuildPod(t, pool(withDinD(v1alpha1.DinDRootless)), runner()))
	long := runner(withRunnerName(strings.Repeat("a", 200) + "." + strings.Repeat("b", 53)))
	golden(t, "pod-long-name.yaml", mustBuildPod(t, pool(), long))
	secret, err := BuildSecret(pool(), runner(), "0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "secret-default.yaml", secret)
}

// TestBuildPodDefault spells out the contract of a default pool's pod, so the golden file is not
// the only place it is written down.
func TestBuildPodDefault(t *testing.T) {
	pod := mustBuildPod(t, pool(), runner())

	if pod.Name != testRunner || pod.Namespace != testNamespace {
		t.Errorf("pod is %s/%s, want %s/%s", pod.Namespace, pod.Name, testNamespace, testRunner)
	}
	wantOwner := metav1.OwnerReference{
		APIVersion: "forgejo.brooktrails.org/v1alpha1", Kind: "Runner", Name: testRunner, UID: testUID,
		Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
	}
	if !reflect.DeepEqual(pod.OwnerReferences, []metav1.OwnerReference{wantOwner}) {
		t.Errorf("owner references = %+v", pod.OwnerReferences)
	}
	wantLabels := map[string]string{
		"pool": testPool, "forgejo.brooktrails.org/runner": testRunner,
		"app.kubernetes.io/name": "forgejo-runner", "app.kubernetes.io/managed-by": "forgejo-runner-operator",
	}
	if !reflect.DeepEqual(pod.Labels, wantLabels) {
		t.Errorf("labels = %v, want %v", pod.Labels, wantLabels)
	}
	if pod.Annotations[AnnotationPodSpecHash] == "" {
		t.Error("no spec hash annotation")
	}

	s := pod.Spec
	if s.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("restartPolicy = %s", s.RestartPolicy)
	}
	if s.AutomountServiceAccountToken == nil || *s.AutomountServiceAccountToken {
		t.Error("service account token is mounted by default")
	}
	if s.EnableServiceLinks == nil || *s.EnableServiceLinks {
		t.Error("service links are enabled")
	}
	if s.SecurityContext == nil || ptr.Deref(s.SecurityContext.FSGroup, 0) != RunnerGID {
		t.Errorf("pod fsGroup = %v, want %d so the runner can read its 0440 token", s.SecurityContext, RunnerGID)
	}

	rc := container(t, s.Containers, RunnerContainerName)
	if len(s.Containers) != 1 {
		t.Errorf("want only the runner as a regular container, got %d", len(s.Containers))
	}
	if rc.Image != v1alpha1.DefaultRunnerImage {
		t.Errorf("runner image = %s", rc.Image)
	}
	if len(rc.Command) != 0 {
		t.Errorf("runner command = %q, want the image's entrypoint kept", rc.Command)
	}
	wantArgs := []string{
		"forgejo-runner", "one-job",
		"--url=" + testURL, "--uuid=" + testUUID, "--token-url=file:/etc/forgejo-runner/token",
		"--label=" + testLabel, "--wait",
	}
	if !slices.Equal(rc.Args, wantArgs) {
		t.Errorf("runner args =\n  %q\nwant\n  %q", rc.Args, wantArgs)
	}
	// No Docker daemon unless the pool asks for one: nothing in the pod is privileged.
	if v, ok := envValue(rc, "DOCKER_HOST"); ok {
		t.Errorf("DOCKER_HOST = %q without a daemon", v)
	}
	if len(s.InitContainers) != 0 || volume(pod, volumeDockerSocket) != nil || volume(pod, volumeDockerData) != nil {
		t.Errorf("a default pool's pod has a DinD sidecar or its volumes: %+v", s.InitContainers)
	}
	if v, _ := envValue(rc, "HOME"); v != "/data" || rc.WorkingDir != "/data" {
		t.Errorf("HOME = %q, workingDir = %q, want /data", v, rc.WorkingDir)
	}
	sc := rc.SecurityContext
	if sc == nil || ptr.Deref(sc.RunAsUser, 0) != 1000 || ptr.Deref(sc.RunAsGroup, 0) != 1000 ||
		!ptr.Deref(sc.RunAsNonRoot, false) || ptr.Deref(sc.AllowPrivilegeEscalation, true) ||
		ptr.Deref(sc.Privileged, false) || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("runner security context is not locked down: %+v", sc)
	}

	tok := volume(pod, volumeToken)
	if tok == nil || tok.Secret == nil || tok.Secret.SecretName != testRunner+"-token" ||
		ptr.Deref(tok.Secret.DefaultMode, 0) != 0o440 {
		t.Fatalf("token volume = %+v", tok)
	}
	if !slices.ContainsFunc(rc.VolumeMounts, func(m corev1.VolumeMount) bool {
		return m.Name == volumeToken && m.MountPath == TokenMountDir && m.ReadOnly
	}) {
		t.Errorf("token not mounted read-only at %s: %+v", TokenMountDir, rc.VolumeMounts)
	}
}

// A Privileged pool's pod: a root Docker daemon as a native sidecar, reachable only on the
// shared socket.
func TestBuildPodPrivilegedDinD(t *testing.T) {
	for name, p := range map[string]*v1alpha1.RunnerPool{
		"mode Privileged":            pool(withDinD(v1alpha1.DinDPrivileged)),
		"deprecated enabled: true":   pool(withDinDEnabled(true)),
		"Privileged, enabled agrees": pool(withDinD(v1alpha1.DinDPrivileged), withDinDEnabled(true)),
	} {
		t.Run(name, func(t *testing.T) { checkPrivilegedDinD(t, mustBuildPod(t, p, runner())) })
	}
}

func checkPrivilegedDinD(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	s := pod.Spec
	rc := container(t, s.Containers, RunnerContainerName)
	if v, _ := envValue(rc, "DOCKER_HOST"); v != "unix:///var/run/docker/docker.sock" {
		t.Errorf("DOCKER_HOST = %q", v)
	}
	dc := container(t, s.InitContainers, DinDContainerName)
	if dc.Image != v1alpha1.DefaultDinDImage {
		t.Errorf("dind image = %s", dc.Image)
	}
	if !ptr.Deref(dc.SecurityContext.Privileged, false) {
		t.Error("dind is not privileged")
	}
	if dc.Args[0] != "dockerd" || !slices.Contains(dc.Args, "--host=unix:///var/run/docker/docker.sock") ||
		!slices.Contains(dc.Args, "--group=1000") {
		t.Errorf("dind args = %q", dc.Args)
	}
	for _, a := range dc.Args {
		if strings.Contains(a, "tcp://") {
			t.Errorf("dind listens on TCP: %q", dc.Args)
		}
	}
	if v, ok := envValue(dc, "DOCKER_TLS_CERTDIR"); !ok || v != "" {
		t.Errorf("DOCKER_TLS_CERTDIR = %q, %v; want set and empty", v, ok)
	}
	if p := dc.StartupProbe; p == nil || p.Exec == nil || !slices.Contains(p.Exec.Command, "version") {
		t.Errorf("dind startup probe = %+v", dc.StartupProbe)
	}
	data := volume(pod, volumeDockerData)
	if data == nil || data.EmptyDir == nil {
		t.Errorf("docker data volume = %+v, want an emptyDir", data)
	}
}

func TestBuildPodVariants(t *testing.T) {
	tests := []struct {
		name   string
		pool   *v1alpha1.RunnerPool
		runner *v1alpha1.Runner
		check  func(t *testing.T, pod *corev1.Pod)
	}{
		{
			name: "deprecated enabled: false drops sidecar, its volumes and DOCKER_HOST",
			pool: pool(withDinD(v1alpha1.DinDPrivileged), func(p *v1alpha1.RunnerPool) { p.Spec.DinD.Mode = "" }, withDinDEnabled(false)), runner: runner(),
			check: func(t *testing.T, pod *corev1.Pod) {
				if len(pod.Spec.InitContainers) != 0 {
					t.Errorf("init containers = %v", pod.Spec.InitContainers)
				}
				if volume(pod, volumeDockerSocket) != nil || volume(pod, volumeDockerData) != nil {
					t.Error("dind volumes remain")
				}
				rc := container(t, pod.Spec.Containers, RunnerContainerName)
				if _, ok := envValue(rc, "DOCKER_HOST"); ok {
					t.Error("DOCKER_HOST still set")
				}
				for _, m := range rc.VolumeMounts {
					if m.MountPath == DockerSocketDir {
						t.Error("docker socket still mounted")
					}
				}
			},
		},
		{
			name: "rootless: own user namespace, uid 1000, socket outside what rootlesskit copies",
			// The API server filled in the rootful image for pools written before mode existed.
			pool:   pool(withDinD(v1alpha1.DinDRootless), func(p *v1alpha1.RunnerPool) { p.Spec.DinD.Image = v1alpha1.DefaultDinDImage }),
			runner: runner(),
			check: func(t *testing.T, pod *corev1.Pod) {
				if pod.Spec.HostUsers == nil || *pod.Spec.HostUsers {
					t.Errorf("hostUsers = %v, want false", pod.Spec.HostUsers)
				}
				dc := container(t, pod.Spec.InitContainers, DinDContainerName)
				sc := dc.SecurityContext
				if dc.Image != v1alpha1.DefaultDinDRootlessImage || ptr.Deref(sc.Privileged, false) ||
					ptr.Deref(sc.RunAsUser, 0) != RootlessUID || !ptr.Deref(sc.RunAsNonRoot, false) {
					t.Errorf("rootless sidecar = %s, %+v", dc.Image, sc)
				}
				rc := container(t, pod.Spec.Containers, RunnerContainerName)
				if v, _ := envValue(rc, "DOCKER_HOST"); v != RootlessDockerHost || !slices.Contains(dc.Args, "--host="+RootlessDockerHost) {
					t.Errorf("runner DOCKER_HOST %q, daemon args %q", v, dc.Args)
				}
				for _, dir := range []string{"/run", "/var/run", "/etc"} {
					if strings.HasPrefix(RootlessDockerSocketDir+"/", dir+"/") {
						t.Errorf("socket dir %s is under %s, which rootlesskit replaces", RootlessDockerSocketDir, dir)
					}
				}
				if pod.Annotations[AnnotationSubIDs] != "rootless:1001:64535\n" || volume(pod, volumeSubIDs) == nil {
					t.Errorf("subordinate ids: annotation %q, volume %+v", pod.Annotations[AnnotationSubIDs], volume(pod, volumeSubIDs))
				}
			},
		},
		{
			name: "storage sizeLimit caps the emptyDir",
			pool: pool(withDinD(v1alpha1.DinDPrivileged), func(p *v1alpha1.RunnerPool) {
				p.Spec.DinD.Storage = &v1alpha1.DinDStorage{SizeLimit: quantity("10Gi")}
			}),
			runner: runner(),
			check: func(t *testing.T, pod *corev1.Pod) {
				v := volume(pod, volumeDockerData)
				if v.EmptyDir == nil || v.EmptyDir.SizeLimit == nil || v.EmptyDir.SizeLimit.String() != "10Gi" {
					t.Errorf("docker data volume = %+v", v)
				}
			},
		},
		{
			name: "storage class makes a generic ephemeral volume",
			pool: pool(withDinD(v1alpha1.DinDRootless), func(p *v1alpha1.RunnerPool) {
				p.Spec.DinD.Storage = &v1alpha1.DinDStorage{SizeLimit: quantity("50Gi"), StorageClassName: ptr.To("fast")}
			}),
			runner: runner(),
			check: func(t *testing.T, pod *corev1.Pod) {
				v := volume(pod, volumeDockerData)
				if v.EmptyDir != nil || v.Ephemeral == nil || v.Ephemeral.VolumeClaimTemplate == nil {
					t.Fatalf("docker data volume = %+v", v)
				}
				spec := v.Ephemeral.VolumeClaimTemplate.Spec
				if ptr.Deref(spec.StorageClassName, "") != "fast" ||
					spec.Resources.Requests.Storage().String() != "50Gi" ||
					!slices.Equal(spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) {
					t.Errorf("claim spec = %+v", spec)
				}
				if v.Ephemeral.VolumeClaimTemplate.Labels[LabelRunner] != testRunner {
					t.Errorf("claim labels = %v", v.Ephemeral.VolumeClaimTemplate.Labels)
				}
			},
		},
		{
			name: "podTemplate cannot override operator labels",
			pool: pool(withPodTemplate(func(tpl *v1alpha1.PodTemplateOverrides) {
				tpl.Labels = map[string]string{
					"pool": "other", LabelRunner: "other", LabelAppName: "x", LabelManagedBy: "me", "team": "a",
				}
				tpl.Annotations = map[string]string{AnnotationPodSpecHash: "forged", "note": "kept"}
			})),
			runner: runner(),
			check: func(t *testing.T, pod *corev1.Pod) {
				want := map[string]string{
					"pool": testPool, LabelRunner: testRunner, LabelAppName: AppName, LabelManagedBy: ManagedBy, "team": "a",
				}
				if !reflect.DeepEqual(pod.Labels, want) {
					t.Errorf("labels = %v, want %v", pod.Labels, want)
				}
				if pod.Annotations["note"] != "kept" || pod.Annotations[AnnotationPodSpecHash] == "forged" {
					t.Errorf("annotations = %v", pod.Annotations)
				}
				if len(pod.OwnerReferences) != 1 || pod.OwnerReferences[0].UID != testUID {
					t.Errorf("owner references = %v", pod.OwnerReferences)
				}
			},
		},
		{
			name:   "automount can be turned on",
			pool:   pool(func(p *v1alpha1.RunnerPool) { p.Spec.Runner.AutomountServiceAccountToken = ptr.To(true) }),
			runner: runner(),
			check: func(t *testing.T, pod *corev1.Pod) {
				if !ptr.Deref(pod.Spec.AutomountServiceAccountToken, false) {
					t.Error("automount not honoured")
				}
			},
		},
		{
			name: "handle is passed",
			pool: pool(), runner: runner(withHandle("abc-123")),
			check: func(t *testing.T, pod *corev1.Pod) {
				args := container(t, pod.Spec.Containers, RunnerContainerName).Args
				if !slices.Contains(args, "--handle=abc-123") || args[len(args)-1] != "--wait" {
					t.Errorf("args = %q", args)
				}
			},
		},
		{
			name: "job without handle passes none",
			pool: pool(), runner: runner(func(r *v1alpha1.Runner) { r.Spec.Job = &v1alpha1.JobRef{ID: 1} }),
			check: func(t *testing.T, pod *corev1.Pod) {
				for _, a := range container(t, pod.Spec.Containers, RunnerContainerName).Args {
					if strings.HasPrefix(a, "--handle") {
						t.Errorf("unexpected %q", a)
					}
				}
			},
		},
		{
			name:   "persistent runner runs daemon without --wait",
			pool:   pool(func(p *v1alpha1.RunnerPool) { p.Spec.Mode = v1alpha1.ModePersistent }),
			runner: runner(func(r *v1alpha1.Runner) { r.Spec.Mode = v1alpha1.ModePersistent }),
			check: func(t *testing.T, pod *corev1.Pod) {
				args := container(t, pod.Spec.Containers, RunnerContainerName).Args
				if args[1] != "daemon" || slices.Contains(args, "--wait") {
					t.Errorf("args = %q", args)
				}
			},
		},
		{
			name:   "runner's mode wins over a pool edited since",
			pool:   pool(func(p *v1alpha1.RunnerPool) { p.Spec.Mode = v1alpha1.ModePersistent }),
			runner: runner(),
			check: func(t *testing.T, pod *corev1.Pod) {
				if args := container(t, pod.Spec.Containers, RunnerContainerName).Args; args[1] != "one-job" {
					t.Errorf("args = %q", args)
				}
			},
		},
		{
			name: "pool env cannot redirect DOCKER_HOST or HOME when DinD is on",
			pool: pool(withDinD(v1alpha1.DinDPrivileged), func(p *v1alpha1.RunnerPool) {
				p.Spec.Runner.Env = []corev1.EnvVar{{Name: "DOCKER_HOST", Value: "tcp://elsewhere:2375"}, {Name: "HOME", Value: "/root"}, {Name: "A", Value: "1"}}
			}),
			runner: runner(),
			check: func(t *testing.T, pod *corev1.Pod) {
				rc := container(t, pod.Spec.Containers, RunnerContainerName)
				if v, _ := envValue(rc, "DOCKER_HOST"); v != DockerHost {
					t.Errorf("DOCKER_HOST = %q", v)
				}
				if v, _ := envValue(rc, "HOME"); v != DataDir {
					t.Errorf("HOME = %q", v)
				}
				if v, _ := envValue(rc, "A"); v != "1" {
					t.Errorf("pool env A = %q", v)
				}
			},
		},
		{
			name: "pool DOCKER_HOST is kept when DinD is off",
			pool: pool(func(p *v1alpha1.RunnerPool) {
				p.Spec.Runner.Env = []corev1.EnvVar{{Name: "DOCKER_HOST", Value: "tcp://docker.ci:2376"}}
			}),
			runner: runner(),
			check: func(t *testing.T, pod *corev1.Pod) {
				if v, _ := envValue(container(t, pod.Spec.Containers, RunnerContainerName), "DOCKER_HOST"); v != "tcp://docker.ci:2376" {
					t.Errorf("DOCKER_HOST = %q", v)
				}
			},
		},
		{
			name: "podTemplate securityContext replaces the pod default, not the container's",
			pool: pool(withPodTemplate(func(tpl *v1alpha1.PodTemplateOverrides) {
				tpl.SecurityContext = &corev1.PodSecurityContext{FSGroup: ptr.To(int64(2000)), SupplementalGroups: []int64{3000}}
			})),
			runner: runner(),
			check: func(t *testing.T, pod *corev1.Pod) {
				want := &corev1.PodSecurityContext{FSGroup: ptr.To(int64(2000)), SupplementalGroups: []int64{3000}}
				if !reflect.DeepEqual(pod.Spec.SecurityContext, want) {
					t.Errorf("pod security context = %+v", pod.Spec.SecurityContext)
				}
				rc := container(t, pod.Spec.Containers, RunnerContainerName)
				if !ptr.Deref(rc.SecurityContext.RunAsNonRoot, false) {
					t.Error("runner container lost runAsNonRoot")
				}
			},
		},
		{
			name:   "full pool",
			pool:   fullPool(),
			runner: runner(),
			check: func(t *testing.T, pod *corev1.Pod) {
				s := pod.Spec
				if s.ServiceAccountName != "runner" || s.PriorityClassName != "ci" || ptr.Deref(s.RuntimeClassName, "") != "sysbox" ||
					ptr.Deref(s.TerminationGracePeriodSeconds, 0) != 600 || len(s.ImagePullSecrets) != 1 ||
					s.NodeSelector["kubernetes.io/arch"] != "amd64" || len(s.Tolerations) != 1 || s.Affinity == nil {
					t.Errorf("pod settings not carried over: %+v", s)
				}
				rc := container(t, s.Containers, RunnerContainerName)
				if rc.Image != "registry.example.com/forgejo/runner:12.10.1" || rc.ImagePullPolicy != corev1.PullAlways ||
					rc.Resources.Limits.Memory().String() != "1Gi" {
					t.Errorf("runner container = %+v", rc)
				}
				if rc.VolumeMounts[len(rc.VolumeMounts)-1].Name != "ca" || volume(pod, "ca") == nil {
					t.Error("pool volume or mount missing")
				}
				if n := slices.Collect(func(yield func(string) bool) {
					for _, a := range rc.Args {
						if strings.HasPrefix(a, "--label=") && !yield(a) {
							return
						}
					}
				}); len(n) != 3 {
					t.Errorf("labels in args = %q", n)
				}
				dc := container(t, s.InitContainers, DinDContainerName)
				if dc.Image != "registry.example.com/docker:28.5-dind" || dc.Resources.Requests.Cpu().String() != "1" {
					t.Errorf("dind container = %+v", dc)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.check(t, mustBuildPod(t, tt.pool, tt.runner))
		})
	}
}

func TestBuildPodErrors(t *testing.T) {
	tests := []struct {
		name   string
		pool   *v1alpha1.RunnerPool
		runner *v1alpha1.Runner
		want   string
	}{
		{"nil pool", nil, runner(), "pool is nil"},
		{"nil runner", pool(), nil, "runner is nil"},
		{"not registered", pool(), runner(func(r *v1alpha1.Runner) { r.Status.Registration = nil }), "not registered"},
		{"empty uuid", pool(), runner(func(r *v1alpha1.Runner) { r.Status.Registration.UUID = "" }), "not registered"},
		{"no labels", pool(func(p *v1alpha1.RunnerPool) { p.Spec.Labels = nil }), runner(), "no labels"},
		{"empty label", pool(func(p *v1alpha1.RunnerPool) { p.Spec.Labels = []string{""} }), runner(), "empty label"},
		{"no url", pool(func(p *v1alpha1.RunnerPool) { p.Spec.Forgejo.URL = "" }), runner(), "no spec.forgejo.url"},
		{"remote backend", pool(func(p *v1alpha1.RunnerPool) { p.Spec.Backend = v1alpha1.BackendRemote }), runner(), "remote"},
		{"no uid", pool(), runner(func(r *v1alpha1.Runner) { r.UID = "" }), "no UID"},
		{"other namespace", pool(), runner(func(r *v1alpha1.Runner) { r.Namespace = "elsewhere" }), "namespace"},
		{"other pool", pool(), runner(func(r *v1alpha1.Runner) { r.Spec.PoolName = "other" }), "belongs to pool"},
		{
			"storage class without size",
			pool(withDinD(v1alpha1.DinDPrivileged), func(p *v1alpha1.RunnerPool) {
				p.Spec.DinD.Storage = &v1alpha1.DinDStorage{StorageClassName: ptr.To("fast")}
			}),
			runner(), "sizeLimit",
		},
		{
			"reserved volume name",
			pool(withPodTemplate(func(tpl *v1alpha1.PodTemplateOverrides) {
				tpl.Volumes = []corev1.Volume{{Name: volumeToken, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
			})),
			runner(), "reserves",
		},
		{
			"mount over the token",
			pool(func(p *v1alpha1.RunnerPool) {
				p.Spec.Runner.VolumeMounts = []corev1.VolumeMount{{Name: "x", MountPath: "/etc/forgejo-runner/"}}
			}),
			runner(), "mounts over",
		},
		{
			"persistent runner with handle",
			pool(), runner(withHandle("h"), func(r *v1alpha1.Runner) { r.Spec.Mode = v1alpha1.ModePersistent }),
			"handle",
		},
		{
			"persistent capacity above one",
			pool(func(p *v1alpha1.RunnerPool) { p.Spec.Runner.Capacity = 4 }),
			runner(func(r *v1alpha1.Runner) { r.Spec.Mode = v1alpha1.ModePersistent }),
			"capacity",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod, err := BuildPod(tt.pool, tt.runner)
			if err == nil {
				t.Fatalf("BuildPod succeeded: %v", pod.Name)
			}
			if !errors.Is(err, ErrInvalidInput) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want ErrInvalidInput mentioning %q", err, tt.want)
			}
		})
	}
}

// The builder must leave its inputs alone and hand back nothing that aliases them: the reconciler
// mutates what it gets (defaults, patches) and the pool lives in a shared informer cache.
func TestBuildPodNoAliasing(t *testing.T) {
	p, r := fullPool(), runner(withHandle("h"))
	p0, r0 := p.DeepCopy(), r.DeepCopy()

	pod := mustBuildPod(t, p, r)
	if !reflect.DeepEqual(p, p0) || !reflect.DeepEqual(r, r0) {
		t.Fatal("BuildPod modified its inputs")
	}

	pod.Labels["team"] = "changed"
	pod.Annotations["x"] = "y"
	pod.Spec.NodeSelector["kubernetes.io/arch"] = "changed"
	pod.Spec.Tolerations[0].Key = "changed"
	pod.Spec.Affinity.NodeAffinity = nil
	*pod.Spec.RuntimeClassName = "changed"
	*pod.Spec.TerminationGracePeriodSeconds = 1
	pod.Spec.ImagePullSecrets[0].Name = "changed"
	rc := &pod.Spec.Containers[0]
	rc.Env[len(rc.Env)-1].Value = "changed"
	rc.VolumeMounts[len(rc.VolumeMounts)-1].MountPath = "/changed"
	rc.Resources.Limits[corev1.ResourceMemory] = *quantity("1Ti")
	pod.Spec.Volumes[len(pod.Spec.Volumes)-1].ConfigMap.Name = "changed"
	pod.Spec.InitContainers[0].Resources.Requests[corev1.ResourceCPU] = *quantity("64")
	for _, v := range pod.Spec.Volumes {
		if v.Ephemeral != nil {
			*v.Ephemeral.VolumeClaimTemplate.Spec.StorageClassName = "changed"
		}
	}
	if !reflect.DeepEqual(p, p0) {
		t.Error("the built pod shares memory with the pool")
	}
}

func TestPodSpecHash(t *testing.T) {
	a := mustBuildPod(t, pool(), runner())
	b := mustBuildPod(t, pool(), runner())
	if a.Annotations[AnnotationPodSpecHash] != b.Annotations[AnnotationPodSpecHash] {
		t.Error("equal inputs give different hashes")
	}
	c := mustBuildPod(t, pool(func(p *v1alpha1.RunnerPool) { p.Spec.Runner.Image = "runner:99" }), runner())
	if a.Annotations[AnnotationPodSpecHash] == c.Annotations[AnnotationPodSpecHash] {
		t.Error("a changed pool gives the same hash")
	}
	// The API server's own status and metadata do not shape the pod.
	d := mustBuildPod(t, pool(func(p *v1alpha1.RunnerPool) {
		p.ResourceVersion = "99"
		p.Status.Busy = 3
	}), runner(func(r *v1alpha1.Runner) { r.Status.Phase = v1alpha1.RunnerBusy }))
	if a.Annotations[AnnotationPodSpecHash] != d.Annotations[AnnotationPodSpecHash] {
		t.Error("status changes alter the hash")
	}
}

func TestBuildPodLongRunnerName(t *testing.T) {
	long := strings.Repeat("a", 200) + "." + strings.Repeat("b", 52)
	pod := mustBuildPod(t, pool(), runner(withRunnerName(long)))
	if len(pod.Name) > 63 || pod.Labels[LabelRunner] == long {
		t.Errorf("pod name %q / runner label %q not shortened", pod.Name, pod.Labels[LabelRunner])
	}
	if got := volume(pod, volumeToken).Secret.SecretName; got != SecretName(runner(withRunnerName(long))) {
		t.Errorf("token volume names Secret %q", got)
	}
}
