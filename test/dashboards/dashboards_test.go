package dashboards

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"text/template"

	"sigs.k8s.io/yaml"
)

// Files checked, relative to the repository root.
const (
	metricsDoc    = "docs/metrics.md"
	dashboardFile = "config/grafana/forgejo-runner-operator.json"
	rulesFile     = "config/prometheus/alerts.yaml"
	rulesKustom   = "config/prometheus/kustomization.yaml"
)

// --- the metrics reference ---------------------------------------------------------------

// docRowPrefix starts every row of the reference tables in docs/metrics.md; the first cell holds
// the metric name in backticks and nothing else, the second its type.
const docRowPrefix = "| `" + metricPrefix

var metricTypes = []string{"counter", "gauge", "histogram", "summary"}

// parseMetricDoc returns the documented metrics and their types.
func parseMetricDoc(md string) (map[string]string, error) {
	metrics := map[string]string{}
	var errs []error
	for n, line := range strings.Split(md, "\n") {
		if !strings.HasPrefix(line, docRowPrefix) {
			continue
		}
		cells := strings.Split(line, "|")
		if len(cells) < 4 {
			errs = append(errs, fmt.Errorf("%s:%d: a metric row needs name, type and more cells", metricsDoc, n+1))
			continue
		}
		nameCell, typ := strings.TrimSpace(cells[1]), strings.Trim(strings.TrimSpace(cells[2]), "`")
		name := strings.Trim(nameCell, "`")
		if nameCell != "`"+name+"`" || !metricNameRE.MatchString(name) {
			errs = append(errs, fmt.Errorf("%s:%d: first cell %q must be only the metric name in backticks", metricsDoc, n+1, nameCell))
			continue
		}
		if !slices.Contains(metricTypes, typ) {
			errs = append(errs, fmt.Errorf("%s:%d: %s has type %q, want one of %v", metricsDoc, n+1, name, typ, metricTypes))
			continue
		}
		if _, dup := metrics[name]; dup {
			errs = append(errs, fmt.Errorf("%s:%d: %s is documented twice", metricsDoc, n+1, name))
			continue
		}
		metrics[name] = typ
	}
	if len(metrics) == 0 && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("%s: no metric rows (lines starting %q)", metricsDoc, docRowPrefix))
	}
	return metrics, errors.Join(errs...)
}

// docQueries returns the queries in the ```promql blocks of docs/metrics.md: blank lines
// separate queries, # lines are comments.
func docQueries(md string) []string {
	var queries, current []string
	in := false
	flush := func() {
		if len(current) > 0 {
			queries = append(queries, strings.Join(current, "\n"))
			current = nil
		}
	}
	sc := bufio.NewScanner(strings.NewReader(md))
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case !in && trimmed == "```promql":
			in = true
		case in && trimmed == "```":
			flush()
			in = false
		case in && trimmed == "":
			flush()
		case in && !strings.HasPrefix(trimmed, "#"):
			current = append(current, line)
		}
	}
	return queries
}

// metricNameRE is the form of the operator's metric names in docs/metrics.md.
var metricNameRE = regexp.MustCompile(`^` + metricPrefix + `[a-z_]+$`)

// --- the Grafana dashboard ---------------------------------------------------------------

type dashboard struct {
	Title         string `json:"title"`
	UID           string `json:"uid"`
	SchemaVersion int    `json:"schemaVersion"`
	Panels        []panel
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         *int     `json:"id"`
	Type       string   `json:"type"`
	Title      string   `json:"title"`
	GridPos    *gridPos `json:"gridPos"`
	Datasource *dsRef   `json:"datasource"`
	Targets    []target `json:"targets"`
	Panels     []panel  `json:"panels"` // a collapsed row's panels
}

type gridPos struct {
	H int `json:"h"`
	W int `json:"w"`
	X int `json:"x"`
	Y int `json:"y"`
}

type dsRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type target struct {
	RefID      string `json:"refId"`
	Expr       string `json:"expr"`
	Datasource *dsRef `json:"datasource"`
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Datasource *dsRef          `json:"datasource"`
}

