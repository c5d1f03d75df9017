package v1alpha1_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/cluster"
)

// The API server is shared by every test here; each object gets its own name.
var apiServer *cluster.Cluster

func TestMain(m *testing.M) {
	os.Exit(cluster.RunWithAPIServer(m, func(c *cluster.Cluster) { apiServer = c }))
}

func validPool(name string) *v1.RunnerPool {
	return &v1.RunnerPool{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: v1.RunnerPoolSpec{
			Forgejo: v1.ForgejoConnection{
				URL:            "https://forgejo.example.com",
				Scope:          v1.ScopeGlobal,
				TokenSecretRef: v1.SecretKeySelector{Name: "forgejo-token"},
			},
			Labels: []string{"docker:host"},
		},
	}
}

func TestSamplesAreAccepted(t *testing.T) {
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(root, "config", "samples", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 4 {
		t.Fatalf("expected at least four samples, found %d", len(files))
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			obj := &unstructured.Unstructured{}
			if err := yaml.Unmarshal(data, &obj.Object); err != nil {
				t.Fatalf("parse sample: %v", err)
			}
			obj.SetNamespace("default")
			if err := apiServer.Client.Create(t.Context(), obj); err != nil {
				t.Fatalf("sample rejected: %v", err)
			}
		})
	}
}

func TestDefaultsAreApplied(t *testing.T) {
	pool := validPool("defaults")
	if err := apiServer.Client.Create(t.Context(), pool); err != nil {
		t.Fatalf("create: %v", err)
	}
	var got v1.RunnerPool
	if err := apiServer.Client.Get(t.Context(), client.ObjectKeyFromObject(pool), &got); err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		field string
		got   any
		want  any
	}{
		{"spec.backend", got.Spec.Backend, v1.BackendKubernetes},
		{"spec.mode", got.Spec.Mode, v1.ModeEphemeral},
		{"spec.forgejo.tokenSecretRef.key", got.Spec.Forgejo.TokenSecretRef.Key, "token"},
		{"spec.scaling.minIdle", got.Spec.Scaling.MinIdle, int32(0)},
		{"spec.scaling.maxRunners", got.Spec.Scaling.MaxRunners, int32(10)},
		{"spec.scaling.scaleDownDelay", got.Spec.Scaling.ScaleDownDelay.Duration.String(), "5m0s"},
		{"spec.runner.image", got.Spec.Runner.Image, v1.DefaultRunnerImage},
		{"spec.runner.capacity", got.Spec.Runner.Capacity, int32(1)},
		{"spec.runner.automountServiceAccountToken", *got.Spec.Runner.AutomountServiceAccountToken, false},
		// No Docker daemon unless asked for: the image follows the mode, so none is filled in.
		{"spec.dind.mode", got.Spec.DinD.Mode, v1.DinDMode("")},
		{"effective dind mode", got.Spec.DinD.EffectiveMode(), v1.DinDNone},
		{"spec.dind.image", got.Spec.DinD.Image, ""},
		{"spec.history.limit", *got.Spec.History.Limit, int32(20)},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s defaulted to %v, want %v", c.field, c.got, c.want)
		}
	}
}

