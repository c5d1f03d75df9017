// Package install proves the two ways users install the operator: the Helm chart in
// charts/forgejo-runner-operator and the kustomization config/default. Each is rendered as its
// tool would (Helm and kustomize as Go libraries), applied server-side to a simulated cluster,
// and then the operator binary, holding only a token of the ServiceAccount the install made (so
// exactly the install's RBAC), serves a job from the Forgejo simulator. The rolling update test
// runs two replicas of the operator as processes behind a Deployment whose pods' readiness the
// test reports from the processes' /readyz.
package install

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/cluster"
)

func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func chartDir(t testing.TB) string {
	return filepath.Join(repoRoot(t), "charts", "forgejo-runner-operator")
}

// copies are the chart's files that config/ owns: the chart reads them with .Files.Get or
// installs them from crds/, and they must be the same bytes.
var copies = map[string]string{
	"crds/forgejo.brooktrails.org_runnerpools.yaml": "config/crd/bases/forgejo.brooktrails.org_runnerpools.yaml",
	"crds/forgejo.brooktrails.org_runners.yaml":     "config/crd/bases/forgejo.brooktrails.org_runners.yaml",
	"files/manager-role.yaml":                       "config/rbac/role.yaml",
	"files/namespaced-role.yaml":                    "config/namespaced/role.yaml",
	"files/alerts.yaml":                             "config/prometheus/alerts.yaml",
	"files/dashboard.json":                          "config/grafana/forgejo-runner-operator.json",
	"files/runnerpool-escalation-policy.yaml":       "config/policy/runnerpool-escalation-policy.yaml",
	"files/runnerpool-escalation-binding.yaml":      "config/policy/runnerpool-escalation-binding.yaml",
	"files/runner-egress-networkpolicy.yaml":        "config/samples/runner-egress-networkpolicy.yaml",
}