// queryText is a variable's query, stored either as a string or as {"query": "..."}.
func (v variable) queryText() (string, error) {
	var s string
	if err := json.Unmarshal(v.Query, &s); err == nil {
		return s, nil
	}
	var obj struct {
		Query string `json:"query"`
	}
	if err := json.Unmarshal(v.Query, &obj); err != nil {
		return "", fmt.Errorf("variable %s: query is neither a string nor an object with a query", v.Name)
	}
	return obj.Query, nil
}

// datasourceVar is the dashboard's data source variable; every query must go through it.
const datasourceVar = "datasource"

func usesDatasourceVar(ref *dsRef) bool {
	return ref != nil && ref.Type == "prometheus" && (ref.UID == "${"+datasourceVar+"}" || ref.UID == "$"+datasourceVar)
}

// dashboardProblems parses a dashboard and lists everything wrong with it.
func dashboardProblems(data []byte, documented map[string]string) []string {
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		return []string{fmt.Sprintf("dashboard does not parse: %v", err)}
	}
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if d.Title == "" || d.UID == "" {
		add("dashboard needs a title and a uid")
	}
	if d.SchemaVersion < 36 {
		add("schemaVersion %d predates data source references by uid; want 36 or later", d.SchemaVersion)
	}

	vars := map[string]variable{}
	for _, v := range d.Templating.List {
		if _, dup := vars[v.Name]; dup {
			add("variable %s is defined twice", v.Name)
		}
		vars[v.Name] = v
		if v.Type != "query" {
			continue
		}
		where := "variable " + v.Name
		if !usesDatasourceVar(v.Datasource) {
			add("%s: datasource must be the ${%s} Prometheus variable", where, datasourceVar)
		}
		q, err := v.queryText()
		if err != nil {
			add("%v", err)
			continue
		}
		sel, err := variableSelector(q)
		if err != nil {
			add("%s: %v", where, err)
			continue
		}
		if sel != nil {
			for _, name := range undocumentedMetrics(sel, documented) {
				add("%s: %s is not documented in %s", where, name, metricsDoc)
			}
		}
	}
	if v, ok := vars[datasourceVar]; !ok || v.Type != "datasource" || string(v.Query) != `"prometheus"` {
		add("dashboard needs a %q variable of type datasource with query \"prometheus\"", datasourceVar)
	}

	ids := map[int]string{}
	var placed []panel
	var visit func(p panel, nested bool)
	visit = func(p panel, nested bool) {
		where := fmt.Sprintf("panel %q", p.Title)
		if p.ID == nil {
			add("%s has no id", where)
		} else {
			if other, dup := ids[*p.ID]; dup {
				add("%s has id %d, already used by panel %q", where, *p.ID, other)
			}
			ids[*p.ID] = p.Title
		}
		switch g := p.GridPos; {
		case g == nil:
			add("%s has no gridPos", where)
		case g.W < 1 || g.H < 1 || g.X < 0 || g.Y < 0 || g.X+g.W > 24:
			add("%s: gridPos %+v is outside the 24-column grid", where, *g)
		case !nested:
			placed = append(placed, p)
		}
		if p.Type == "row" {
			for _, child := range p.Panels {
				visit(child, true)
			}
			return
		}
		if p.Type == "text" {
			return
		}
		if !usesDatasourceVar(p.Datasource) {
			add("%s: datasource must be the ${%s} Prometheus variable", where, datasourceVar)
		}
		if len(p.Targets) == 0 {
			add("%s has no targets", where)
		}
		refIDs := map[string]bool{}
		for i, t := range p.Targets {
			twhere := fmt.Sprintf("%s target %d", where, i)
			if t.RefID == "" || refIDs[t.RefID] {
				add("%s: refId %q is empty or repeated", twhere, t.RefID)
			}
			refIDs[t.RefID] = true
			if t.Datasource != nil && !usesDatasourceVar(t.Datasource) {
				add("%s: datasource must be the ${%s} Prometheus variable", twhere, datasourceVar)
			}
			if strings.TrimSpace(t.Expr) == "" {
				add("%s has an empty expr", twhere)
				continue
			}
			problems = append(problems, queryProblems(twhere, grafanaExpr(t.Expr), documented)...)
		}
	}
	for _, p := range d.Panels {
		visit(p, false)
	}
	for i, a := range placed {
		for _, b := range placed[i+1:] {
			ga, gb := a.GridPos, b.GridPos
			if ga.X < gb.X+gb.W && gb.X < ga.X+ga.W && ga.Y < gb.Y+gb.H && gb.Y < ga.Y+ga.H {
				add("panels %q and %q overlap", a.Title, b.Title)
			}
		}
	}
	return problems
}