func TestInvalidPoolsAreRejected(t *testing.T) {
	cases := []struct {
		name    string
		mutate  func(*v1.RunnerPool)
		message string // must appear in the API server's answer
	}{
		{"repository scope without repository", func(p *v1.RunnerPool) {
			p.Spec.Forgejo.Scope = v1.ScopeRepository
		}, "spec.forgejo.repository must be set in owner/repo form"},
		{"repository not owner/repo", func(p *v1.RunnerPool) {
			p.Spec.Forgejo.Scope = v1.ScopeRepository
			p.Spec.Forgejo.Repository = "just-a-name"
		}, "spec.forgejo.repository must be set in owner/repo form"},
		{"repository with three parts", func(p *v1.RunnerPool) {
			p.Spec.Forgejo.Scope = v1.ScopeRepository
			p.Spec.Forgejo.Repository = "a/b/c"
		}, "spec.forgejo.repository must be set in owner/repo form"},
		{"repository on a global pool", func(p *v1.RunnerPool) {
			p.Spec.Forgejo.Repository = "owner/repo"
		}, "spec.forgejo.repository is only used with scope: repository"},
		{"organization scope without organization", func(p *v1.RunnerPool) {
			p.Spec.Forgejo.Scope = v1.ScopeOrganization
		}, "spec.forgejo.organization must be set when scope is organization"},
		{"organization on a repository pool", func(p *v1.RunnerPool) {
			p.Spec.Forgejo.Scope = v1.ScopeRepository
			p.Spec.Forgejo.Repository = "owner/repo"
			p.Spec.Forgejo.Organization = "org"
		}, "spec.forgejo.organization is only used with scope: organization"},
		{"unknown scope", func(p *v1.RunnerPool) {
			p.Spec.Forgejo.Scope = "galaxy"
		}, "spec.forgejo.scope"},
		{"url without scheme", func(p *v1.RunnerPool) {
			p.Spec.Forgejo.URL = "forgejo.example.com"
		}, "spec.forgejo.url must be an http:// or https:// URL"},
		{"missing token secret name", func(p *v1.RunnerPool) {
			p.Spec.Forgejo.TokenSecretRef.Name = ""
		}, "spec.forgejo.tokenSecretRef.name"},
		{"remote backend without remote", func(p *v1.RunnerPool) {
			p.Spec.Backend = v1.BackendRemote
		}, "spec.remote is required when backend is remote"},
		{"remote settings on kubernetes backend", func(p *v1.RunnerPool) {
			p.Spec.Remote = &v1.RemoteBackend{Endpoints: []string{"vmhost:7443"}, ClientTLSSecretRef: clientTLS()}
		}, "spec.remote is only used with backend: remote"},
		{"remote endpoint without port", func(p *v1.RunnerPool) {
			p.Spec.Backend = v1.BackendRemote
			p.Spec.Remote = &v1.RemoteBackend{Endpoints: []string{"vmhost"}, ClientTLSSecretRef: clientTLS()}
		}, "spec.remote.endpoints must be host:port addresses"},
		{"unknown backend", func(p *v1.RunnerPool) {
			p.Spec.Backend = "cloud"
		}, "spec.backend"},
		{"unknown mode", func(p *v1.RunnerPool) {
			p.Spec.Mode = "sometimes"
		}, "spec.mode"},
		{"minIdle above maxRunners", func(p *v1.RunnerPool) {
			p.Spec.Scaling.MinIdle = 5
			p.Spec.Scaling.MaxRunners = 2
		}, "spec.scaling.minIdle must not exceed spec.scaling.maxRunners"},
		{"replicas above maxRunners", func(p *v1.RunnerPool) {
			p.Spec.Mode = v1.ModePersistent
			p.Spec.Scaling.Replicas = ptr.To[int32](11)
		}, "spec.scaling.replicas must not exceed spec.scaling.maxRunners"},
		{"negative minIdle", func(p *v1.RunnerPool) {
			p.Spec.Scaling.MinIdle = -1
		}, "spec.scaling.minIdle"},
		{"no labels", func(p *v1.RunnerPool) {
			p.Spec.Labels = nil
		}, "spec.labels"},
		{"label with unknown scheme", func(p *v1.RunnerPool) {
			p.Spec.Labels = []string{"ubuntu:podman://ubuntu:24.04"}
		}, "each of spec.labels must be name[:scheme[:arg]]"},
		{"label with empty name", func(p *v1.RunnerPool) {
			p.Spec.Labels = []string{":docker://node:22"}
		}, "each of spec.labels must be name[:scheme[:arg]]"},
		{"label with a space", func(p *v1.RunnerPool) {
			p.Spec.Labels = []string{"my label"}
		}, "each of spec.labels must be name[:scheme[:arg]]"},
		{"dind storage class without size", func(p *v1.RunnerPool) {
			p.Spec.DinD.Storage = &v1.DinDStorage{StorageClassName: ptr.To("fast")}
		}, "spec.dind.storage.sizeLimit is required when storageClassName is set"},
		{"unknown dind mode", func(p *v1.RunnerPool) {
			p.Spec.DinD.Mode = "privileged"
		}, `spec.dind.mode: Unsupported value: "privileged": supported values: "None", "Rootless", "Privileged"`},
		{"deprecated enabled: true contradicting mode None", func(p *v1.RunnerPool) {
			p.Spec.DinD.Mode = v1.DinDNone
			p.Spec.DinD.Enabled = ptr.To(true)
		}, "spec.dind.enabled is deprecated and contradicts spec.dind.mode"},
		{"deprecated enabled: false contradicting mode Rootless", func(p *v1.RunnerPool) {
			p.Spec.DinD.Mode = v1.DinDRootless
			p.Spec.DinD.Enabled = ptr.To(false)
		}, "spec.dind.enabled is deprecated and contradicts spec.dind.mode"},
		{"history limit too large", func(p *v1.RunnerPool) {
			p.Spec.History.Limit = ptr.To[int32](100000)
		}, "spec.history.limit"},
		{"negative capacity", func(p *v1.RunnerPool) {
			p.Spec.Runner.Capacity = -1
		}, "spec.runner.capacity"},
	}
	cases = append(cases, struct {
		name    string
		mutate  func(*v1.RunnerPool)
		message string
	}{"name longer than a label value", func(p *v1.RunnerPool) {
		p.Name = strings.Repeat("n", 64)
	}, "metadata.name of a RunnerPool must be at most 63 characters"})
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pool := validPool(fmt.Sprintf("invalid-%d", i))
			tc.mutate(pool)
			err := apiServer.Client.Create(t.Context(), pool)
			if err == nil {
				t.Fatalf("accepted; want rejection mentioning %q", tc.message)
			}
			if !apierrors.IsInvalid(err) {
				t.Fatalf("want an Invalid error, got %v", err)
			}
			if !strings.Contains(err.Error(), tc.message) {
				t.Fatalf("error does not mention %q:\n%v", tc.message, err)
			}
		})
	}
}

