package dashboards

// PromQL checks run Prometheus's own parser, so a query passes exactly when Prometheus would
// accept it: syntax, function names and argument types, matchers and their regexes. Two checks
// the parser leaves out come on top: the result type, which Prometheus looks at only when the
// query runs, and whether docs/metrics.md lists every operator metric the query reads.

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// promqlParser has Prometheus's default options: experimental functions and syntax are off on a
// stock server, so a query that needs them would fail there.
var promqlParser = parser.NewParser(parser.Options{})

// checkResultType rejects a range vector or a string result. The parser accepts any type at the
// top (the HTTP API serves a range vector to an instant query), but an alert rule fails on
// every evaluation and a Grafana panel shows an error.
func checkResultType(e parser.Expr) error {
	switch t := e.Type(); t {
	case parser.ValueTypeScalar, parser.ValueTypeVector:
		return nil
	default:
		return fmt.Errorf("expression is a %s; a rule or panel needs a scalar or an instant vector", parser.DocumentedType(t))
	}
}

// metricPrefix starts every metric the operator exports; other metrics a query reads, such as
// up or kube_pod_status_phase, are documented by whoever exports them.
const metricPrefix = "forgejo_runner_operator_"

// nameLabel holds a series' metric name. It is spelled out because labels.MetricName is
// deprecated, and its replacement in prometheus/common would make that module a direct
// requirement for one string that never changes.
const nameLabel = "__name__"

// metricNames lists the metric names e selects, each once, in order of first use: the name
// before a selector's braces and any __name__="..." matcher. A regex on __name__ names no
// metric, so it adds nothing.
func metricNames(e parser.Node) []string {
	var names []string
	add := func(name string) {
		if name != "" && !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		add(vs.Name)
		for _, m := range vs.LabelMatchers {
			if m.Name == nameLabel && m.Type == labels.MatchEqual {
				add(m.Value)
			}
		}
		return nil
	})
	return names
}

// baseMetric maps a histogram's _bucket, _sum and _count series to the histogram, which is what
// docs/metrics.md lists. Other names are their own base, so a gauge's made-up _bucket series
// still counts as undocumented.
func baseMetric(name string, documented map[string]string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && documented[base] == "histogram" {
			return base
		}
	}
	return name
}

// undocumentedMetrics lists the operator metrics e reads that docs/metrics.md does not list.
func undocumentedMetrics(e parser.Node, documented map[string]string) []string {
	var missing []string
	for _, name := range metricNames(e) {
		if !strings.HasPrefix(name, metricPrefix) {
			continue
		}
		if _, ok := documented[baseMetric(name, documented)]; !ok {
			missing = append(missing, name)
		}
	}
	return missing
}

// queryProblems checks one query of a rule, panel or doc example. where names the rule or panel;
// the messages repeat the expression because a parser position alone is hard to find in a JSON
// string or a YAML block.
func queryProblems(where, expr string, documented map[string]string) []string {
	e, err := promqlParser.ParseExpr(expr)
	if err != nil {
		// The partial tree the parser returns with an error may hold nil nodes; it is not walked.
		return []string{fmt.Sprintf("%s: invalid PromQL: %v\n\t%s", where, err, expr)}
	}
	var problems []string
	// A range vector is still a well-formed tree, so its metrics are checked too.
	if err := checkResultType(e); err != nil {
		problems = append(problems, fmt.Sprintf("%s: invalid PromQL: %v\n\t%s", where, err, expr))
	}
	for _, name := range undocumentedMetrics(e, documented) {
		problems = append(problems, fmt.Sprintf("%s: %s is not documented in %s\n\t%s", where, name, metricsDoc, expr))
	}
	return problems
}

// --- Grafana -----------------------------------------------------------------------------

var grafanaVarRE = regexp.MustCompile(`\$\{?(__[a-z_]+|[A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?\}?`)

// grafanaBuiltins stand in for Grafana's interval variables.
var grafanaBuiltins = map[string]string{
	"__rate_interval": "5m",
	"__interval":      "1m",
	"__range":         "1h",
	"__range_s":       "3600",
	"__interval_ms":   "60000",
}

// grafanaExpr turns a panel query into plain PromQL: interval variables become durations and
// template variables, which this dashboard uses only inside regex matchers, become `.*`.
func grafanaExpr(expr string) string {
	return grafanaVarRE.ReplaceAllStringFunc(expr, func(v string) string {
		name := grafanaVarRE.FindStringSubmatch(v)[1]
		if d, ok := grafanaBuiltins[name]; ok {
			return d
		}
		return ".*"
	})
}

var labelValuesRE = regexp.MustCompile(`^\s*label_values\(\s*(?:(.*),\s*)?([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$`)

