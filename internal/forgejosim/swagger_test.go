package forgejosim_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
)

// swaggerFile is Forgejo v15.0.3's own API description, kept beside the checkout (CI has
// ../shared next to it). A missing file fails the tests: the contract is not optional.
var swaggerFile = filepath.Join("..", "..", "..", "shared", "forgejo", "forgejo-api-v15.0.3.swagger.json")

var loadSwagger = sync.OnceValues(func() (map[string]any, error) {
	data, err := os.ReadFile(swaggerFile)
	if err != nil {
		return nil, fmt.Errorf("read Forgejo's API description: %w", err)
	}
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("decode %s: %w", swaggerFile, err)
	}
	return doc, nil
})

// middlewareResponses are the answers Forgejo's route middlewares give whatever the operation
// declares (routers/api/v1/api.go): reqToken's 401, tokenRequiresScopes' and the role checks'
// 403, the owner/repository lookups' and {runner_id}'s 404, bind's 422. The swagger file lists
// them for some operations only; their bodies are still held to the file's global responses.
var middlewareResponses = map[int]string{
	http.StatusUnauthorized:        "unauthorized",
	http.StatusForbidden:           "forbidden",
	http.StatusNotFound:            "notFound",
	http.StatusUnprocessableEntity: "validationError",
}

// marshalledExtras are fields a model's MarshalJSON adds that the swagger file, generated from the
// struct, does not list: User's "username", the Gitea-compatible copy of "login"
// (modules/structs/user.go User.MarshalJSON).
var marshalledExtras = map[string][]string{
	"#/definitions/User": {"username"},
}

// contract holds REST answers to the swagger file.
type contract struct {
	doc map[string]any
}

func newContract(tb testing.TB) *contract {
	tb.Helper()
	doc, err := loadSwagger()
	if err != nil {
		tb.Fatalf("contract: %v", err)
	}
	return &contract{doc: doc}
}

// wrap serves h and checks every answer under /api/v1/ against the swagger file, reporting each
// violation as a test error. Other paths (the runner protocol, /_sim/) pass through.
func (c *contract) wrap(tb testing.TB, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/api/v1/") {
			h.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if rec.Header().Get(forgejosim.HeaderInjectedFault) == "" {
			for _, v := range c.check(r.Method, r.URL.Path, rec.Code, rec.Body.Bytes()) {
				tb.Errorf("contract: %s %s → %d: %s", r.Method, r.URL.Path, rec.Code, v)
			}
		}
		for k, vs := range rec.Header() {
			w.Header()[k] = vs
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	})
}

// check returns what is wrong with one answer: an operation the file lacks, an undeclared
// status, a body field its schema lacks.
func (c *contract) check(method, path string, status int, body []byte) []string {
	tmpl, op := c.operation(method, strings.TrimPrefix(path, "/api/v1"))
	if op == nil {
		return []string{fmt.Sprintf("no operation %s %s in Forgejo's API description", method, path)}
	}
	responses, _ := op["responses"].(map[string]any)
	resp, declared := responses[strconv.Itoa(status)]
	if !declared {
		resp, declared = responses["default"]
	}
	if !declared {
		name, ok := middlewareResponses[status]
		switch {
		case !ok,
			status == http.StatusNotFound && !strings.Contains(tmpl, "{"),
			status == http.StatusUnprocessableEntity && !hasBodyParameter(op):
			return []string{fmt.Sprintf("status %d is not declared for %s %s", status, method, tmpl)}
		}
		resp = map[string]any{"$ref": "#/responses/" + name}
	}
	schema := c.responseSchema(resp)
	if schema == nil {
		if len(bytes.TrimSpace(body)) != 0 {
			return []string{fmt.Sprintf("a body where the description has none: %s", body)}
		}
		return nil
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return []string{fmt.Sprintf("body is not JSON: %v: %q", err, body)}
	}
	return c.validate(v, schema, "body")
}

// operation finds the path template and operation serving method and path; literal segments
// win over parameters (/runners/jobs is not /runners/{runner_id}).
func (c *contract) operation(method, path string) (string, map[string]any) {
	paths, _ := c.doc["paths"].(map[string]any)
	segs := strings.Split(strings.Trim(path, "/"), "/")
	best, bestLiterals := "", -1
	for tmpl := range paths {
		tsegs := strings.Split(strings.Trim(tmpl, "/"), "/")
		if len(tsegs) != len(segs) {
			continue
		}
		literals, ok := 0, true
		for i, ts := range tsegs {
			switch {
			case strings.HasPrefix(ts, "{") && strings.HasSuffix(ts, "}"):
				ok = ok && segs[i] != ""
			case ts == segs[i]:
				literals++
			default:
				ok = false
			}
		}
		if ok && literals > bestLiterals {
			best, bestLiterals = tmpl, literals
		}
	}
	if best == "" {
		return "", nil
	}
	item, _ := paths[best].(map[string]any)
	op, _ := item[strings.ToLower(method)].(map[string]any)
	return best, op
}

func hasBodyParameter(op map[string]any) bool {
	params, _ := op["parameters"].([]any)
	return slices.ContainsFunc(params, func(p any) bool {
		m, _ := p.(map[string]any)
		return m["in"] == "body"
	})
}

// resolve follows a "#/definitions/…" or "#/responses/…" reference.
func (c *contract) resolve(node map[string]any) map[string]any {
	for i := 0; i < 10; i++ {
		ref, ok := node["$ref"].(string)
		if !ok {
			return node
		}
		parts := strings.Split(strings.TrimPrefix(ref, "#/"), "/")
		var cur any = c.doc
		for _, p := range parts {
			m, _ := cur.(map[string]any)
			cur = m[p]
		}
		next, _ := cur.(map[string]any)
		if next == nil {
			return nil
		}
		node = next
	}
	return node
}