// dashboardExprs returns every query of a dashboard that parses.
func dashboardExprs(data []byte) []string {
	var d dashboard
	if json.Unmarshal(data, &d) != nil {
		return nil
	}
	var exprs []string
	var visit func(ps []panel)
	visit = func(ps []panel) {
		for _, p := range ps {
			for _, t := range p.Targets {
				exprs = append(exprs, t.Expr)
			}
			visit(p.Panels)
		}
	}
	visit(d.Panels)
	return exprs
}

// --- the PrometheusRule ------------------------------------------------------------------

type prometheusRule struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name        string            `json:"name"`
		Namespace   string            `json:"namespace"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec struct {
		Groups []ruleGroup `json:"groups"`
	} `json:"spec"`
}

type ruleGroup struct {
	Name                    string            `json:"name"`
	Interval                string            `json:"interval"`
	QueryOffset             string            `json:"query_offset"`
	Limit                   int               `json:"limit"`
	PartialResponseStrategy string            `json:"partial_response_strategy"`
	Labels                  map[string]string `json:"labels"`
	Rules                   []rule            `json:"rules"`
}

type rule struct {
	Alert         string            `json:"alert"`
	Record        string            `json:"record"`
	Expr          string            `json:"expr"`
	For           string            `json:"for"`
	KeepFiringFor string            `json:"keep_firing_for"`
	Labels        map[string]string `json:"labels"`
	Annotations   map[string]string `json:"annotations"`
}

var (
	promDurationRE = regexp.MustCompile(`^(?:[0-9]+(?:ms|[smhdwy]))+$`)
	severities     = []string{"critical", "warning", "info"}
)

// templateFuncs are the names Prometheus gives alert templates; only parsing needs them.
var templateFuncs = func() template.FuncMap {
	fm := template.FuncMap{}
	for _, name := range strings.Fields(`humanize humanize1024 humanizeDuration humanizePercentage
		humanizeTimestamp title toUpper toLower match reReplaceAll safeHtml safeUrl urlQueryEscape
		query first label value strvalue args tmpl pathPrefix externalURL stripPort stripDomain
		parseDuration toTime toDuration graphLink tableLink sortByLabel now`) {
		fm[name] = func(...any) string { return "" }
	}
	return fm
}()

// checkTemplate parses an annotation the way Prometheus does, with $labels and $value defined.
func checkTemplate(text string) error {
	const defs = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}"
	_, err := template.New("annotation").Funcs(templateFuncs).Option("missingkey=zero").Parse(defs + text)
	return err
}

// ruleProblems parses a PrometheusRule and lists everything wrong with it.
func ruleProblems(data []byte, documented map[string]string) []string {
	var pr prometheusRule
	if err := yaml.UnmarshalStrict(data, &pr); err != nil {
		return []string{fmt.Sprintf("rule file does not parse: %v", err)}
	}
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if pr.APIVersion != "monitoring.coreos.com/v1" || pr.Kind != "PrometheusRule" || pr.Metadata.Name == "" {
		add("want a named monitoring.coreos.com/v1 PrometheusRule, got %s %s %q", pr.APIVersion, pr.Kind, pr.Metadata.Name)
	}
	if len(pr.Spec.Groups) == 0 {
		add("no rule groups")
	}
	groups, alerts := map[string]bool{}, map[string]bool{}
	for _, g := range pr.Spec.Groups {
		if g.Name == "" || groups[g.Name] {
			add("group name %q is empty or repeated", g.Name)
		}
		groups[g.Name] = true
		if len(g.Rules) == 0 {
			add("group %s has no rules", g.Name)
		}
		for i, r := range g.Rules {
			where := fmt.Sprintf("group %s rule %d (%s)", g.Name, i, r.Alert)
			if r.Alert == "" || r.Record != "" {
				add("%s: every rule here must be an alert", where)
			} else if alerts[r.Alert] {
				add("%s: alert name repeated", where)
			}
			alerts[r.Alert] = true
			if strings.TrimSpace(r.Expr) == "" {
				add("%s has no expr", where)
			} else {
				problems = append(problems, queryProblems(where, r.Expr, documented)...)
			}
			if !promDurationRE.MatchString(r.For) {
				add("%s: for %q is not a duration such as 10m", where, r.For)
			}
			if !slices.Contains(severities, r.Labels["severity"]) {
				add("%s: labels.severity %q is not one of %v", where, r.Labels["severity"], severities)
			}
			for _, key := range []string{"summary", "description"} {
				text := strings.TrimSpace(r.Annotations[key])
				if text == "" {
					add("%s has no annotations.%s", where, key)
					continue
				}
				if err := checkTemplate(text); err != nil {
					add("%s: annotations.%s is not a valid template: %v", where, key, err)
				}
			}
		}
	}
	return problems
}

// --- tests on the shipped files ----------------------------------------------------------

// repoRoot is the directory holding go.mod above the test's working directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

func readRepoFile(t *testing.T, rel string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func documentedMetrics(t *testing.T) map[string]string {
	t.Helper()
	metrics, err := parseMetricDoc(string(readRepoFile(t, metricsDoc)))
	if err != nil {
		t.Fatal(err)
	}
	return metrics
}

// report fails t once per problem found in file.
func report(t *testing.T, file string, problems []string) {
	t.Helper()
	for _, p := range problems {
		t.Errorf("%s: %s", file, p)
	}
}

func TestMetricsDocParses(t *testing.T) {
	metrics := documentedMetrics(t)
	// The metrics the operator registers: the lead's registry test compares the real set.
	for _, name := range []string{
		"forgejo_runner_operator_forgejo_api_requests_total",
		"forgejo_runner_operator_forgejo_api_request_duration_seconds",
		"forgejo_runner_operator_webhook_deliveries_total",
		"forgejo_runner_operator_job_queue_wait_seconds",
		"forgejo_runner_operator_job_execution_seconds",
		"forgejo_runner_operator_runner_registration_duration_seconds",
		"forgejo_runner_operator_runner_startup_duration_seconds",
		"forgejo_runner_operator_runner_lifetime_seconds",
		"forgejo_runner_operator_runners",
		"forgejo_runner_operator_runner_outcomes_total",
		"forgejo_runner_operator_pending_jobs",
		"forgejo_runner_operator_pool_ready",
		"forgejo_runner_operator_orphaned_registrations_collected_total",
		"forgejo_runner_operator_record_write_errors_total",
		"forgejo_runner_operator_audit_log_records",
	} {
		if _, ok := metrics[name]; !ok {
			t.Errorf("%s is missing from %s", name, metricsDoc)
		}
	}
	for name, typ := range metrics {
		if strings.HasSuffix(name, "_total") != (typ == "counter") {
			t.Errorf("%s is a %s: counters and only counters end in _total", name, typ)
		}
	}
}

func TestMetricsDocQueries(t *testing.T) {
	md := string(readRepoFile(t, metricsDoc))
	metrics := documentedMetrics(t)
	queries := docQueries(md)
	if len(queries) < 10 {
		t.Fatalf("found %d queries in the promql blocks of %s, want the examples there", len(queries), metricsDoc)
	}
	for i, q := range queries {
		report(t, metricsDoc, queryProblems(fmt.Sprintf("query %d", i), q, metrics))
	}
}

func TestDashboard(t *testing.T) {
	data := readRepoFile(t, dashboardFile)
	metrics := documentedMetrics(t)
	report(t, dashboardFile, dashboardProblems(data, metrics))

	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"namespace", "pool"} {
		found := false
		for _, v := range d.Templating.List {
			if v.Name == name && v.Type == "query" {
				q, _ := v.queryText()
				found = strings.Contains(q, "forgejo_runner_operator_runners")
			}
		}
		if !found {
			t.Errorf("dashboard needs a %q variable from label_values of forgejo_runner_operator_runners", name)
		}
	}

	// Every documented metric has a panel.
	used := map[string]bool{}
	for _, expr := range dashboardExprs(data) {
		e, err := promqlParser.ParseExpr(grafanaExpr(expr))
		if err != nil {
			continue // dashboardProblems has reported it
		}
		for _, name := range metricNames(e) {
			used[baseMetric(name, metrics)] = true
		}
	}
	var unused []string
	for name := range metrics {
		if !used[name] {
			unused = append(unused, name)
		}
	}
	sort.Strings(unused)
	if len(unused) > 0 {
		t.Errorf("documented metrics no dashboard panel shows: %v", unused)
	}
}

func TestAlertRules(t *testing.T) {
	data := readRepoFile(t, rulesFile)
	report(t, rulesFile, ruleProblems(data, documentedMetrics(t)))

	// docs/metrics.md lists every alert.
	var pr prometheusRule
	if err := yaml.Unmarshal(data, &pr); err != nil {
		t.Fatal(err)
	}
	md := string(readRepoFile(t, metricsDoc))
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			if !strings.Contains(md, "| `"+r.Alert+"` |") {
				t.Errorf("alert %s is missing from the alert table in %s", r.Alert, metricsDoc)
			}
		}
	}

	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(readRepoFile(t, rulesKustom), &k); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(k.Resources, filepath.Base(rulesFile)) {
		t.Errorf("%s does not list %s", rulesKustom, filepath.Base(rulesFile))
	}
	// The rules need the Prometheus Operator's CRDs, which a cluster may lack.
	def := string(readRepoFile(t, "config/default/kustomization.yaml"))
	if strings.Contains(def, "prometheus") {
		t.Errorf("config/default must not include the Prometheus rules")
	}
}

// --- the checkers fail on broken input ---------------------------------------------------

var testDoc = map[string]string{
	"forgejo_runner_operator_runners":            "gauge",
	"forgejo_runner_operator_job_wait_seconds":   "histogram",
	"forgejo_runner_operator_things_total":       "counter",
	"forgejo_runner_operator_audit_log_records":  "gauge",
	"forgejo_runner_operator_pool_ready":         "gauge",
	"forgejo_runner_operator_orphans_seen_total": "counter",
}

func TestUndocumentedMetrics(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`forgejo_runner_operator_runners`, nil},
		{`{__name__="forgejo_runner_operator_nope", pool="a"}`, []string{"forgejo_runner_operator_nope"}},
		// A label value is not a metric name.
		{`up{job="forgejo_runner_operator_nope"}`, nil},
		{`histogram_quantile(0.5, rate(forgejo_runner_operator_job_wait_seconds_bucket[5m]))`, nil},
		{`rate(forgejo_runner_operator_job_wait_seconds_sum[5m]) / rate(forgejo_runner_operator_job_wait_seconds_count[5m])`, nil},
		{`forgejo_runner_operator_nope_total`, []string{"forgejo_runner_operator_nope_total"}},
		{`forgejo_runner_operator_runners_bucket`, []string{"forgejo_runner_operator_runners_bucket"}},
		{`forgejo_runner_operator_things_total_count + forgejo_runner_operator_things_total_count`, []string{"forgejo_runner_operator_things_total_count"}},
		{`up`, nil},
	} {
		e, err := promqlParser.ParseExpr(tc.expr)
		if err != nil {
			t.Fatalf("%q: %v", tc.expr, err)
		}
		if got := undocumentedMetrics(e, testDoc); !slices.Equal(got, tc.want) {
			t.Errorf("undocumentedMetrics(%q) = %v, want %v", tc.expr, got, tc.want)
		}
	}
}

func TestParseMetricDocRejects(t *testing.T) {
	good := "| `forgejo_runner_operator_runners` | gauge | `phase` | Runners. |\n"
	if m, err := parseMetricDoc("# Metrics\n\n| Metric | Type | Labels | What |\n| --- | --- | --- | --- |\n" + good); err != nil || m["forgejo_runner_operator_runners"] != "gauge" {
		t.Fatalf("parseMetricDoc(good) = %v, %v", m, err)
	}
	for name, md := range map[string]string{
		"no rows":      "# Metrics\n",
		"twice":        good + good,
		"extra text":   "| `forgejo_runner_operator_runners` (new) | gauge | x | y |\n",
		"bad type":     "| `forgejo_runner_operator_runners` | gauges | x | y |\n",
		"short row":    "| `forgejo_runner_operator_runners` |\n",
		"not a metric": "| `forgejo_runner_operator_Runners` | gauge | x | y |\n",
	} {
		if _, err := parseMetricDoc(md); err == nil {
			t.Errorf("%s: parseMetricDoc accepted %q", name, md)
		}
	}
}

func TestDocQueries(t *testing.T) {
	md := "text\n```promql\n# one\nsum(x)\n  / 2\n\n# two\nup\n```\n```sh\nnot promql\n```\n"
	if got, want := docQueries(md), []string{"sum(x)\n  / 2", "up"}; !slices.Equal(got, want) {
		t.Errorf("docQueries = %q, want %q", got, want)
	}
}

