package dashboards

// A small PromQL checker: a lexer and a recursive-descent parser for the part of the language
// dashboards and alert rules use, with just enough typing (scalar, instant vector, range
// vector, string) to catch the usual mistakes: a rate() without a range, a range vector left
// at the top of an expression, a function that does not exist, an unclosed bracket or string, a
// matcher that is not `name op "value"`, a regex that does not compile. It is stricter than
// Prometheus in places (a range vector is never a valid result here, because neither a rule nor
// a dashboard panel can use one) and knows fewer functions; Prometheus's own parser can be
// added on top, see upstreamPromQLCheck.

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// validatePromQL is what the file checks call: the local checker, then the upstream parser when
// it is switched on.
func validatePromQL(expr string) error {
	if err := checkPromQL(expr); err != nil {
		return err
	}
	return upstreamPromQLCheck(expr)
}

// upstreamPromQLParser tells whether upstreamPromQLCheck runs Prometheus's parser.
//
// SWITCH ON the upstream parser (adds github.com/prometheus/prometheus and three small modules;
// go.mod must then be tidy again):
//
//  1. go get github.com/prometheus/prometheus@v0.313.2
//  2. import "github.com/prometheus/prometheus/promql/parser" in this file
//  3. set upstreamPromQLParser to true and replace the body of upstreamPromQLCheck with
//     _, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
//     return err
const upstreamPromQLParser = false

// upstreamPromQLCheck parses expr with Prometheus's own parser once it is switched on (see
// upstreamPromQLParser); until then it accepts everything.
func upstreamPromQLCheck(expr string) error {
	_ = expr
	return nil
}

// --- lexer -------------------------------------------------------------------------------

type tokKind int

const (
	tEOF tokKind = iota
	tIdent
	tNumber
	tDuration
	tString
	tOp
	tLParen
	tRParen
	tLBrace
	tRBrace
	tLBracket
	tRBracket
	tComma
	tColon
	tAt
)

type token struct {
	kind tokKind
	text string
	pos  int
}

func (t token) String() string {
	if t.kind == tEOF {
		return "end of expression"
	}
	return strconv.Quote(t.text)
}

var (
	durationRE = regexp.MustCompile(`^(?:[0-9]+(?:ms|[smhdwy]))+`)
	numberRE   = regexp.MustCompile(`^(?:0[xX][0-9a-fA-F]+|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)`)
)

