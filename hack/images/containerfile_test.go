package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	digest "github.com/opencontainers/go-digest"
)

// No container engine runs here, so the Containerfiles are checked the way `docker build
// --check` does it: BuildKit's own Dockerfile frontend (parser, instruction checks and lint
// rules), fed a stand-in for the registry so that no base image is fetched.

// offlineResolver answers every base image lookup with an empty linux image config.
type offlineResolver struct{}

func (offlineResolver) ResolveImageConfig(_ context.Context, ref string, _ sourceresolver.Opt) (string, digest.Digest, []byte, error) {
	return ref, digest.FromString(ref), []byte(`{"architecture":"amd64","os":"linux","config":{}}`), nil
}

// lint returns BuildKit's findings for a Containerfile, one line each, and its build error.
func lint(t *testing.T, name string, dt []byte) []string {
	t.Helper()
	res, err := dockerfile2llb.DockerfileLint(context.Background(), dt, dockerfile2llb.ConvertOpt{
		MetaResolver: offlineResolver{},
		SourceMap:    &llb.SourceMap{Filename: name, Language: "Dockerfile", Data: dt, Definition: &llb.Definition{}},
	})
	if err != nil {
		t.Fatalf("linting %s: %v", name, err)
	}
	var out []string
	if res.Error != nil {
		out = append(out, "error: "+res.Error.Message)
	}
	for _, w := range res.Warnings {
		line := 0
		if len(w.Location.Ranges) > 0 {
			line = int(w.Location.Ranges[0].Start.Line)
		}
		out = append(out, fmt.Sprintf("%s:%d: %s: %s", name, line, w.RuleName, w.Detail))
	}
	return out
}

// TestLinterIsLive: the linter finds what it should in a Containerfile written badly, so a
// clean result below means something.
func TestLinterIsLive(t *testing.T) {
	bad := []byte("FROM golang:1.26 as Build\nWORKDIR src\nENV A B\n" +
		"FROM gcr.io/distroless/static-debian13:nonroot\nCOPY --from=Build /x /x\nENTRYPOINT /x\n")
	got := strings.Join(lint(t, "bad", bad), "\n")
	for _, rule := range []string{"FromAsCasing", "StageNameCasing", "WorkdirRelativePath", "LegacyKeyValueFormat", "JSONArgsRecommended"} {
		if !strings.Contains(got, rule) {
			t.Errorf("the linter did not report %s; it said:\n%s", rule, got)
		}
	}
	if got := lint(t, "broken", []byte("FROM scratch\nCOPY --chmod /x /x\nFROBNICATE now\n")); len(got) == 0 {
		t.Error("an unknown instruction passed")
	}
}

func finalStage(t *testing.T, dt []byte) instructions.Stage {
	t.Helper()
	res, err := parser.Parse(bytes.NewReader(dt))
	if err != nil {
		t.Fatal(err)
	}
	stages, _, err := instructions.Parse(res.AST, nil)
	if err != nil {
		t.Fatal(err)
	}
	return stages[len(stages)-1]
}

// TestContainerfile: the file lints clean and builds what `make images` builds: same base
// shape (distroless static, nonroot), user, entrypoint, binary path and labels, compiled the
// same way.
func TestContainerfile(t *testing.T) {
	for file, binary := range map[string]string{
		"Containerfile":             "forgejo-runner-operator",
		"Containerfile.provisioner": "forgejo-runner-provisioner",
	} {
		t.Run(file, func(t *testing.T) { checkContainerfile(t, file, binary) })
	}
}

