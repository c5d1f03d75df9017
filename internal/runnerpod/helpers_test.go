package runnerpod

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

const (
	testNamespace = "ci"
	testPool      = "linux"
	testRunner    = "linux-4711"
	testUID       = "0b6f3c1e-8a7d-4d7e-9a55-3b1f1c2d9e01"
	testUUID      = "7f9c2b1a-1111-4222-8333-944455556666"
	testURL       = "https://forgejo.example.com"
	testLabel     = "docker:docker://node:22-bookworm"
)

// pool builds a RunnerPool as the API server would return it with defaults applied only where
// the builders must cope without them; opts adjust it.
func pool(opts ...func(*v1alpha1.RunnerPool)) *v1alpha1.RunnerPool {
	p := &v1alpha1.RunnerPool{
		ObjectMeta: metav1.ObjectMeta{Name: testPool, Namespace: testNamespace, UID: "pool-uid"},
		Spec: v1alpha1.RunnerPoolSpec{
			Forgejo: v1alpha1.ForgejoConnection{
				URL:            testURL,
				Scope:          v1alpha1.ScopeOrganization,
				Organization:   "acme",
				TokenSecretRef: v1alpha1.SecretKeySelector{Name: "forgejo-api", Key: "token"},
			},
			Labels: []string{testLabel},
		},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

// runner builds a registered ephemeral Runner of pool testPool; opts adjust it.
func runner(opts ...func(*v1alpha1.Runner)) *v1alpha1.Runner {
	r := &v1alpha1.Runner{
		ObjectMeta: metav1.ObjectMeta{Name: testRunner, Namespace: testNamespace, UID: testUID},
		Spec:       v1alpha1.RunnerSpec{PoolName: testPool, Mode: v1alpha1.ModeEphemeral},
		Status: v1alpha1.RunnerStatus{
			Registration: &v1alpha1.Registration{ID: 42, UUID: testUUID, Name: testRunner},
		},
	}
	for _, o := range opts {
		o(r)
	}
	return r
}

func withHandle(h string) func(*v1alpha1.Runner) {
	return func(r *v1alpha1.Runner) { r.Spec.Job = &v1alpha1.JobRef{ID: 4711, Handle: h} }
}

func withRunnerName(name string) func(*v1alpha1.Runner) {
	return func(r *v1alpha1.Runner) { r.Name = name }
}

func withDinD(mode v1alpha1.DinDMode) func(*v1alpha1.RunnerPool) {
	return func(p *v1alpha1.RunnerPool) { p.Spec.DinD.Mode = mode }
}

// withDinDEnabled sets only the deprecated field, as pools written before mode did.
func withDinDEnabled(enabled bool) func(*v1alpha1.RunnerPool) {
	return func(p *v1alpha1.RunnerPool) { p.Spec.DinD.Enabled = &enabled }
}

func withPodTemplate(f func(*v1alpha1.PodTemplateOverrides)) func(*v1alpha1.RunnerPool) {
	return func(p *v1alpha1.RunnerPool) {
		if p.Spec.Runner.PodTemplate == nil {
			p.Spec.Runner.PodTemplate = &v1alpha1.PodTemplateOverrides{}
		}
		f(p.Spec.Runner.PodTemplate)
	}
}

func quantity(s string) *resource.Quantity {
	q := resource.MustParse(s)
	return &q
}

func mustBuildPod(t *testing.T, p *v1alpha1.RunnerPool, r *v1alpha1.Runner) *corev1.Pod {
	t.Helper()
	pod, err := BuildPod(p, r)
	if err != nil {
		t.Fatalf("BuildPod: %v", err)
	}
	validatePod(t, pod)
	return pod
}

// validatePod checks what the API server's validation would reject and can be checked without
// k8s.io/kubernetes: names, labels, annotations, volume and mount references, env names,
// sidecar shape.
func validatePod(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	errs := validation.IsDNS1123Subdomain(pod.Name)
	errs = append(errs, validation.IsDNS1123Label(pod.Namespace)...)
	for k, v := range pod.Labels {
		errs = append(errs, validation.IsQualifiedName(k)...)
		errs = append(errs, validation.IsValidLabelValue(v)...)
	}
	for k := range pod.Annotations {
		errs = append(errs, validation.IsQualifiedName(k)...)
	}
	if len(pod.OwnerReferences) != 1 || pod.OwnerReferences[0].UID == "" {
		errs = append(errs, "want exactly one owner reference with a UID")
	}

	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		errs = append(errs, validation.IsDNS1123Label(v.Name)...)
		if _, dup := volumes[v.Name]; dup {
			errs = append(errs, "duplicate volume "+v.Name)
		}
		volumes[v.Name] = v
		if v.Secret != nil {
			errs = append(errs, validation.IsDNS1123Subdomain(v.Secret.SecretName)...)
		}
		if v.Ephemeral != nil {
			// The PVC is named <pod>-<volume> and must be a valid object name.
			errs = append(errs, validation.IsDNS1123Subdomain(pod.Name+"-"+v.Name)...)
		}
	}
	names := map[string]bool{}
	privileged := 0
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		errs = append(errs, validation.IsDNS1123Label(c.Name)...)
		if names[c.Name] {
			errs = append(errs, "duplicate container "+c.Name)
		}
		names[c.Name] = true
		if c.Image == "" {
			errs = append(errs, c.Name+": no image")
		}
		paths := map[string]bool{}
		for _, m := range c.VolumeMounts {
			if _, ok := volumes[m.Name]; !ok {
				errs = append(errs, c.Name+": mount of unknown volume "+m.Name)
			}
			if paths[m.MountPath] {
				errs = append(errs, c.Name+": duplicate mount path "+m.MountPath)
			}
			paths[m.MountPath] = true
		}
		envs := map[string]bool{}
		for _, e := range c.Env {
			errs = append(errs, validation.IsEnvVarName(e.Name)...)
			if envs[e.Name] {
				errs = append(errs, c.Name+": duplicate env "+e.Name)
			}
			envs[e.Name] = true
		}
		if sc := c.SecurityContext; sc != nil && sc.Privileged != nil && *sc.Privileged {
			privileged++
			if c.Name != DinDContainerName {
				errs = append(errs, c.Name+" is privileged")
			}
		}
	}
	for _, c := range pod.Spec.InitContainers {
		// Only a native sidecar (restartPolicy Always) keeps running beside the runner; a plain
		// init container would block it forever.
		if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			errs = append(errs, c.Name+" is an init container but not a native sidecar")
		}
		if c.StartupProbe == nil {
			errs = append(errs, c.Name+" has no startup probe, so the runner may start before it")
		}
	}
	if privileged > 1 {
		errs = append(errs, "more than one privileged container")
	}
	if len(errs) > 0 {
		t.Errorf("pod %s is invalid:\n  %s", pod.Name, strings.Join(errs, "\n  "))
	}
}

// golden compares obj, as YAML, with testdata/name; -update rewrites the file.
func golden(t *testing.T, name string, obj any) {
	t.Helper()
	got, err := yaml.Marshal(obj)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	file := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatalf("update golden: %v", err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("read golden (run with -update to create): %v", err)
	}
	if string(got) != string(want) {
		t.Errorf("%s differs from the built object (run `go test ./internal/runnerpod -update` and review the diff):\n--- got\n%s", file, got)
	}
}

func container(t *testing.T, cs []corev1.Container, name string) corev1.Container {
	t.Helper()
	c := findContainer(cs, name)
	if c == nil {
		t.Fatalf("no container %q", name)
	}
	return *c
}

func volume(pod *corev1.Pod, name string) *corev1.Volume {
	for i := range pod.Spec.Volumes {
		if pod.Spec.Volumes[i].Name == name {
			return &pod.Spec.Volumes[i]
		}
	}
	return nil
}

func envValue(c corev1.Container, name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}