func isIdentStart(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isIdentChar(c byte) bool {
	return isIdentStart(c) || isDigit(c) || c == ':'
}

// lex splits expr into tokens; the last is always tEOF.
func lex(expr string) ([]token, error) {
	var toks []token
	i := 0
	for i < len(expr) {
		c := expr[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '#':
			for i < len(expr) && expr[i] != '\n' {
				i++
			}
		case isIdentStart(c):
			j := i + 1
			for j < len(expr) && isIdentChar(expr[j]) {
				j++
			}
			toks = append(toks, token{tIdent, expr[i:j], i})
			i = j
		case c >= '0' && c <= '9' || c == '.' && i+1 < len(expr) && expr[i+1] >= '0' && expr[i+1] <= '9':
			rest := expr[i:]
			// A number or duration runs up to the next character that cannot be part of a name
			// (':' can, in a metric name, but ends a duration in a subquery range).
			if d := durationRE.FindString(rest); d != "" && (len(d) == len(rest) || !isIdentStart(rest[len(d)]) && !isDigit(rest[len(d)])) {
				toks = append(toks, token{tDuration, d, i})
				i += len(d)
				break
			}
			n := numberRE.FindString(rest)
			if len(n) < len(rest) && (isIdentStart(rest[len(n)]) || isDigit(rest[len(n)])) {
				return nil, fmt.Errorf("at %d: bad number or duration %q", i, rest[:len(n)+1])
			}
			toks = append(toks, token{tNumber, n, i})
			i += len(n)
		case c == '"' || c == '\'' || c == '`':
			j := i + 1
			for ; j < len(expr) && expr[j] != c; j++ {
				if c != '`' && expr[j] == '\\' {
					j++
				} else if c != '`' && expr[j] == '\n' {
					return nil, fmt.Errorf("at %d: newline in string", i)
				}
			}
			if j >= len(expr) {
				return nil, fmt.Errorf("at %d: unterminated string", i)
			}
			toks = append(toks, token{tString, expr[i : j+1], i})
			i = j + 1
		default:
			if two := expr[i:min(i+2, len(expr))]; len(two) == 2 && strings.Contains(" == != >= <= =~ !~ ", " "+two+" ") {
				toks = append(toks, token{tOp, two, i})
				i += 2
				break
			}
			kinds := map[byte]tokKind{
				'(': tLParen, ')': tRParen, '{': tLBrace, '}': tRBrace, '[': tLBracket, ']': tRBracket,
				',': tComma, ':': tColon, '@': tAt,
			}
			if k, ok := kinds[c]; ok {
				toks = append(toks, token{k, string(c), i})
			} else if strings.IndexByte("+-*/%^<>=", c) >= 0 {
				toks = append(toks, token{tOp, string(c), i})
			} else {
				return nil, fmt.Errorf("at %d: unexpected character %q", i, c)
			}
			i++
		}
	}
	return append(toks, token{tEOF, "", len(expr)}), nil
}

// unquote returns the value of a string token.
func unquote(s string) (string, error) {
	switch s[0] {
	case '`':
		return s[1 : len(s)-1], nil
	case '\'':
		inner := strings.ReplaceAll(s[1:len(s)-1], `\'`, `'`)
		return strconv.Unquote(`"` + strings.ReplaceAll(inner, `"`, `\"`) + `"`)
	}
	return strconv.Unquote(s)
}

// --- parser ------------------------------------------------------------------------------

type valueType int

const (
	vScalar valueType = iota
	vVector
	vMatrix
	vString
)

func (v valueType) String() string {
	return [...]string{"scalar", "instant vector", "range vector", "string"}[v]
}

type function struct {
	args     []valueType
	optional int  // how many of the last args may be left out
	variadic bool // the last arg may repeat
	ret      valueType
}

func fn(ret valueType, args ...valueType) function { return function{args: args, ret: ret} }

// functions are the PromQL functions the checker knows, with their argument types.
var functions = func() map[string]function {
	m := map[string]function{
		"absent":             fn(vVector, vVector),
		"clamp":              fn(vVector, vVector, vScalar, vScalar),
		"clamp_min":          fn(vVector, vVector, vScalar),
		"clamp_max":          fn(vVector, vVector, vScalar),
		"histogram_quantile": fn(vVector, vScalar, vVector),
		"histogram_fraction": fn(vVector, vScalar, vScalar, vVector),
		"label_replace":      fn(vVector, vVector, vString, vString, vString, vString),
		"label_join":         {args: []valueType{vVector, vString, vString, vString}, variadic: true, ret: vVector},
		"predict_linear":     fn(vVector, vMatrix, vScalar),
		"quantile_over_time": fn(vVector, vScalar, vMatrix),
		"round":              {args: []valueType{vVector, vScalar}, optional: 1, ret: vVector},
		"scalar":             fn(vScalar, vVector),
		"vector":             fn(vVector, vScalar),
		"time":               fn(vScalar),
		"sort_by_label":      {args: []valueType{vVector, vString}, variadic: true, ret: vVector},
		"sort_by_label_desc": {args: []valueType{vVector, vString}, variadic: true, ret: vVector},
	}
	for _, name := range strings.Fields(`abs ceil floor exp ln log2 log10 sqrt sgn timestamp sort sort_desc
		histogram_count histogram_sum histogram_avg histogram_stddev histogram_stdvar`) {
		m[name] = fn(vVector, vVector)
	}
	for _, name := range strings.Fields(`rate irate increase delta idelta deriv changes resets
		absent_over_time avg_over_time min_over_time max_over_time sum_over_time count_over_time
		last_over_time present_over_time stddev_over_time stdvar_over_time`) {
		m[name] = fn(vVector, vMatrix)
	}
	for _, name := range strings.Fields(`day_of_month day_of_week day_of_year days_in_month hour minute month year`) {
		m[name] = function{args: []valueType{vVector}, optional: 1, ret: vVector}
	}
	return m
}()

// aggregations and whether they take a parameter before the vector.
var aggregations = map[string]bool{
	"sum": false, "min": false, "max": false, "avg": false, "count": false, "group": false,
	"stddev": false, "stdvar": false,
	"topk": true, "bottomk": true, "quantile": true, "count_values": true, "limitk": true, "limit_ratio": true,
}

// keywords may not start an operand.
var keywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"bool": true, "offset": true, "and": true, "or": true, "unless": true, "atan2": true,
}

type exprParser struct {
	toks []token
	i    int
}

func (p *exprParser) peek() token { return p.toks[p.i] }