// Each label form of forgejo-runner's name[:scheme[:arg]] must pass.
func TestValidLabelsAreAccepted(t *testing.T) {
	labels := []string{
		"linux",
		"self-hosted:host",
		"ubuntu-latest:docker://node:22-bookworm",
		"docker:docker://ghcr.io/catthehacker/ubuntu:act-24.04",
		"incus:lxc://debian/bookworm",
	}
	pool := validPool("valid-labels")
	pool.Spec.Labels = labels
	pool.Spec.DinD.Mode = v1.DinDRootless
	if err := apiServer.Client.Create(t.Context(), pool); err != nil {
		t.Fatalf("valid labels rejected: %v", err)
	}
}

// A label with the docker scheme runs its jobs in containers: on the kubernetes backend the pool
// must have a Docker daemon, or every such job would fail in the runner.
func TestDockerLabelsNeedADockerDaemon(t *testing.T) {
	docker := []string{"build:docker://node:22-bookworm", "plain:docker"}
	for _, labels := range [][]string{docker, {"linux:host", "build:docker://node:22"}} {
		pool := validPool("no-daemon")
		pool.Spec.Labels = labels
		err := apiServer.Client.Create(t.Context(), pool)
		if err == nil || !strings.Contains(err.Error(), "need a Docker daemon: set spec.dind.mode to Rootless or Privileged") {
			t.Fatalf("docker labels %v without a daemon: %v", labels, err)
		}
	}
	for name, mutate := range map[string]func(*v1.RunnerPool){
		"rootless":   func(p *v1.RunnerPool) { p.Spec.DinD.Mode = v1.DinDRootless },
		"privileged": func(p *v1.RunnerPool) { p.Spec.DinD.Mode = v1.DinDPrivileged },
		"enabled":    func(p *v1.RunnerPool) { p.Spec.DinD.Enabled = ptr.To(true) },
		"host":       func(p *v1.RunnerPool) { p.Spec.Labels = []string{"linux:host", "docker:host", "plain"} },
	} {
		pool := validPool("daemon-" + name)
		pool.Spec.Labels = docker
		mutate(pool)
		if err := apiServer.Client.Create(t.Context(), pool); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	off := validPool("daemon-off")
	off.Spec.Labels = docker
	off.Spec.DinD.Enabled = ptr.To(false)
	if err := apiServer.Client.Create(t.Context(), off); err == nil {
		t.Error("docker labels with the daemon turned off were accepted")
	}
}

func TestRunnerSpecIsImmutable(t *testing.T) {
	runner := &v1.Runner{
		ObjectMeta: metav1.ObjectMeta{Name: "immutable", Namespace: "default"},
		Spec: v1.RunnerSpec{
			PoolName: "trusted-dind",
			Mode:     v1.ModeEphemeral,
			Job:      &v1.JobRef{ID: 7, Handle: "h-1"},
		},
	}
	if err := apiServer.Client.Create(t.Context(), runner); err != nil {
		t.Fatalf("create runner: %v", err)
	}
	runner.Spec.Job.Handle = "h-2"
	err := apiServer.Client.Update(t.Context(), runner)
	if err == nil || !strings.Contains(err.Error(), "spec of a Runner is immutable") {
		t.Fatalf("changing a runner's job was not refused as immutable: %v", err)
	}
}

func clientTLS() corev1.LocalObjectReference { return corev1.LocalObjectReference{Name: "tls"} }

// Every mode is accepted, and so are pools that still say only the deprecated enabled, or say
// it in agreement with mode; each means what EffectiveMode says.
func TestDinDModesAndTheDeprecatedEnabledAreAccepted(t *testing.T) {
	cases := []struct {
		name    string
		mode    v1.DinDMode
		enabled *bool
		want    v1.DinDMode
	}{
		{"none", v1.DinDNone, nil, v1.DinDNone},
		{"rootless", v1.DinDRootless, nil, v1.DinDRootless},
		{"privileged", v1.DinDPrivileged, nil, v1.DinDPrivileged},
		{"enabled-true", "", ptr.To(true), v1.DinDPrivileged},
		{"enabled-false", "", ptr.To(false), v1.DinDNone},
		{"enabled-true-privileged", v1.DinDPrivileged, ptr.To(true), v1.DinDPrivileged},
		{"enabled-true-rootless", v1.DinDRootless, ptr.To(true), v1.DinDRootless},
		{"enabled-false-none", v1.DinDNone, ptr.To(false), v1.DinDNone},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pool := validPool("dind-" + tc.name)
			pool.Spec.DinD.Mode, pool.Spec.DinD.Enabled = tc.mode, tc.enabled
			if err := apiServer.Client.Create(t.Context(), pool); err != nil {
				t.Fatalf("rejected: %v", err)
			}
			var got v1.RunnerPool
			if err := apiServer.Client.Get(t.Context(), client.ObjectKeyFromObject(pool), &got); err != nil {
				t.Fatal(err)
			}
			if m := got.Spec.DinD.EffectiveMode(); m != tc.want {
				t.Errorf("effective mode %s, want %s", m, tc.want)
			}
		})
	}
}