// TestChartCopiesMatchConfig keeps one source of truth: config/ (the CRDs and the ClusterRole
// are generated there by `make generate`). The chart holds copies; refresh them with
// `make chart-files` when this fails.
func TestChartCopiesMatchConfig(t *testing.T) {
	root := repoRoot(t)
	for inChart, inConfig := range copies {
		want, err := os.ReadFile(filepath.Join(root, inConfig))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(chartDir(t), inChart))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("charts/forgejo-runner-operator/%s differs from %s: run `make chart-files`", inChart, inConfig)
		}
	}
	// Every CRD config/ generates is in the chart.
	bases, err := filepath.Glob(filepath.Join(root, "config", "crd", "bases", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bases {
		if _, ok := copies["crds/"+filepath.Base(b)]; !ok {
			t.Errorf("config/crd/bases/%s is not in the chart's crds/", filepath.Base(b))
		}
	}
}

// fullValues turns every option on: what the chart can render, all at once.
func fullValues(secretName string, runnerNamespaces ...string) map[string]any {
	return map[string]any{
		"image":            map[string]any{"repository": "registry.example.com/brooktrails/forgejo-runner-operator", "digest": "sha256:" + strings.Repeat("ab", 32)},
		"imagePullSecrets": []any{map[string]any{"name": "registry"}},
		"operator": map[string]any{
			"logLevel": "debug", "pollInterval": "2s", "gcInterval": "30s",
			"webhookSecret": map[string]any{"existingSecret": secretName, "key": "secret"},
			"extraArgs":     []any{"--deregister-deadline=2m"},
			"extraEnv":      []any{map[string]any{"name": "TZ", "value": "UTC"}},
		},
		"webhook": map[string]any{"ingress": map[string]any{
			"enabled": true, "className": "nginx", "hosts": []any{"runners.example.com"},
			"tls": []any{map[string]any{"secretName": "runners-tls", "hosts": []any{"runners.example.com"}}},
		}},
		"metrics":             map[string]any{"serviceMonitor": map[string]any{"enabled": true, "labels": map[string]any{"release": "prometheus"}}},
		"prometheusRule":      map[string]any{"enabled": true},
		"grafanaDashboard":    map[string]any{"enabled": true},
		"records":             map[string]any{"enabled": true, "size": "1Gi"},
		"admissionPolicy":     map[string]any{"enabled": true},
		"runnerNetworkPolicy": map[string]any{"enabled": true, "namespaces": toAny(runnerNamespaces)},
		"sentry":              map[string]any{"dsnSecret": map[string]any{"name": "sentry"}, "environment": "staging"},
		"podAnnotations":      map[string]any{"example.com/owner": "ci"},
		"nodeSelector":        map[string]any{"kubernetes.io/os": "linux"},
		"tolerations":         []any{map[string]any{"key": "ci", "operator": "Exists"}},
		"priorityClassName":   "",
	}
}

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// TestChartLints is `helm lint --strict` with the default values and with every option on.
func TestChartLints(t *testing.T) {
	for name, vals := range map[string]map[string]any{
		"default":         nil,
		"full":            fullValues("webhook", "ci"),
		"namespace scope": {"scope": "namespace"},
	} {
		t.Run(name, func(t *testing.T) {
			lint := action.NewLint()
			lint.Strict = true
			lint.Namespace = "forgejo-runner-operator-system"
			res := lint.Run([]string{chartDir(t)}, vals)
			for _, m := range res.Messages {
				t.Logf("lint: %s", m)
			}
			if len(res.Errors) > 0 || res.TotalChartsLinted != 1 {
				t.Errorf("helm lint: %d charts linted, errors %v", res.TotalChartsLinted, res.Errors)
			}
		})
	}
}

// TestChartRefusesBadValues: the schema catches a misspelt key and a wrong type, and the
// templates refuse combinations that cannot work.
func TestChartRefusesBadValues(t *testing.T) {
	for name, tc := range map[string]struct {
		vals map[string]any
		want string
	}{
		"misspelt key":        {map[string]any{"replicas": 3}, "replicas"},
		"misspelt nested key": {map[string]any{"webhook": map[string]any{"prot": 9000}}, "prot"},
		"wrong type":          {map[string]any{"replicaCount": "two"}, "replicaCount"},
		"unknown scope":       {map[string]any{"scope": "cluster-wide"}, "scope"},
		"bad duration":        {map[string]any{"operator": map[string]any{"pollInterval": "10"}}, "pollInterval"},
		"replicas without election": {map[string]any{"operator": map[string]any{"leaderElection": map[string]any{"enabled": false}}},
			"leaderElection"},
		"ingress without hosts": {map[string]any{"webhook": map[string]any{"ingress": map[string]any{"enabled": true}}}, "hosts"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := renderChart(t, "forgejo-runner-operator", "ops", tc.vals)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("rendering with %v: error %v, want one naming %q", tc.vals, err, tc.want)
			}
		})
	}
}

// renderChart is `helm template --include-crds`: the chart's CRDs, then its templates, as
// objects; the values are checked against values.schema.json.
func renderChart(t testing.TB, release, namespace string, vals map[string]any) ([]*unstructured.Unstructured, error) {
	t.Helper()
	ch, err := loader.Load(chartDir(t))
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	caps := common.DefaultCapabilities.Copy()
	renderVals, err := chartutil.ToRenderValuesWithSchemaValidation(ch, vals,
		common.ReleaseOptions{Name: release, Namespace: namespace, Revision: 1, IsInstall: true}, caps, false)
	if err != nil {
		return nil, err
	}
	files, err := engine.Render(ch, renderVals)
	if err != nil {
		return nil, err
	}
	var objs []*unstructured.Unstructured
	for _, crd := range ch.CRDObjects() {
		o, err := decode(crd.File.Data)
		if err != nil {
			return nil, err
		}
		objs = append(objs, o...)
	}
	// Templates in a stable order, as Helm sorts them for install; NOTES.txt is not a manifest.
	for _, tpl := range templateNames(ch, files) {
		o, err := decode([]byte(files[tpl]))
		if err != nil {
			return nil, err
		}
		objs = append(objs, o...)
	}
	return objs, nil
}