func (p *exprParser) next() token {
	t := p.toks[p.i]
	if t.kind != tEOF {
		p.i++
	}
	return t
}

func (p *exprParser) isIdent(text string) bool {
	t := p.peek()
	return t.kind == tIdent && t.text == text
}

func (p *exprParser) expect(kind tokKind, what string) (token, error) {
	t := p.next()
	if t.kind != kind {
		return t, fmt.Errorf("at %d: expected %s, found %s", t.pos, what, t)
	}
	return t, nil
}

// checkPromQL reports the first problem found in expr, which must evaluate to a scalar or an
// instant vector.
func checkPromQL(expr string) error {
	if strings.TrimSpace(expr) == "" {
		return fmt.Errorf("empty expression")
	}
	toks, err := lex(expr)
	if err != nil {
		return err
	}
	p := &exprParser{toks: toks}
	typ, err := p.expr(1)
	if err != nil {
		return err
	}
	if t := p.peek(); t.kind != tEOF {
		return fmt.Errorf("at %d: unexpected %s after a complete expression", t.pos, t)
	}
	if typ == vMatrix || typ == vString {
		return fmt.Errorf("expression is a %s; a rule or panel needs a scalar or an instant vector", typ)
	}
	return nil
}

// binaryPrecedence is 0 for a token that is not a binary operator.
func binaryPrecedence(t token) int {
	switch {
	case t.kind == tOp && t.text == "^":
		return 6
	case t.kind == tOp && strings.Contains("*/%", t.text), t.kind == tIdent && t.text == "atan2":
		return 5
	case t.kind == tOp && (t.text == "+" || t.text == "-"):
		return 4
	case t.kind == tOp && t.text != "=" && t.text != "=~" && t.text != "!~":
		return 3 // == != < > <= >=
	case t.kind == tIdent && (t.text == "and" || t.text == "unless"):
		return 2
	case t.kind == tIdent && t.text == "or":
		return 1
	}
	return 0
}

// expr parses operands joined by binary operators of at least minPrec.
func (p *exprParser) expr(minPrec int) (valueType, error) {
	lhs, err := p.unary()
	if err != nil {
		return 0, err
	}
	for {
		op := p.peek()
		prec := binaryPrecedence(op)
		if prec == 0 || prec < minPrec {
			return lhs, nil
		}
		p.next()
		comparison, set := prec == 3, prec <= 2
		if p.isIdent("bool") {
			if !comparison {
				return 0, fmt.Errorf("at %d: bool after %s, which is not a comparison", p.peek().pos, op)
			}
			p.next()
		}
		matching := p.isIdent("on") || p.isIdent("ignoring")
		if matching {
			p.next()
			if err := p.labelList(); err != nil {
				return 0, err
			}
			if p.isIdent("group_left") || p.isIdent("group_right") {
				g := p.next()
				if set {
					return 0, fmt.Errorf("at %d: %s with set operator %s", g.pos, g.text, op)
				}
				if p.peek().kind == tLParen {
					if err := p.labelList(); err != nil {
						return 0, err
					}
				}
			}
		}
		nextMin := prec + 1
		if op.text == "^" {
			nextMin = prec // right-associative
		}
		rhs, err := p.expr(nextMin)
		if err != nil {
			return 0, err
		}
		for _, side := range []valueType{lhs, rhs} {
			if side == vMatrix || side == vString {
				return 0, fmt.Errorf("at %d: operator %s on a %s", op.pos, op, side)
			}
		}
		if (set || matching) && (lhs != vVector || rhs != vVector) {
			return 0, fmt.Errorf("at %d: operator %s needs instant vectors on both sides", op.pos, op)
		}
		if lhs == vScalar && rhs == vScalar {
			lhs = vScalar
		} else {
			lhs = vVector
		}
	}
}

func (p *exprParser) unary() (valueType, error) {
	if t := p.peek(); t.kind == tOp && (t.text == "-" || t.text == "+") {
		p.next()
		typ, err := p.expr(6) // -a^b is -(a^b)
		if err != nil {
			return 0, err
		}
		if typ != vScalar && typ != vVector {
			return 0, fmt.Errorf("at %d: unary %s on a %s", t.pos, t, typ)
		}
		return typ, nil
	}
	return p.postfix()
}