// dashboardJSON builds a small dashboard around the given panels JSON.
func dashboardJSON(panels string, vars string) []byte {
	if vars == "" {
		vars = `{"name": "datasource", "type": "datasource", "query": "prometheus"}`
	}
	return []byte(`{"title": "t", "uid": "u", "schemaVersion": 39, "panels": [` + panels +
		`], "templating": {"list": [` + vars + `]}}`)
}

const ds = `"datasource": {"type": "prometheus", "uid": "${datasource}"}`

func okPanel(id, y int, expr string) string {
	return fmt.Sprintf(`{"id": %d, "type": "timeseries", "title": "p%d", %s, "gridPos": {"h": 8, "w": 12, "x": 0, "y": %d},
		"targets": [{"refId": "A", "expr": %q, %s}]}`, id, id, ds, y, expr, ds)
}

func TestDashboardProblems(t *testing.T) {
	const runners = `max by (pool) (forgejo_runner_operator_runners{pool=~"$pool"})`
	if p := dashboardProblems(dashboardJSON(okPanel(1, 0, runners)+","+okPanel(2, 8, "sum(rate(forgejo_runner_operator_things_total[$__rate_interval]))"), ""), testDoc); len(p) > 0 {
		t.Fatalf("a good dashboard has problems: %v", p)
	}
	for _, tc := range []struct {
		name, want string
		data       []byte
	}{
		{"not JSON", "does not parse", []byte(`{"panels": [`)},
		{"duplicate id", "already used", dashboardJSON(okPanel(1, 0, runners)+","+okPanel(1, 8, runners), "")},
		{"no id", "has no id", dashboardJSON(`{"type": "row", "title": "r", "gridPos": {"h": 1, "w": 24, "x": 0, "y": 0}}`, "")},
		{"no gridPos", "has no gridPos", dashboardJSON(`{"id": 1, "type": "timeseries", "title": "p", `+ds+`, "targets": [{"refId": "A", "expr": "up"}]}`, "")},
		{"off the grid", "outside the 24-column grid", dashboardJSON(strings.Replace(okPanel(1, 0, runners), `"x": 0`, `"x": 20`, 1), "")},
		{"overlap", "overlap", dashboardJSON(okPanel(1, 0, runners)+","+okPanel(2, 4, runners), "")},
		{"empty expr", "empty expr", dashboardJSON(okPanel(1, 0, " "), "")},
		{"no targets", "has no targets", dashboardJSON(`{"id": 1, "type": "stat", "title": "p", `+ds+`, "gridPos": {"h": 8, "w": 12, "x": 0, "y": 0}}`, "")},
		{"repeated refId", "empty or repeated", dashboardJSON(`{"id": 1, "type": "stat", "title": "p", `+ds+`, "gridPos": {"h": 8, "w": 12, "x": 0, "y": 0}, "targets": [{"refId": "A", "expr": "up"}, {"refId": "A", "expr": "up"}]}`, "")},
		{"fixed datasource", "must be the ${datasource}", dashboardJSON(strings.Replace(okPanel(1, 0, runners), "${datasource}", "abc123", 1), "")},
		{"string datasource", "does not parse", dashboardJSON(`{"id": 1, "type": "stat", "title": "p", "datasource": "Prometheus", "gridPos": {"h": 8, "w": 12, "x": 0, "y": 0}, "targets": [{"refId": "A", "expr": "up"}]}`, "")},
		{"no datasource variable", "variable of type datasource", dashboardJSON(okPanel(1, 0, runners), `{"name": "pool", "type": "custom", "query": "a,b"}`)},
		{"undocumented metric", "forgejo_runner_operator_nope is not documented", dashboardJSON(okPanel(1, 0, "forgejo_runner_operator_nope"), "")},
		{"gauge as histogram", "forgejo_runner_operator_runners_bucket is not documented", dashboardJSON(okPanel(1, 0, "histogram_quantile(0.9, sum by (le) (rate(forgejo_runner_operator_runners_bucket[5m])))"), "")},
		{"invalid PromQL", "invalid PromQL", dashboardJSON(okPanel(1, 0, "sum(rate(forgejo_runner_operator_things_total[$__rate_interval])"), "")},
		{"missing range", "invalid PromQL", dashboardJSON(okPanel(1, 0, "rate(forgejo_runner_operator_things_total)"), "")},
		{"variable not label_values", "not label_values", dashboardJSON(okPanel(1, 0, runners), `{"name": "datasource", "type": "datasource", "query": "prometheus"}, {"name": "pool", "type": "query", `+ds+`, "query": "up"}`)},
		{"variable on undocumented metric", "is not documented", dashboardJSON(okPanel(1, 0, runners), `{"name": "datasource", "type": "datasource", "query": "prometheus"}, {"name": "pool", "type": "query", `+ds+`, "query": {"query": "label_values(forgejo_runner_operator_nope, pool)"}}`)},
		{"old schema", "schemaVersion", []byte(strings.Replace(string(dashboardJSON(okPanel(1, 0, runners), "")), `"schemaVersion": 39`, `"schemaVersion": 16`, 1))},
	} {
		problems := dashboardProblems(tc.data, testDoc)
		if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tc.want) }) {
			t.Errorf("%s: problems %q, want one containing %q", tc.name, problems, tc.want)
		}
	}
}

