package install

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/cluster"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/eventually"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/operatorproc"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/runnerplay"
)

// world is a simulated cluster, the Forgejo simulator, the runner player and a built operator.
type world struct {
	cluster *cluster.Cluster
	sim     *forgejosim.Server
	url     string
	bin     string
	// dir keeps the operators' logs.
	dir string
}

func startWorld(t *testing.T) *world {
	t.Helper()
	w := &world{cluster: cluster.StartForTest(t, cluster.Options{}), dir: t.TempDir()}
	w.sim, w.url = forgejosim.NewTestServer(t, forgejosim.Options{AdminToken: "admin-token", Seed: 11})
	ctx, cancel := context.WithCancel(context.Background())
	player := &runnerplay.Player{Cluster: w.cluster, TaskDuration: 20 * time.Millisecond, Logf: t.Logf}
	done := make(chan struct{})
	go func() {
		defer close(done)
		player.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	bin, err := operatorproc.Build(t.Context(), repoRoot(t), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w.bin = bin
	// The Prometheus Operator's kinds, so that the chart's ServiceMonitor and PrometheusRule
	// can be applied: an open schema is enough to prove the objects are well-formed enough
	// to be stored.
	for _, kind := range []string{"ServiceMonitor", "PrometheusRule"} {
		w.stubCRD(t, "monitoring.coreos.com", kind)
	}
	return w
}

func (w *world) stubCRD(t *testing.T, group, kind string) {
	t.Helper()
	plural := map[string]string{"ServiceMonitor": "servicemonitors", "PrometheusRule": "prometheusrules"}[kind]
	crd := &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: plural + "." + group},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: group, Scope: apiextensionsv1.NamespaceScoped,
			Names: apiextensionsv1.CustomResourceDefinitionNames{Kind: kind, Plural: plural, ListKind: kind + "List"},
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: "v1", Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object", XPreserveUnknownFields: ptr.To(true),
				}},
			}},
		},
	}
	// The cluster's client knows no CRD type; it takes the object as unstructured.
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(crd)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetAPIVersion("apiextensions.k8s.io/v1")
	u.SetKind("CustomResourceDefinition")
	if err := w.cluster.Client.Create(t.Context(), u); err != nil {
		t.Fatalf("create stub CRD %s: %v", crd.Name, err)
	}
	eventually.True(t, time.Minute, crd.Name+" established", func() (bool, string) {
		got := &unstructured.Unstructured{}
		got.SetAPIVersion("apiextensions.k8s.io/v1")
		got.SetKind("CustomResourceDefinition")
		if err := w.cluster.Client.Get(t.Context(), client.ObjectKey{Name: crd.Name}, got); err != nil {
			return false, err.Error()
		}
		conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
		for _, c := range conds {
			if c, ok := c.(map[string]any); ok && c["type"] == "Established" && c["status"] == "True" {
				return true, ""
			}
		}
		return false, "not established"
	})
}

func (w *world) namespace(t *testing.T, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}}}
	if err := w.cluster.Client.Create(t.Context(), ns); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
}