// postfix parses an operand and its range, subquery, offset and @ modifiers.
func (p *exprParser) postfix() (valueType, error) {
	typ, selector, err := p.primary()
	if err != nil {
		return 0, err
	}
	for {
		switch t := p.peek(); {
		case t.kind == tLBracket:
			p.next()
			if _, err := p.expect(tDuration, "a duration such as 5m"); err != nil {
				return 0, err
			}
			if p.peek().kind == tColon {
				p.next()
				if p.peek().kind == tDuration {
					p.next()
				}
				if typ != vVector {
					return 0, fmt.Errorf("at %d: subquery of a %s", t.pos, typ)
				}
			} else if !selector {
				return 0, fmt.Errorf("at %d: a range [..] can only follow a metric selector; use a subquery [range:step]", t.pos)
			}
			if _, err := p.expect(tRBracket, "]"); err != nil {
				return 0, err
			}
			typ, selector = vMatrix, false
		case t.kind == tIdent && t.text == "offset":
			p.next()
			if o := p.peek(); o.kind == tOp && o.text == "-" {
				p.next()
			}
			if _, err := p.expect(tDuration, "a duration after offset"); err != nil {
				return 0, err
			}
			if typ != vVector && typ != vMatrix {
				return 0, fmt.Errorf("at %d: offset on a %s", t.pos, typ)
			}
		case t.kind == tAt:
			p.next()
			switch a := p.next(); {
			case a.kind == tNumber:
			case a.kind == tIdent && (a.text == "start" || a.text == "end"):
				if _, err := p.expect(tLParen, "("); err != nil {
					return 0, err
				}
				if _, err := p.expect(tRParen, ")"); err != nil {
					return 0, err
				}
			default:
				return 0, fmt.Errorf("at %d: @ needs a timestamp, start() or end()", a.pos)
			}
		default:
			return typ, nil
		}
	}
}

// primary parses one operand; selector tells whether it is a bare metric selector.
func (p *exprParser) primary() (typ valueType, selector bool, err error) {
	t := p.peek()
	switch t.kind {
	case tNumber:
		p.next()
		return vScalar, false, nil
	case tString:
		p.next()
		if _, err := unquote(t.text); err != nil {
			return 0, false, fmt.Errorf("at %d: bad string %s: %w", t.pos, t.text, err)
		}
		return vString, false, nil
	case tLParen:
		p.next()
		typ, err := p.expr(1)
		if err != nil {
			return 0, false, err
		}
		if _, err := p.expect(tRParen, ")"); err != nil {
			return 0, false, err
		}
		return typ, false, nil
	case tLBrace:
		n, err := p.matchers()
		if err != nil {
			return 0, false, err
		}
		if n == 0 {
			return 0, false, fmt.Errorf("at %d: a selector without a metric name needs a matcher", t.pos)
		}
		return vVector, true, nil
	case tIdent:
	default:
		return 0, false, fmt.Errorf("at %d: expected an operand, found %s", t.pos, t)
	}

	name := t.text
	switch lower := strings.ToLower(name); {
	case lower == "inf" || lower == "nan":
		p.next()
		return vScalar, false, nil
	case keywords[name]:
		return 0, false, fmt.Errorf("at %d: expected an operand, found keyword %s", t.pos, t)
	}
	if param, ok := aggregations[name]; ok {
		return p.aggregation(param)
	}
	p.next()
	if p.peek().kind == tLParen {
		f, ok := functions[name]
		if !ok {
			return 0, false, fmt.Errorf("at %d: unknown function %s", t.pos, t)
		}
		return p.call(t, f)
	}
	if p.peek().kind == tLBrace {
		if _, err := p.matchers(); err != nil {
			return 0, false, err
		}
	}
	return vVector, true, nil
}

// aggregation parses sum by (a) (x), sum (x) by (a), topk(3, x) and the like.
func (p *exprParser) aggregation(param bool) (valueType, bool, error) {
	op := p.next()
	grouped := false
	if p.isIdent("by") || p.isIdent("without") {
		p.next()
		if err := p.labelList(); err != nil {
			return 0, false, err
		}
		grouped = true
	}
	if _, err := p.expect(tLParen, "( after "+op.text); err != nil {
		return 0, false, err
	}
	if param {
		if _, err := p.expr(1); err != nil {
			return 0, false, err
		}
		if _, err := p.expect(tComma, ", after the parameter of "+op.text); err != nil {
			return 0, false, err
		}
	}
	typ, err := p.expr(1)
	if err != nil {
		return 0, false, err
	}
	if typ != vVector {
		return 0, false, fmt.Errorf("at %d: %s needs an instant vector, got a %s", op.pos, op.text, typ)
	}
	if _, err := p.expect(tRParen, ") closing "+op.text); err != nil {
		return 0, false, err
	}
	if !grouped && (p.isIdent("by") || p.isIdent("without")) {
		p.next()
		if err := p.labelList(); err != nil {
			return 0, false, err
		}
	}
	return vVector, false, nil
}

