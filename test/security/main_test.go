// Package security applies what config/ ships for security (the admission policy, the Roles of
// both installs, the runner egress NetworkPolicy) to a real API server and checks what each
// allows and refuses, and runs the operator under the namespaced Roles alone.
package security

import (
	"os"
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/cluster"
)

// The API server is shared by every test here; each test uses namespaces of its own.
var apiServer *cluster.Cluster

func TestMain(m *testing.M) {
	os.Exit(cluster.RunWithAPIServer(m, func(c *cluster.Cluster) { apiServer = c }))
}

// render builds the kustomization config/<dir> as `kubectl apply -k` would.
func render(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), filepath.Join(root, "config", dir))
	if err != nil {
		t.Fatalf("kustomize config/%s: %v", dir, err)
	}
	var out []*unstructured.Unstructured
	for _, res := range resMap.Resources() {
		m, err := res.Map()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
	return out
}

// apply creates objs, skipping those of the kinds listed.
func apply(t *testing.T, objs []*unstructured.Unstructured, skipKinds ...string) {
	t.Helper()
	for _, obj := range objs {
		skip := false
		for _, k := range skipKinds {
			skip = skip || obj.GetKind() == k
		}
		if skip {
			continue
		}
		if err := apiServer.Client.Create(t.Context(), obj); client.IgnoreAlreadyExists(err) != nil {
			t.Fatalf("apply %s %s: %v", obj.GetKind(), obj.GetName(), err)
		}
	}
}