func (c *contract) responseSchema(resp any) map[string]any {
	m, _ := resp.(map[string]any)
	r := c.resolve(m)
	if r == nil {
		return nil
	}
	schema, _ := r["schema"].(map[string]any)
	return schema
}

// validate checks that every field of v is described by schema, following $ref, allOf, arrays
// and objects; JSON null stands for Go's nil slices and pointers and is accepted anywhere.
func (c *contract) validate(v any, schema map[string]any, where string) []string {
	if v == nil {
		return nil
	}
	ref, _ := schema["$ref"].(string)
	extras := marshalledExtras[ref]
	schema = c.resolve(schema)
	if schema == nil {
		return []string{where + ": unresolvable schema"}
	}
	properties := map[string]any{}
	addProps := func(s map[string]any) {
		props, _ := s["properties"].(map[string]any)
		for k, p := range props {
			properties[k] = p
		}
	}
	addProps(schema)
	if all, ok := schema["allOf"].([]any); ok {
		for _, part := range all {
			m, _ := part.(map[string]any)
			if r := c.resolve(m); r != nil {
				addProps(r)
			}
		}
	}
	typ, _ := schema["type"].(string)
	switch val := v.(type) {
	case []any:
		if typ != "array" {
			return []string{fmt.Sprintf("%s: an array where the description has %q", where, typ)}
		}
		items, _ := schema["items"].(map[string]any)
		var out []string
		for i, item := range val {
			out = append(out, c.validate(item, items, fmt.Sprintf("%s[%d]", where, i))...)
		}
		return out
	case map[string]any:
		if typ != "" && typ != "object" {
			return []string{fmt.Sprintf("%s: an object where the description has %q", where, typ)}
		}
		additional, hasAdditional := schema["additionalProperties"]
		keys := make([]string, 0, len(val))
		for k := range val {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var out []string
		for _, k := range keys {
			p, ok := properties[k]
			if !ok && slices.Contains(extras, k) {
				continue
			}
			if !ok {
				if !hasAdditional || additional == false {
					out = append(out, fmt.Sprintf("%s: field %q is not in Forgejo's schema", where, k))
					continue
				}
				p = additional
			}
			ps, _ := p.(map[string]any)
			if ps != nil {
				out = append(out, c.validate(val[k], ps, where+"."+k)...)
			}
		}
		return out
	case string:
		if typ != "" && typ != "string" {
			return []string{fmt.Sprintf("%s: a string where the description has %q", where, typ)}
		}
		if enum, ok := schema["enum"].([]any); ok && !slices.Contains(enum, any(val)) {
			return []string{fmt.Sprintf("%s: %q is not one of %v", where, val, enum)}
		}
	case float64:
		if typ != "" && typ != "integer" && typ != "number" {
			return []string{fmt.Sprintf("%s: a number where the description has %q", where, typ)}
		}
	case bool:
		if typ != "" && typ != "boolean" {
			return []string{fmt.Sprintf("%s: a boolean where the description has %q", where, typ)}
		}
	}
	return nil
}

// TestContractChecker shows the checker refuses what Forgejo's description does not allow, so
// that the REST tests' silence means something.
func TestContractChecker(t *testing.T) {
	c := newContract(t)
	cases := []struct {
		name         string
		method, path string
		status       int
		body         string
		bad          bool
	}{
		{"declared list", "GET", "/api/v1/admin/actions/runners", 200, `[{"id":1,"uuid":"u","status":"idle","labels":["a"]}]`, false},
		{"jobs, null body", "GET", "/api/v1/repos/a/b/actions/runners/jobs", 200, "null\n", false},
		{"extra runner field", "GET", "/api/v1/admin/actions/runners", 200, `[{"id":1,"online":true}]`, true},
		{"extra job field", "GET", "/api/v1/orgs/a/actions/runners/jobs", 200, `[{"id":1,"run_id":2}]`, true},
		{"status outside its enum", "GET", "/api/v1/admin/actions/runners/1", 200, `{"id":1,"status":"busy"}`, true},
		{"unknown path", "GET", "/api/v1/admin/actions/runners/1/tasks", 200, `{}`, true},
		{"unknown method", "PATCH", "/api/v1/admin/actions/runners/1", 200, `{}`, true},
		{"undeclared status", "GET", "/api/v1/admin/actions/runners", 409, `{"message":"x","url":"u"}`, true},
		{"middleware 403", "GET", "/api/v1/admin/actions/runners", 403, `{"message":"x","url":"u"}`, false},
		{"middleware 403 with a field too many", "GET", "/api/v1/admin/actions/runners", 403, `{"message":"x","url":"u","errors":[]}`, true},
		{"404 of a lookup", "GET", "/api/v1/repos/a/b/actions/runners/jobs", 404, `{"message":"x","url":"u","errors":[]}`, false},
		{"404 on a route without lookup", "GET", "/api/v1/version", 404, `{"message":"x","url":"u"}`, true},
		{"user's compat username", "GET", "/api/v1/user", 200, `{"id":1,"login":"a","username":"a"}`, false},
		{"username elsewhere", "GET", "/api/v1/repos/a/b", 200, `{"id":1,"username":"a"}`, true},
		{"no content", "DELETE", "/api/v1/user/actions/runners/3", 204, ``, false},
		{"body on 204", "DELETE", "/api/v1/user/actions/runners/3", 204, `{}`, true},
	}
	for _, tc := range cases {
		got := c.check(tc.method, tc.path, tc.status, []byte(tc.body))
		if bad := len(got) > 0; bad != tc.bad {
			t.Errorf("%s: violations %q, want bad=%v", tc.name, got, tc.bad)
		}
	}
}