// ruleYAML builds a PrometheusRule with one alert; edit changes its lines.
func ruleYAML(edit func(string) string) []byte {
	doc := `apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: r
spec:
  groups:
  - name: g
    rules:
    - alert: PoolNotReady
      expr: max by (namespace, pool) (forgejo_runner_operator_pool_ready) == 0
      for: 10m
      labels:
        severity: critical
      annotations:
        summary: Pool {{ $labels.pool }} is not ready.
        description: Look at the pool's conditions; value {{ $value | humanize }}.
`
	if edit != nil {
		doc = edit(doc)
	}
	return []byte(doc)
}

func TestRuleProblems(t *testing.T) {
	if p := ruleProblems(ruleYAML(nil), testDoc); len(p) > 0 {
		t.Fatalf("a good rule file has problems: %v", p)
	}
	replace := func(old, new string) func(string) string {
		return func(s string) string {
			if !strings.Contains(s, old) {
				panic("test rule has no " + old)
			}
			return strings.Replace(s, old, new, 1)
		}
	}
	for _, tc := range []struct {
		name, want string
		edit       func(string) string
	}{
		{"not YAML", "does not parse", replace("  groups:", "  groups: [")},
		{"unknown field", "does not parse", replace("      for: 10m", "      for: 10m\n      fro: 10m")},
		{"wrong kind", "PrometheusRule", replace("kind: PrometheusRule", "kind: ConfigMap")},
		{"no alert", "must be an alert", replace("    - alert: PoolNotReady\n", "    - record: x\n")},
		{"no expr", "has no expr", replace("      expr: max by (namespace, pool) (forgejo_runner_operator_pool_ready) == 0\n", "")},
		{"no for", "is not a duration", replace("      for: 10m\n", "")},
		{"bad for", "is not a duration", replace("for: 10m", "for: ten minutes")},
		{"no severity", "labels.severity", replace("        severity: critical\n", "        team: ci\n")},
		{"bad severity", "labels.severity", replace("severity: critical", "severity: high")},
		{"no summary", "no annotations.summary", replace("        summary: Pool {{ $labels.pool }} is not ready.\n", "")},
		{"no description", "no annotations.description", replace("        description: Look", "        runbook: Look")},
		{"bad template", "not a valid template", replace("{{ $value | humanize }}", "{{ $value | humanise }}")},
		{"unclosed template", "not a valid template", replace("{{ $labels.pool }}", "{{ $labels.pool ")},
		{"invalid PromQL", "invalid PromQL", replace("== 0", "== ")},
		{"undocumented metric", "forgejo_runner_operator_pool_readiness is not documented", replace("forgejo_runner_operator_pool_ready)", "forgejo_runner_operator_pool_readiness)")},
		{"repeated alert", "alert name repeated", func(s string) string {
			i := strings.Index(s, "    - alert:")
			return s + s[i:]
		}},
	} {
		problems := ruleProblems(ruleYAML(tc.edit), testDoc)
		if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tc.want) }) {
			t.Errorf("%s: problems %q, want one containing %q", tc.name, problems, tc.want)
		}
	}
}