func templateNames(ch *chart.Chart, files map[string]string) []string {
	var names []string
	for _, tpl := range ch.Templates {
		name := ch.Name() + "/" + tpl.Name
		if strings.HasSuffix(name, ".yaml") {
			if _, ok := files[name]; ok {
				names = append(names, name)
			}
		}
	}
	return names
}

func decode(data []byte) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if err.Error() == "EOF" {
				return out, nil
			}
			return nil, err
		}
		if len(m) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
}

// renderKustomization is `kubectl apply -k config/<dir>`'s rendering.
func renderKustomization(t testing.TB, dir string) []*unstructured.Unstructured {
	t.Helper()
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), filepath.Join(repoRoot(t), "config", dir))
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

// find returns the one rendered object of this kind and name.
func find(t testing.TB, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && (name == "" || o.GetName() == name) {
			return o
		}
	}
	t.Fatalf("no %s %q rendered", kind, name)
	return nil
}

// Sentry reporting is off unless a DSN Secret is named; then the operator reads SENTRY_DSN from
// it (never from a value in the chart) and SENTRY_ENVIRONMENT from the values.
func TestChartWiresSentryOnlyWhenAsked(t *testing.T) {
	envOf := func(vals map[string]any) map[string]any {
		t.Helper()
		objs, err := renderChart(t, "forgejo-runner-operator", "ops", vals)
		if err != nil {
			t.Fatal(err)
		}
		containers, _, _ := unstructured.NestedSlice(find(t, objs, "Deployment", "").Object, "spec", "template", "spec", "containers")
		env := map[string]any{}
		for _, e := range containers[0].(map[string]any)["env"].([]any) {
			m := e.(map[string]any)
			env[m["name"].(string)] = m
		}
		return env
	}
	if env := envOf(nil); env["SENTRY_DSN"] != nil || env["SENTRY_ENVIRONMENT"] != nil {
		t.Errorf("default values wire Sentry: %v", env)
	}
	env := envOf(map[string]any{"sentry": map[string]any{"dsnSecret": map[string]any{"name": "sentry"}, "environment": "staging"}})
	dsn, _ := env["SENTRY_DSN"].(map[string]any)
	ref, _, _ := unstructured.NestedStringMap(dsn, "valueFrom", "secretKeyRef")
	if ref["name"] != "sentry" || ref["key"] != "dsn" {
		t.Errorf("SENTRY_DSN is %v, want the key dsn of Secret sentry", dsn)
	}
	if e, _ := env["SENTRY_ENVIRONMENT"].(map[string]any); e == nil || e["value"] != "staging" {
		t.Errorf("SENTRY_ENVIRONMENT is %v, want staging", env["SENTRY_ENVIRONMENT"])
	}
}

// releaseTag is the release tag HEAD carries, if any: `git describe --tags --exact-match`.
func releaseTag(t *testing.T) (string, bool) {
	t.Helper()
	out, err := exec.Command("git", "-C", repoRoot(t), "describe", "--tags", "--exact-match", "HEAD").Output()
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(out)), true
}

// The chart's appVersion is the image tag it deploys and what --version prints there: a
// release version always, and on a tagged commit the tag itself, which `make images` stamps into
// the binary and uses as the image's tag (`make release-version VERSION=<tag>` sets it).
func TestChartAppVersionIsTheRelease(t *testing.T) {
	ch, err := loader.Load(chartDir(t))
	if err != nil {
		t.Fatal(err)
	}
	app := ch.Metadata.AppVersion
	if !regexp.MustCompile(`^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$`).MatchString(app) {
		t.Fatalf("the chart's appVersion %q is not a release version vMAJOR.MINOR.PATCH", app)
	}
	if tag, ok := releaseTag(t); ok && tag != app {
		t.Errorf("HEAD is tagged %s but the chart deploys %s: run make release-version VERSION=%s before tagging", tag, app, tag)
	}
}
