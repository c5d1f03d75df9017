// Package apicheck checks the provisioner's proto for what buf lint and buf breaking would catch
// that matters to its clients, over the descriptors compiled into the generated code: naming
// (so the API stays regular as it grows) and wire compatibility against a committed snapshot of
// every field's number and type (so an operator built against an older API keeps working).
// After a deliberate, compatible change, refresh the snapshot: go test ./internal/provisioner/apicheck -update
package apicheck

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	pb "git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisionerpb/provisionerv1"
)

var update = flag.Bool("update", false, "rewrite the snapshot from the current proto")

var (
	pascal     = regexp.MustCompile(`^[A-Z][A-Za-z0-9]*$`)
	lowerSnake = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)
	upperSnake = regexp.MustCompile(`^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$`)
)

func TestNaming(t *testing.T) {
	fd := pb.File_provisioner_v1_provisioner_proto
	if got := string(fd.Package()); got != "provisioner.v1" || !strings.HasPrefix(fd.Path(), "provisioner/v1/") {
		t.Errorf("package %s at %s: the package must match the directory", got, fd.Path())
	}
	svcs := fd.Services()
	for i := range svcs.Len() {
		s := svcs.Get(i)
		if !strings.HasSuffix(string(s.Name()), "Service") {
			t.Errorf("service %s: name must end in Service", s.Name())
		}
		for j := range s.Methods().Len() {
			m := s.Methods().Get(j)
			if !pascal.MatchString(string(m.Name())) {
				t.Errorf("rpc %s: not PascalCase", m.Name())
			}
			if want := string(m.Name()) + "Request"; string(m.Input().Name()) != want || m.Input().ParentFile() != fd {
				t.Errorf("rpc %s takes %s, want its own %s", m.Name(), m.Input().FullName(), want)
			}
			if want := string(m.Name()) + "Response"; string(m.Output().Name()) != want || m.Output().ParentFile() != fd {
				t.Errorf("rpc %s returns %s, want its own %s", m.Name(), m.Output().FullName(), want)
			}
		}
	}
	msgs := fd.Messages()
	for i := range msgs.Len() {
		m := msgs.Get(i)
		if !pascal.MatchString(string(m.Name())) {
			t.Errorf("message %s: not PascalCase", m.Name())
		}
		for j := range m.Fields().Len() {
			if f := m.Fields().Get(j); !lowerSnake.MatchString(string(f.Name())) {
				t.Errorf("field %s: not lower_snake_case", f.FullName())
			}
		}
	}
	enums := fd.Enums()
	for i := range enums.Len() {
		e := enums.Get(i)
		// As buf splits words: VMState is VM_STATE.
		words := regexp.MustCompile(`([a-z0-9])([A-Z])`).ReplaceAllString(string(e.Name()), "${1}_${2}")
		words = regexp.MustCompile(`([A-Z])([A-Z][a-z])`).ReplaceAllString(words, "${1}_${2}")
		prefix := strings.ToUpper(words) + "_"
		for j := range e.Values().Len() {
			v := e.Values().Get(j)
			if !upperSnake.MatchString(string(v.Name())) || !strings.HasPrefix(string(v.Name()), prefix) {
				t.Errorf("enum value %s: want UPPER_SNAKE_CASE prefixed %s", v.Name(), prefix)
			}
			if v.Number() == 0 && string(v.Name()) != prefix+"UNSPECIFIED" {
				t.Errorf("enum %s: zero value must be %sUNSPECIFIED", e.Name(), prefix)
			}
		}
	}
}

// snapshot is "<message>.<field>" → "<number> <kind> <cardinality> <type>", and
// "<Service>/<Method>" → "<input> <output> <streaming>".
func snapshot() map[string]string {
	fd := pb.File_provisioner_v1_provisioner_proto
	out := map[string]string{}
	var walk func(protoreflect.MessageDescriptors)
	walk = func(ms protoreflect.MessageDescriptors) {
		for i := range ms.Len() {
			m := ms.Get(i)
			for j := range m.Fields().Len() {
				f := m.Fields().Get(j)
				typ := ""
				if f.Message() != nil {
					typ = string(f.Message().FullName())
				} else if f.Enum() != nil {
					typ = string(f.Enum().FullName())
				}
				out[string(f.FullName())] = strings.TrimSpace(fmt.Sprintf("%d %s %s %s", f.Number(), f.Kind(), f.Cardinality(), typ))
			}
			walk(m.Messages())
		}
	}
	walk(fd.Messages())
	for i := range fd.Enums().Len() {
		e := fd.Enums().Get(i)
		for j := range e.Values().Len() {
			v := e.Values().Get(j)
			out[string(v.FullName())] = fmt.Sprintf("%d", v.Number())
		}
	}
	for i := range fd.Services().Len() {
		s := fd.Services().Get(i)
		for j := range s.Methods().Len() {
			m := s.Methods().Get(j)
			out[string(m.FullName())] = fmt.Sprintf("%s %s client-stream=%t server-stream=%t", m.Input().FullName(), m.Output().FullName(), m.IsStreamingClient(), m.IsStreamingServer())
		}
	}
	return out
}

// TestNoBreakingChange: everything in the snapshot is still there, unchanged. New fields,
// messages and methods are fine; a removed field must be reserved (and its entry dropped from the
// snapshot by hand, a visible decision in review), a renumbered or retyped one never is.
func TestNoBreakingChange(t *testing.T) {
	path := filepath.Join("testdata", "provisioner.v1.snapshot.json")
	now := snapshot()
	if *update {
		data, _ := json.MarshalIndent(now, "", "  ")
		if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil { //nolint:gosec // a committed fixture
			t.Fatal(err)
		}
		return
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var was map[string]string
	if err := json.Unmarshal(data, &was); err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(was))
	for n := range was {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		got, ok := now[n]
		switch {
		case !ok:
			t.Errorf("%s (%s) is gone: reserve its number and name instead, then drop it from the snapshot", n, was[n])
		case got != was[n]:
			t.Errorf("%s changed from %q to %q: that breaks existing clients", n, was[n], got)
		}
	}
	// Numbers a message uses now must not be ones the snapshot had under another name.
	byNumber := map[string]string{}
	for n, v := range was {
		if i := strings.LastIndex(n, "."); i > 0 && !strings.Contains(n, "/") {
			byNumber[n[:i]+"#"+strings.Fields(v)[0]] = n
		}
	}
	for n, v := range now {
		if i := strings.LastIndex(n, "."); i > 0 {
			if old, ok := byNumber[n[:i]+"#"+strings.Fields(v)[0]]; ok && old != n {
				t.Errorf("%s reuses the number of %s", n, old)
			}
		}
	}
}