// call parses a function's arguments and checks their number and types.
func (p *exprParser) call(name token, f function) (valueType, bool, error) {
	p.next() // (
	var got []valueType
	for p.peek().kind != tRParen {
		typ, err := p.expr(1)
		if err != nil {
			return 0, false, err
		}
		got = append(got, typ)
		if p.peek().kind != tComma {
			break
		}
		p.next()
	}
	if _, err := p.expect(tRParen, ") closing "+name.text); err != nil {
		return 0, false, err
	}
	minArgs, maxArgs := len(f.args)-f.optional, len(f.args)
	if f.variadic {
		maxArgs = -1
	}
	if len(got) < minArgs || maxArgs >= 0 && len(got) > maxArgs {
		return 0, false, fmt.Errorf("at %d: %s takes %d to %d arguments, got %d", name.pos, name.text, minArgs, maxArgs, len(got))
	}
	for i, typ := range got {
		want := f.args[min(i, len(f.args)-1)]
		if typ != want {
			return 0, false, fmt.Errorf("at %d: argument %d of %s must be a %s, got a %s", name.pos, i+1, name.text, want, typ)
		}
	}
	return f.ret, false, nil
}

// matchers parses {name op "value", ...} and returns how many matchers it held.
func (p *exprParser) matchers() (int, error) {
	if _, err := p.expect(tLBrace, "{"); err != nil {
		return 0, err
	}
	n := 0
	for p.peek().kind != tRBrace {
		label, err := p.expect(tIdent, "a label name")
		if err != nil {
			return 0, err
		}
		op := p.next()
		if op.kind != tOp || !strings.Contains(" = != =~ !~ ", " "+op.text+" ") {
			return 0, fmt.Errorf("at %d: expected =, !=, =~ or !~ after label %s, found %s", op.pos, label.text, op)
		}
		val, err := p.expect(tString, "a quoted label value")
		if err != nil {
			return 0, err
		}
		s, err := unquote(val.text)
		if err != nil {
			return 0, fmt.Errorf("at %d: bad string %s: %w", val.pos, val.text, err)
		}
		if op.text == "=~" || op.text == "!~" {
			if _, err := regexp.Compile("^(?:" + s + ")$"); err != nil {
				return 0, fmt.Errorf("at %d: bad regex for %s: %w", val.pos, label.text, err)
			}
		}
		n++
		if p.peek().kind != tComma {
			break
		}
		p.next()
	}
	if _, err := p.expect(tRBrace, "} or ,"); err != nil {
		return 0, err
	}
	return n, nil
}

