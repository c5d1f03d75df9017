// Package fcstandin is a stand-in for Firecracker's API server, for tests: it serves HTTP on a
// Unix socket and accepts exactly the requests Firecracker's own API description
// (firecracker-api-v1.15.1.yaml, a Swagger 2.0 document) allows, interpreted from that file at
// run time: known paths and methods, path parameters, required bodies, the body schemas (types,
// required properties, enums, minimum/maximum, no undeclared properties, as Firecracker's serde
// structs deny unknown fields) and the "Pre-boot only"/"Post-boot only" rules of the operation
// summaries. It records every request so tests can see what a driver sent.
//
// It is a test tool, never imported by product code.
package fcstandin

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// Spec is the part of the API description the stand-in enforces.
type Spec struct {
	Version     string
	operations  []operation
	definitions map[string]any
}

type operation struct {
	method   string // upper case
	segments []string
	summary  string
	params   []parameter
	preBoot  bool
	postBoot bool
}

type parameter struct {
	name     string
	in       string
	required bool
	schema   map[string]any // body
	typ      string         // path
}

// LoadSpec reads a Swagger 2.0 API description.
func LoadSpec(path string) (*Spec, error) {
	data, err := os.ReadFile(path) //nolint:gosec // a test fixture named by the test
	if err != nil {
		return nil, fmt.Errorf("read API description: %w", err)
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("parse API description: %w", err)
	}
	var doc struct {
		Swagger string `json:"swagger"`
		Info    struct {
			Version string `json:"version"`
		} `json:"info"`
		Paths       map[string]map[string]json.RawMessage `json:"paths"`
		Definitions map[string]any                        `json:"definitions"`
	}
	if err := json.Unmarshal(js, &doc); err != nil {
		return nil, fmt.Errorf("decode API description: %w", err)
	}
	if doc.Swagger != "2.0" {
		return nil, fmt.Errorf("API description is swagger %q, want 2.0", doc.Swagger)
	}
	s := &Spec{Version: doc.Info.Version, definitions: doc.Definitions}
	paths := make([]string, 0, len(doc.Paths))
	for p := range doc.Paths {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		for method, raw := range doc.Paths[p] {
			var op struct {
				Summary    string `json:"summary"`
				Parameters []struct {
					Name     string         `json:"name"`
					In       string         `json:"in"`
					Required bool           `json:"required"`
					Schema   map[string]any `json:"schema"`
					Type     string         `json:"type"`
				} `json:"parameters"`
			}
			if err := json.Unmarshal(raw, &op); err != nil {
				return nil, fmt.Errorf("decode %s %s: %w", method, p, err)
			}
			o := operation{
				method:   strings.ToUpper(method),
				segments: split(p),
				summary:  op.Summary,
				preBoot:  strings.Contains(op.Summary, "Pre-boot only"),
				postBoot: strings.Contains(op.Summary, "Post-boot only"),
			}
			for _, prm := range op.Parameters {
				o.params = append(o.params, parameter{name: prm.Name, in: prm.In, required: prm.Required, schema: prm.Schema, typ: prm.Type})
			}
			s.operations = append(s.operations, o)
		}
	}
	return s, nil
}