// apply is `kubectl apply --server-side` of every object, CRDs and Namespaces first as
// kubectl and Helm order them.
func (w *world) apply(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	first := func(o *unstructured.Unstructured) bool {
		return o.GetKind() == "CustomResourceDefinition" || o.GetKind() == "Namespace"
	}
	ordered := slices.Concat(slices.DeleteFunc(slices.Clone(objs), func(o *unstructured.Unstructured) bool { return !first(o) }),
		slices.DeleteFunc(slices.Clone(objs), first))
	for _, o := range ordered {
		if err := w.cluster.Client.Apply(t.Context(), client.ApplyConfigurationFromUnstructured(o),
			client.FieldOwner("install-test"), client.ForceOwnership); err != nil {
			t.Fatalf("apply %s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
	}
}

// kubeconfigFor writes a kubeconfig holding a token the API server issued, through the
// TokenRequest API, for this ServiceAccount: whoever uses it has that account's RBAC only.
func (w *world) kubeconfigFor(t *testing.T, namespace, serviceAccount string) string {
	t.Helper()
	cs, err := kubernetes.NewForConfig(w.cluster.Config)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(t.Context(), serviceAccount,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("request a token for %s/%s: %v", namespace, serviceAccount, err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["sim"] = &clientcmdapi.Cluster{Server: w.cluster.Config.Host, CertificateAuthorityData: w.cluster.Config.CAData}
	cfg.AuthInfos["sa"] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["sa"] = &clientcmdapi.Context{Cluster: "sim", AuthInfo: "sa", Namespace: namespace}
	cfg.CurrentContext = "sa"
	path := filepath.Join(t.TempDir(), serviceAccount+".kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// operatorArgs are the rendered Deployment's arguments, with the addresses a process on this
// machine can bind and the Lease namespace a pod would take from its service account mount.
func operatorArgs(t *testing.T, deploy *unstructured.Unstructured, kubeconfig, namespace string) []string {
	t.Helper()
	containers, _, _ := unstructured.NestedSlice(deploy.Object, "spec", "template", "spec", "containers")
	if len(containers) != 1 {
		t.Fatalf("the Deployment has %d containers, want 1", len(containers))
	}
	raw, _, _ := unstructured.NestedStringSlice(containers[0].(map[string]any), "args")
	args := append([]string{}, raw...)
	metrics, err := operatorproc.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	hook, err := operatorproc.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	// Later flags win: the process listens where this machine lets it.
	return append(args, "--kubeconfig="+kubeconfig, "--leader-election-namespace="+namespace,
		"--metrics-bind-address="+metrics, "--webhook-bind-address="+hook, "--poll-interval=1s")
}

// serveJob runs the operator with these arguments and shows that it serves a job of a pool in
// poolNamespace, then deletes the pool (the operator removes its finalizer) and stops.
func (w *world) serveJob(t *testing.T, args []string, poolNamespace string) {
	t.Helper()
	op, err := operatorproc.Start(t.Context(), w.bin, operatorproc.Options{
		Args: args, Env: []string{"POD_IP=127.0.0.1"}, LogPath: filepath.Join(t.TempDir(), "operator.log"),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		op.Stop()
		if t.Failed() {
			if log, err := os.ReadFile(op.LogPath); err == nil {
				t.Logf("operator log:\n%s", log)
			}
		}
	}()
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "forgejo-token", Namespace: poolNamespace},
		StringData: map[string]string{"token": "admin-token"},
	}
	if err := w.cluster.Client.Create(t.Context(), secret); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
	pool := &v1alpha1.RunnerPool{
		ObjectMeta: metav1.ObjectMeta{Name: "install", Namespace: poolNamespace},
		Spec: v1alpha1.RunnerPoolSpec{
			Forgejo: v1alpha1.ForgejoConnection{URL: w.url, Scope: v1alpha1.ScopeGlobal,
				TokenSecretRef: v1alpha1.SecretKeySelector{Name: secret.Name}},
			Labels: []string{"install-" + poolNamespace + ":host"},
		},
	}
	if err := w.cluster.Client.Create(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	jobs, err := w.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: "acme/app", RunsOn: []string{"install-" + poolNamespace}})
	if err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 2*time.Minute, "the job to be served", func() (bool, string) {
		if exited, err := op.Exited(); exited {
			t.Fatalf("the operator exited: %v", err)
		}
		got, _ := w.sim.Job(jobs[0].ID)
		return got.Status == forgejosim.JobSuccess, "job is " + string(got.Status)
	})
	if err := w.cluster.Client.Delete(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, time.Minute, "the pool to be gone", func() (bool, string) {
		err := w.cluster.Client.Get(t.Context(), client.ObjectKeyFromObject(pool), &v1alpha1.RunnerPool{})
		return client.IgnoreNotFound(err) == nil && err != nil, fmt.Sprintf("get: %v", err)
	})
}

// TestInstallsServeJobs applies each way of installing to one simulated cluster and runs the
// operator as each install's ServiceAccount: the chart with its defaults (cluster scope), the
// chart confined to one namespace, config/default and config/namespaced. The chart with every
// option on is applied too, to show that each object it renders is one the API server takes.
func TestInstallsServeJobs(t *testing.T) {
	w := startWorld(t)

	t.Run("chart defaults", func(t *testing.T) {
		const ns = "fro-chart"
		w.namespace(t, ns)
		objs, err := renderChart(t, "forgejo-runner-operator", ns, nil)
		if err != nil {
			t.Fatal(err)
		}
		checkDefaults(t, objs)
		w.apply(t, objs)
		deploy := find(t, objs, "Deployment", "forgejo-runner-operator")
		w.serveJob(t, operatorArgs(t, deploy, w.kubeconfigFor(t, ns, "forgejo-runner-operator"), ns), "default")
	})

	t.Run("chart namespace scope", func(t *testing.T) {
		const ns = "fro-tenant"
		w.namespace(t, ns)
		objs, err := renderChart(t, "runners", ns, map[string]any{"scope": "namespace"})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			if o.GetKind() == "ClusterRole" || o.GetKind() == "ClusterRoleBinding" {
				t.Errorf("namespace scope renders %s %s", o.GetKind(), o.GetName())
			}
		}
		w.apply(t, objs)
		deploy := find(t, objs, "Deployment", "runners-forgejo-runner-operator")
		w.serveJob(t, operatorArgs(t, deploy, w.kubeconfigFor(t, ns, "runners-forgejo-runner-operator"), ns), ns)
	})

	t.Run("chart every option", func(t *testing.T) {
		const ns = "fro-full"
		w.namespace(t, ns)
		w.namespace(t, "ci")
		objs, err := renderChart(t, "full", ns, fullValues("webhook", "ci"))
		if err != nil {
			t.Fatal(err)
		}
		checkFull(t, objs)
		w.apply(t, objs)
	})

	t.Run("kustomize config/default", func(t *testing.T) {
		objs := renderKustomization(t, "default")
		w.apply(t, objs)
		const ns = "forgejo-runner-operator-system"
		deploy := find(t, objs, "Deployment", "forgejo-runner-operator")
		w.serveJob(t, operatorArgs(t, deploy, w.kubeconfigFor(t, ns, "forgejo-runner-operator"), ns), "default")
	})

	// The namespace admin's install: Roles only, the operator in the namespace it serves, with
	// the CRDs installed beforehand by the cluster admin (here by the subtests above).
	t.Run("kustomize config/namespaced", func(t *testing.T) {
		const ns = "forgejo-runners"
		w.namespace(t, ns)
		objs := renderKustomization(t, "namespaced")
		for _, o := range objs {
			if o.GetNamespace() != ns && o.GetKind() != "CustomResourceDefinition" {
				t.Errorf("config/namespaced renders %s %s outside %s", o.GetKind(), o.GetName(), ns)
			}
		}
		w.apply(t, objs)
		deploy := find(t, objs, "Deployment", "")
		args := operatorArgs(t, deploy, w.kubeconfigFor(t, ns, "forgejo-runner-operator"), ns)
		// kubelet expands $(POD_NAMESPACE) from the downward API; a process gets it here.
		for i := range args {
			args[i] = strings.ReplaceAll(args[i], "$(POD_NAMESPACE)", ns)
		}
		if !slices.Contains(args, "--watch-namespace="+ns) {
			t.Fatalf("config/namespaced does not confine the operator to %s: %q", ns, args)
		}
		w.serveJob(t, args, ns)
	})
}

// checkDefaults: what a plain `helm install` gives, in the points users rely on.
func checkDefaults(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	deploy := find(t, objs, "Deployment", "forgejo-runner-operator")
	if n, _, _ := unstructured.NestedFieldNoCopy(deploy.Object, "spec", "replicas"); fmt.Sprint(n) != "2" {
		t.Errorf("default replicas %v, want 2", n)
	}
	surge, _, _ := unstructured.NestedFieldNoCopy(deploy.Object, "spec", "strategy", "rollingUpdate", "maxSurge")
	unavailable, _, _ := unstructured.NestedFieldNoCopy(deploy.Object, "spec", "strategy", "rollingUpdate", "maxUnavailable")
	if fmt.Sprint(surge) != "1" || fmt.Sprint(unavailable) != "0" {
		t.Errorf("rolling update surge %v unavailable %v, want 1 and 0", surge, unavailable)
	}
	if nonRoot, _, _ := unstructured.NestedBool(deploy.Object, "spec", "template", "spec", "securityContext", "runAsNonRoot"); !nonRoot {
		t.Error("the pod may run as root")
	}
	// The ClusterRole is the generated one, rule for rule.
	generated := cluster.ManagerRole(t)
	var rendered rbacv1.ClusterRole
	convert(t, find(t, objs, "ClusterRole", "forgejo-runner-operator-manager"), &rendered)
	if !reflect.DeepEqual(rendered.Rules, generated.Rules) {
		t.Errorf("the chart's ClusterRole rules differ from config/rbac/role.yaml:\n%v\n%v", rendered.Rules, generated.Rules)
	}
	lease := find(t, objs, "Role", "forgejo-runner-operator-leader-election")
	if lease.GetNamespace() != "fro-chart" {
		t.Errorf("the Lease Role is in %q, want the release namespace", lease.GetNamespace())
	}
	for _, kind := range []string{"ServiceMonitor", "PrometheusRule", "Ingress", "PersistentVolumeClaim", "ValidatingAdmissionPolicy", "NetworkPolicy", "ConfigMap"} {
		for _, o := range objs {
			if o.GetKind() == kind {
				t.Errorf("defaults render an optional %s %s", kind, o.GetName())
			}
		}
	}
}

// checkFull: the options render what they say, from config/'s sources.
func checkFull(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	deploy := find(t, objs, "Deployment", "full-forgejo-runner-operator")
	if n, _, _ := unstructured.NestedFieldNoCopy(deploy.Object, "spec", "replicas"); fmt.Sprint(n) != "1" {
		t.Errorf("with records the Deployment has %v replicas, want 1", n)
	}
	if s, _, _ := unstructured.NestedString(deploy.Object, "spec", "strategy", "type"); s != "Recreate" {
		t.Errorf("with records the strategy is %q, want Recreate", s)
	}
	cm := find(t, objs, "ConfigMap", "full-forgejo-runner-operator-dashboard")
	dashboard, _, _ := unstructured.NestedString(cm.Object, "data", "forgejo-runner-operator.json")
	want, err := os.ReadFile(filepath.Join(repoRoot(t), "config", "grafana", "forgejo-runner-operator.json"))
	if err != nil {
		t.Fatal(err)
	}
	var a, b any
	if json.Unmarshal([]byte(dashboard), &a) != nil || json.Unmarshal(want, &b) != nil || !reflect.DeepEqual(a, b) {
		t.Error("the dashboard ConfigMap does not hold config/grafana's dashboard")
	}
	rule := find(t, objs, "PrometheusRule", "")
	if groups, _, _ := unstructured.NestedSlice(rule.Object, "spec", "groups"); len(groups) == 0 {
		t.Error("the PrometheusRule has no groups")
	}
	if np := find(t, objs, "NetworkPolicy", "forgejo-runner-egress"); np.GetNamespace() != "ci" {
		t.Errorf("the runner NetworkPolicy is in %q, want ci", np.GetNamespace())
	}
	for _, kind := range []string{"ServiceMonitor", "Ingress", "PersistentVolumeClaim", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} {
		find(t, objs, kind, "")
	}
}

func convert(t *testing.T, o *unstructured.Unstructured, into any) {
	t.Helper()
	data, err := json.Marshal(o.Object)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, into); err != nil {
		t.Fatal(err)
	}
}