// labelList parses (a, b, c) after by, without, on, ignoring and group_x.
func (p *exprParser) labelList() error {
	if _, err := p.expect(tLParen, "( starting a label list"); err != nil {
		return err
	}
	for p.peek().kind != tRParen {
		if _, err := p.expect(tIdent, "a label name"); err != nil {
			return err
		}
		if p.peek().kind != tComma {
			break
		}
		p.next()
	}
	_, err := p.expect(tRParen, ") closing a label list")
	return err
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
// or label_values(label), and returns its selector ("" if none).
func variableSelector(query string) (string, error) {
	m := labelValuesRE.FindStringSubmatch(query)
	if m == nil {
		return "", fmt.Errorf("variable query %q is not label_values(selector, label)", query)
	}
	if m[1] == "" {
		return "", nil
	}
	if err := validatePromQL(grafanaExpr(m[1])); err != nil {
		return "", fmt.Errorf("variable query %q: %w", query, err)
	}
	return m[1], nil
}

// --- tests -------------------------------------------------------------------------------

func TestCheckPromQLAccepts(t *testing.T) {
	for _, expr := range []string{
		`up`,
		`-x`,
		`2 ^ 3 ^ 2`,
		`time() - 1e3 * .5`,
		`x{a!~"b|c", d='e',}`,
		`{__name__=~"forgejo_.+"}`,
		`x offset 5m`,
		`rate(x[5m] offset 1h)`,
		`max_over_time(rate(x[5m])[1h:5m])`,
		`sum(x) by (a)`,
		`sum without (a) (x)`,
		`topk(3, sum by (a) (rate(x[1m])))`,
		`x > bool 1`,
		`a / on (b) group_left (c) d`,
		`a * ignoring (b) group_right c`,
		`(a > 0) unless on (n) (b > 0)`,
		`a > 0 and b < 1 or c`,
		`label_replace(x, "a", "$1", "b", "(.*)")`,
		`histogram_quantile(0.95, sum by (le) (rate(x_bucket[5m])))`,
		`clamp_min(sum(rate(x[5m])), 1)`,
		`round(x)`,
		`round(x, 0.1)`,
		`x @ start()`,
		"x{a=`raw\\d`}",
		"sum(rate(x[5m])) # comment\n/ 2",
	} {
		if err := checkPromQL(expr); err != nil {
			t.Errorf("checkPromQL(%q) = %v, want nil", expr, err)
		}
	}
}

func TestCheckPromQLRejects(t *testing.T) {
	for _, tc := range []struct{ expr, want string }{
		{``, "empty"},
		{`sum(rate(x[5m])`, "expected ) closing sum"},
		{`rate(x[5m]))`, "unexpected \")\""},
		{`x{a="b}`, "unterminated string"},
		{`x{a}`, "expected =, !=, =~ or !~"},
		{`x{a=b}`, "quoted label value"},
		{`x{a=~"("}`, "bad regex"},
		{`x{a="b"`, "} or ,"},
		{`{}`, "needs a matcher"},
		{`rate(x)`, "must be a range vector"},
		{`x[5m]`, "is a range vector"},
		{`x[5]`, "a duration"},
		{`x[5m] + 1`, "on a range vector"},
		{`(x)[5m]`, "can only follow a metric selector"},
		{`sum by (le rate(x[5m]))`, "closing a label list"},
		{`frobnicate(x)`, "unknown function"},
		{`label_values(x, a)`, "unknown function"},
		{`histogram_quantile(x, 0.9)`, "argument 1 of histogram_quantile must be a scalar"},
		{`clamp_min(x)`, "takes 2 to 2 arguments"},
		{`topk(x)`, ", after the parameter"},
		{`sum(x) >`, "expected an operand"},
		{`rate(x[5m]) rate(y[5m])`, "after a complete expression"},
		{`1 and 2`, "instant vectors on both sides"},
		{`x + on (a) 1`, "instant vectors on both sides"},
		{`a + bool b`, "not a comparison"},
		{`a and on (b) group_left c`, "with set operator"},
		{`sum(1)`, "needs an instant vector"},
		{`"text"`, "is a string"},
		{`x ! y`, "unexpected character"},
		{`x offset`, "duration after offset"},
		{`5mm`, "bad number or duration"},
		{`by`, "keyword"},
		{"x{a=\"b\nc\"}", "newline in string"},
	} {
		err := checkPromQL(tc.expr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("checkPromQL(%q) = %v, want an error containing %q", tc.expr, err, tc.want)
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
	if sel, err := variableSelector(`label_values(m{namespace=~"$namespace"}, pool)`); err != nil || sel != `m{namespace=~"$namespace"}` {
		t.Errorf("variableSelector = %q, %v", sel, err)
	}
	if sel, err := variableSelector(`label_values(pool)`); err != nil || sel != "" {
		t.Errorf("variableSelector(label only) = %q, %v", sel, err)
	}
	for _, bad := range []string{`query_result(up)`, `label_values(m{a="b", pool)`, `label_values(rate(m), pool)`} {
		if _, err := variableSelector(bad); err == nil {
			t.Errorf("variableSelector(%q) accepted a broken query", bad)
		}
	}
}

// TestUpstreamPromQLParser runs once the upstream parser is switched on: it must reject what
// the local checker rejects for syntax.
func TestUpstreamPromQLParser(t *testing.T) {
	if !upstreamPromQLParser {
		t.Skip("Prometheus's PromQL parser is not switched on; see upstreamPromQLParser")
	}
	for _, bad := range []string{`sum(rate(x[5m])`, `x{a=b}`, `rate(x)`, `frobnicate(x)`} {
		if upstreamPromQLCheck(bad) == nil {
			t.Errorf("upstream parser accepted %q", bad)
		}
	}
	if err := upstreamPromQLCheck(`histogram_quantile(0.95, sum by (le) (rate(x_bucket[5m])))`); err != nil {
		t.Errorf("upstream parser: %v", err)
	}
}