func checkContainerfile(t *testing.T, file, binary string) {
	dt, err := os.ReadFile("../../" + file)
	if err != nil {
		t.Fatal(err)
	}
	if findings := lint(t, file, dt); len(findings) > 0 {
		t.Errorf("%s:\n%s", file, strings.Join(findings, "\n"))
	}

	final := finalStage(t, dt)
	if !regexp.MustCompile(`^gcr\.io/distroless/static-debian\d+:nonroot$`).MatchString(final.BaseName) {
		t.Errorf("final stage is FROM %s, want distroless static nonroot", final.BaseName)
	}
	var user, copyDest string
	var entry []string
	labels := map[string]string{}
	for _, cmd := range final.Commands {
		switch c := cmd.(type) {
		case *instructions.UserCommand:
			user = c.User
		case *instructions.EntrypointCommand:
			if !c.PrependShell {
				entry = c.CmdLine
			}
		case *instructions.CopyCommand:
			if c.From != "" {
				copyDest = c.DestPath
			}
		case *instructions.LabelCommand:
			for _, kv := range c.Labels {
				v := kv.Value
				if u, err := strconv.Unquote(v); err == nil {
					v = u
				}
				labels[kv.Key] = v
			}
		case *instructions.CmdCommand:
			t.Errorf("final stage has CMD %q; the image has none (arguments come from the Deployment)", c.CmdLine)
		}
	}
	if user != imageUser {
		t.Errorf("USER %q, make images uses %q", user, imageUser)
	}
	if len(entry) != 1 || entry[0] != entrypoint(binary) {
		t.Errorf("ENTRYPOINT %q, make images uses [%q]", entry, entrypoint(binary))
	}
	if copyDest != entrypoint(binary) {
		t.Errorf("the binary is copied to %q, make images puts it at %q", copyDest, entrypoint(binary))
	}
	for k, want := range map[string]string{
		annTitle: binary, annDescription: descriptions[binary], annSource: defaultSource,
		annLicenses: defaultLicense, annVersion: "${VERSION}",
	} {
		if labels[k] != want {
			t.Errorf("LABEL %s=%q, make images uses %q", k, labels[k], want)
		}
	}

	text := string(dt)
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-buildvcs=false",
		module + "/internal/version.Version=${VERSION}", module + "/internal/version.Commit=${COMMIT}",
		"./cmd/" + binary} {
		if !strings.Contains(text, want) {
			t.Errorf("the build stage does not compile with %q as make images does", want)
		}
	}
	checkGoVersion(t, text)
	checkCopiedSources(t, text, binary)
}

// checkGoVersion: the builder image's Go is the go.mod's language version or newer in the same
// minor release, so the Containerfile neither fails on go.mod nor builds with another minor.
func checkGoVersion(t *testing.T, containerfile string) {
	t.Helper()
	m := regexp.MustCompile(`golang:(\d+)\.(\d+)\.(\d+)`).FindStringSubmatch(containerfile)
	if m == nil {
		t.Fatal("the builder is not a golang:X.Y.Z image")
	}
	goMod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	g := regexp.MustCompile(`(?m)^go (\d+)\.(\d+)(?:\.(\d+))?$`).FindSubmatch(goMod)
	if g == nil {
		t.Fatal("go.mod has no go directive")
	}
	atoi := func(s string) int { n, _ := strconv.Atoi(s); return n }
	if m[1] != string(g[1]) || m[2] != string(g[2]) || atoi(m[3]) < atoi(string(g[3])) {
		t.Errorf("builder golang:%s.%s.%s does not match go.mod's go %s", m[1], m[2], m[3], bytes.TrimPrefix(g[0], []byte("go ")))
	}
}

// checkCopiedSources: every directory of this module that the binary is compiled from is
// copied into the build stage, so a new top-level package cannot break only container builds.
func checkCopiedSources(t *testing.T, containerfile, binary string) {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "./cmd/"+binary)
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dirs := map[string]bool{}
	for _, pkg := range strings.Fields(string(out)) {
		if rest, ok := strings.CutPrefix(pkg, module+"/"); ok {
			dirs[strings.SplitN(rest, "/", 2)[0]] = true
		}
	}
	if len(dirs) == 0 {
		t.Fatal("go list found no package of this module")
	}
	for d := range dirs {
		if !strings.Contains(containerfile, fmt.Sprintf("COPY %s/ %s/", d, d)) {
			t.Errorf("the binary is built from %s/, which the Containerfile does not copy", filepath.ToSlash(d))
		}
	}
}
