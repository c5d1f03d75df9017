package security

import (
	"fmt"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/cluster"
)

// access is one verb on one resource: what the code needs, read off the generated ClusterRole.
type access struct{ group, resource, verb string }

func (a access) String() string { return fmt.Sprintf("%s %s.%s", a.verb, a.resource, a.group) }

// clusterScoped are the resources the generated ClusterRole names that have no namespace.
var clusterScoped = map[string]bool{"tokenreviews": true, "subjectaccessreviews": true}

// codeNeeds is every verb on every resource config/rbac/role.yaml grants: `make generate` writes
// it from the markers in cmd/forgejo-runner-operator/rbac.go, and the e2e tests run the operator
// as that role and nothing more.
func codeNeeds(t *testing.T) []access {
	t.Helper()
	role := cluster.ManagerRole(t)
	var out []access
	for _, rule := range role.Rules {
		for _, g := range rule.APIGroups {
			for _, r := range rule.Resources {
				for _, v := range rule.Verbs {
					out = append(out, access{g, r, v})
				}
			}
		}
	}
	if len(out) < 20 {
		t.Fatalf("the generated ClusterRole grants only %v", out)
	}
	return out
}

func serviceAccount(namespace string) (string, []string) {
	return "system:serviceaccount:" + namespace + ":forgejo-runner-operator",
		[]string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"}
}

// allowed asks the API server's authorizer, through a SubjectAccessReview, whether the
// operator's service account in saNamespace may do a in namespace (empty: cluster-wide).
func allowed(t *testing.T, saNamespace string, a access, namespace string) bool {
	t.Helper()
	user, groups := serviceAccount(saNamespace)
	attrs := &authorizationv1.ResourceAttributes{Group: a.group, Resource: a.resource, Verb: a.verb, Namespace: namespace}
	if a.resource == "namespaces" {
		attrs.Name = namespace // the operator reads the pool's own Namespace object only
	}
	if sub, res, ok := cutSubresource(a.resource); ok {
		attrs.Resource, attrs.Subresource = res, sub
	}
	review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: user, Groups: groups, ResourceAttributes: attrs,
	}}
	if err := apiServer.Client.Create(t.Context(), review); err != nil {
		t.Fatal(err)
	}
	return review.Status.Allowed
}

func cutSubresource(resource string) (sub, res string, ok bool) {
	for i := range resource {
		if resource[i] == '/' {
			return resource[i+1:], resource[:i], true
		}
	}
	return "", resource, false
}

func createNamespaces(t *testing.T, names ...string) {
	t.Helper()
	for _, name := range names {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if err := apiServer.Client.Create(t.Context(), ns); client.IgnoreAlreadyExists(err) != nil {
			t.Fatal(err)
		}
	}
}

var leases = []access{{"coordination.k8s.io", "leases", "get"}, {"coordination.k8s.io", "leases", "create"}, {"coordination.k8s.io", "leases", "update"}}

// config/namespaced grants, in the one namespace it is applied to, every verb the code uses
// there and the Lease rights, and nothing in any other namespace or cluster-wide.
func TestNamespacedInstallHasRolesOnly(t *testing.T) {
	const watched = "forgejo-runners"
	objs := render(t, "namespaced")
	for _, obj := range objs {
		switch obj.GetKind() {
		case "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Namespace":
			t.Errorf("config/namespaced contains %s %s", obj.GetKind(), obj.GetName())
		}
		if obj.GetNamespace() != watched {
			t.Errorf("%s %s is in namespace %q, not the install's", obj.GetKind(), obj.GetName(), obj.GetNamespace())
		}
	}
	createNamespaces(t, watched, "elsewhere")
	apply(t, objs)

	for _, a := range append(codeNeeds(t), leases...) {
		if clusterScoped[a.resource] {
			continue // /metrics authentication; this install serves /metrics without it
		}
		if !allowed(t, watched, a, watched) {
			t.Errorf("%s is refused in the watched namespace", a)
		}
		if allowed(t, watched, a, "elsewhere") {
			t.Errorf("%s is allowed in another namespace", a)
		}
		if allowed(t, watched, a, "") {
			t.Errorf("%s is allowed cluster-wide", a)
		}
	}
	// The namespaced install runs the operator with the flags that match its Roles.
	var deploy *unstructured.Unstructured
	for _, obj := range objs {
		if obj.GetKind() == "Deployment" {
			deploy = obj
		}
	}
	if deploy == nil {
		t.Fatal("config/namespaced has no Deployment")
	}
	containers, _, _ := unstructured.NestedSlice(deploy.Object, "spec", "template", "spec", "containers")
	args, _, _ := unstructured.NestedStringSlice(containers[0].(map[string]any), "args")
	for _, want := range []string{"--watch-namespace=$(POD_NAMESPACE)", "--metrics-secure=false", "--leader-elect"} {
		found := false
		for _, a := range args {
			found = found || a == want
		}
		if !found {
			t.Errorf("the operator's args %q lack %s", args, want)
		}
	}
}

// The cluster-wide install grants the code's verbs everywhere, and the Lease rights in the
// operator's own namespace only: the leader election Lease cannot be used to touch others'.
func TestClusterInstallKeepsLeasesInItsNamespace(t *testing.T) {
	const own = "forgejo-runner-operator-system"
	createNamespaces(t, own, "tenant-a")
	apply(t, render(t, "rbac"))

	for _, a := range codeNeeds(t) {
		if !allowed(t, own, a, "tenant-a") && !clusterScoped[a.resource] {
			t.Errorf("%s is refused in a pool's namespace", a)
		}
	}
	for _, a := range leases {
		if !allowed(t, own, a, own) {
			t.Errorf("%s is refused in the operator's namespace", a)
		}
		for _, ns := range []string{"tenant-a", ""} {
			if allowed(t, own, a, ns) {
				t.Errorf("%s is allowed in %q", a, ns)
			}
		}
	}
	for _, verb := range []string{"list", "watch", "delete", "patch"} {
		if a := (access{"coordination.k8s.io", "leases", verb}); allowed(t, own, a, own) {
			t.Errorf("%s is allowed: leader election needs get, create and update only", a)
		}
	}
}