// variableSelector checks a Grafana Prometheus variable query, label_values(selector, label)
// or label_values(label), and returns its selector, or nil for label_values(label). Grafana
// passes the selector to Prometheus's series API as match[], which takes a series selector and
// nothing else.
func variableSelector(query string) (*parser.VectorSelector, error) {
	m := labelValuesRE.FindStringSubmatch(query)
	if m == nil {
		return nil, fmt.Errorf("variable query %q is not label_values(selector, label)", query)
	}
	if m[1] == "" {
		return nil, nil
	}
	e, err := promqlParser.ParseExpr(grafanaExpr(m[1]))
	if err != nil {
		return nil, fmt.Errorf("variable query %q: %w", query, err)
	}
	vs, ok := e.(*parser.VectorSelector)
	if !ok {
		return nil, fmt.Errorf("variable query %q: %s is not a series selector", query, m[1])
	}
	return vs, nil
}

// --- tests -------------------------------------------------------------------------------

func TestQueryProblemsAccepts(t *testing.T) {
	for _, expr := range []string{
		`up`,
		`1`,
		`time() - 1e3 * .5`,
		`max_over_time(rate(x[5m])[1h:5m])`,
		`histogram_quantile(0.95, sum by (le) (rate(x_bucket[5m])))`,
		`a / on (b) group_left (c) d`,
		"sum(rate(x[5m])) # comment\n/ 2",
	} {
		if p := queryProblems("q", expr, testDoc); len(p) > 0 {
			t.Errorf("queryProblems(%q) = %q, want none", expr, p)
		}
	}
}

// TestQueryProblemsRejects covers the mistakes a hand-edited query tends to have; want is part
// of the message, to show the query fails for that reason and not another.
func TestQueryProblemsRejects(t *testing.T) {
	for _, tc := range []struct{ expr, want string }{
		{``, "no expression found"},
		{`sum(rate(x[5m])`, "unclosed left parenthesis"},
		{`rate(x[5m]))`, "unexpected right parenthesis"},
		{`x{a="b}`, "unterminated quoted string"},
		{`x{a=b}`, `unexpected identifier "b" in label matching`},
		{`x{a=~"("}`, "error parsing regexp"},
		{`{}`, "at least one non-empty matcher"},
		{`rate(x)`, `expected type range vector in call to function "rate"`},
		{`(x)[5m]`, "ranges only allowed for vector selectors"},
		{`frobnicate(x)`, `unknown function with name "frobnicate"`},
		{`label_values(x, a)`, `unknown function with name "label_values"`},
		{`sort_by_label(x, "a")`, "is not enabled"},
		{`clamp_min(x)`, "expected 2 argument(s)"},
		{`sum(x) >`, "unexpected end of input"},
		{`1 and 2`, `set operator "and" not allowed in binary scalar expression`},
		{`x[5m] + 1`, "only scalar and instant vector types"},
		// The parser accepts these; checkResultType does not.
		{`x[5m]`, "expression is a range vector"},
		{`rate(x[5m])[1h:]`, "expression is a range vector"},
		{`"text"`, "expression is a string"},
	} {
		problems := queryProblems("q", tc.expr, testDoc)
		if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, "invalid PromQL: ") && strings.Contains(p, tc.want) }) {
			t.Errorf("queryProblems(%q) = %q, want invalid PromQL containing %q", tc.expr, problems, tc.want)
		}
	}
}

func TestGrafanaExpr(t *testing.T) {
	for in, want := range map[string]string{
		`rate(x{pool=~"$pool"}[$__rate_interval])`:        `rate(x{pool=~".*"}[5m])`,
		`max_over_time(x[${__range}])`:                    `max_over_time(x[1h])`,
		`x{namespace=~"${namespace:regex}"} / $__range_s`: `x{namespace=~".*"} / 3600`,
	} {
		if got := grafanaExpr(in); got != want {
			t.Errorf("grafanaExpr(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestVariableSelector(t *testing.T) {
	if sel, err := variableSelector(`label_values(m{namespace=~"$namespace"}, pool)`); err != nil || sel == nil || sel.Name != "m" {
		t.Errorf("variableSelector = %v, %v; want the selector of m", sel, err)
	}
	if sel, err := variableSelector(`label_values(pool)`); err != nil || sel != nil {
		t.Errorf("variableSelector(label only) = %v, %v; want no selector", sel, err)
	}
	for _, tc := range []struct{ query, want string }{
		{`query_result(up)`, "is not label_values"},
		{`label_values(m{a="b", pool)`, "unexpected end of input inside braces"},
		{`label_values(rate(m), pool)`, "expected type range vector"},
		{`label_values(sum(m), pool)`, "is not a series selector"},
	} {
		_, err := variableSelector(tc.query)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("variableSelector(%q) = %v, want an error containing %q", tc.query, err, tc.want)
		}
	}
}
