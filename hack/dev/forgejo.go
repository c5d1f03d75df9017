package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/cluster"
)

// devAdminToken is the simulator's admin token in the local demo; it guards nothing real.
const devAdminToken = "dev-admin-token"

// devWebhookSecret signs the simulator's webhook deliveries in the local demo.
const devWebhookSecret = "dev-webhook-secret"

type forgejoSim struct {
	server *forgejosim.Server
	http   *http.Server
}

func (f *forgejoSim) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = f.http.Shutdown(ctx)
	f.server.Close()
}

func startForgejo(addr string) (*forgejoSim, string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("listen for the Forgejo simulator on %s: %w", addr, err)
	}
	url := "http://" + ln.Addr().String()
	sim := forgejosim.New(forgejosim.Options{AdminToken: devAdminToken, PublicURL: url})
	srv := &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(os.Stderr, "dev: Forgejo simulator stopped: %v\n", err)
		}
	}()
	return &forgejoSim{server: sim, http: srv}, url, nil
}

// seedSamples gives the simulator the organization and repository the samples name, mints a
// scoped API token for each pool's Secret, and applies the samples.
func seedSamples(ctx context.Context, c *cluster.Cluster, sim *forgejosim.Server, root, webhookURL string) error {
	if err := sim.EnsureOrganization("brooktrails"); err != nil {
		return fmt.Errorf("seed organization: %w", err)
	}
	if err := sim.EnsureRepository("brooktrails/forgejo-runner-operator"); err != nil {
		return fmt.Errorf("seed repository: %w", err)
	}
	tokens := map[string]forgejosim.Scope{
		"forgejo-admin-token": forgejosim.InstanceScope(),
		"forgejo-org-token":   forgejosim.OrganizationScope("brooktrails"),
		"forgejo-repo-token":  forgejosim.RepositoryScope("brooktrails/forgejo-runner-operator"),
	}
	for name, scope := range tokens {
		token, err := sim.CreateToken(scope)
		if err != nil {
			return fmt.Errorf("mint token for %s: %w", name, err)
		}
		if err := createSecret(ctx, c, name, map[string]string{"token": token}); err != nil {
			return err
		}
	}
	if err := createSecret(ctx, c, "forgejo-webhook", map[string]string{"secret": devWebhookSecret}); err != nil {
		return err
	}
	// An instance-wide hook, signed with the secret the trusted-dind sample names.
	if _, err := sim.AddHook(forgejosim.HookConfig{URL: webhookURL, Secret: devWebhookSecret, Scope: forgejosim.InstanceScope()}); err != nil {
		return fmt.Errorf("add webhook: %w", err)
	}

	// The trusted-dind sample asks for Privileged DinD, which the operator runs only where the
	// cluster admin allows it; here the admin allows it for the samples' namespace.
	var ns corev1.Namespace
	if err := c.Client.Get(ctx, client.ObjectKey{Name: "default"}, &ns); err != nil {
		return fmt.Errorf("read namespace default: %w", err)
	}
	if ns.Labels == nil {
		ns.Labels = map[string]string{}
	}
	ns.Labels[v1alpha1.AllowPrivilegedDinDLabel] = "true"
	if err := c.Client.Update(ctx, &ns); err != nil {
		return fmt.Errorf("allow Privileged DinD in namespace default: %w", err)
	}

	samples, err := filepath.Glob(filepath.Join(root, "config", "samples", "*.yaml"))
	if err != nil {
		return fmt.Errorf("find samples: %w", err)
	}
	for _, path := range samples {
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read sample: %w", err)
		}
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(data, &obj.Object); err != nil {
			return fmt.Errorf("parse sample %s: %w", filepath.Base(path), err)
		}
		obj.SetNamespace("default")
		if err := c.Client.Create(ctx, obj); err != nil {
			return fmt.Errorf("apply sample %s: %w", filepath.Base(path), err)
		}
	}
	return nil
}

func createSecret(ctx context.Context, c *cluster.Cluster, name string, data map[string]string) error {
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		StringData: data,
	}
	if err := c.Client.Create(ctx, secret); err != nil {
		return fmt.Errorf("create Secret %s: %w", name, err)
	}
	return nil
}