func split(p string) []string {
	p = strings.Trim(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// match finds the operation for a method and path. found tells whether the path exists at all
// (405 rather than 404 when only the method is wrong).
func (s *Spec) match(method, path string) (op *operation, pathParams map[string]string, found bool) {
	segs := split(path)
	for i := range s.operations {
		o := &s.operations[i]
		params, ok := matchSegments(o.segments, segs)
		if !ok {
			continue
		}
		found = true
		if o.method == method {
			return o, params, true
		}
	}
	return nil, nil, found
}

func matchSegments(tmpl, segs []string) (map[string]string, bool) {
	if len(tmpl) != len(segs) {
		return nil, false
	}
	params := map[string]string{}
	for i, t := range tmpl {
		if strings.HasPrefix(t, "{") && strings.HasSuffix(t, "}") {
			if segs[i] == "" {
				return nil, false
			}
			params[t[1:len(t)-1]] = segs[i]
			continue
		}
		if t != segs[i] {
			return nil, false
		}
	}
	return params, true
}

// validate checks v against a schema, returning the first violation found.
func (s *Spec) validate(schema map[string]any, v any, where string) error {
	if ref, ok := schema["$ref"].(string); ok {
		name := strings.TrimPrefix(ref, "#/definitions/")
		def, ok := s.definitions[name].(map[string]any)
		if !ok {
			return fmt.Errorf("%s: the description has no definition %q", where, name)
		}
		return s.validate(def, v, where)
	}
	typ, _ := schema["type"].(string)
	if typ == "" {
		if _, hasProps := schema["properties"]; hasProps {
			typ = "object"
		}
	}
	switch typ {
	case "object":
		obj, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: want an object, got %s", where, kind(v))
		}
		props, _ := schema["properties"].(map[string]any)
		if req, ok := schema["required"].([]any); ok {
			for _, r := range req {
				name, _ := r.(string)
				if _, ok := obj[name]; !ok {
					return fmt.Errorf("%s: missing required field %q", where, name)
				}
			}
		}
		additional, _ := schema["additionalProperties"].(bool)
		names := make([]string, 0, len(obj))
		for k := range obj {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			ps, ok := props[k].(map[string]any)
			if !ok {
				if additional {
					continue
				}
				return fmt.Errorf("%s: unknown field %q", where, k)
			}
			if err := s.validate(ps, obj[k], where+"."+k); err != nil {
				return err
			}
		}
	case "array":
		arr, ok := v.([]any)
		if !ok {
			return fmt.Errorf("%s: want an array, got %s", where, kind(v))
		}
		items, _ := schema["items"].(map[string]any)
		for i, e := range arr {
			if items == nil {
				break
			}
			if err := s.validate(items, e, fmt.Sprintf("%s[%d]", where, i)); err != nil {
				return err
			}
		}
	case "string":
		if _, ok := v.(string); !ok {
			return fmt.Errorf("%s: want a string, got %s", where, kind(v))
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			return fmt.Errorf("%s: want a boolean, got %s", where, kind(v))
		}
	case "integer", "number":
		n, ok := v.(json.Number)
		if !ok {
			return fmt.Errorf("%s: want a number, got %s", where, kind(v))
		}
		f, err := n.Float64()
		if err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if typ == "integer" {
			if _, err := n.Int64(); err != nil {
				return fmt.Errorf("%s: want an integer, got %s", where, n)
			}
			if f < 0 && schemaUnsigned(schema) {
				return fmt.Errorf("%s: want a non-negative integer, got %s", where, n)
			}
		}
		if minimum, ok := schema["minimum"].(float64); ok && f < minimum {
			return fmt.Errorf("%s: %s is below the minimum %v", where, n, minimum)
		}
		if maximum, ok := schema["maximum"].(float64); ok && f > maximum {
			return fmt.Errorf("%s: %s is above the maximum %v", where, n, maximum)
		}
	}
	if enum, ok := schema["enum"].([]any); ok {
		for _, e := range enum {
			if fmt.Sprint(e) == fmt.Sprint(v) {
				return nil
			}
		}
		return fmt.Errorf("%s: %v is not one of %v", where, v, enum)
	}
	if pattern, ok := schema["format"].(string); ok && strings.ContainsAny(pattern, "([") {
		// The description puts regular expressions in format (MmdsConfig.ipv4_address).
		if str, ok := v.(string); ok && !regexp.MustCompile("^"+pattern+"$").MatchString(str) {
			return fmt.Errorf("%s: %q does not match %s", where, str, pattern)
		}
	}
	return nil
}

// schemaUnsigned: Firecracker's integers are Rust u8..u64 unless the description says otherwise;
// a negative count, size or id fails to deserialize there.
func schemaUnsigned(map[string]any) bool { return true }

func kind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	}
	return fmt.Sprintf("%T", v)
}
