// Package renovate holds the test of renovate.json: Renovate runs elsewhere, so nothing here
// would notice a pin that its regex no longer matches until the pin was years old.
package renovate

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
)

const root = "../.."

type config struct {
	EnabledManagers []string `json:"enabledManagers"`
	IgnorePaths     []string `json:"ignorePaths"`
	PackageRules    []struct {
		GroupName         string   `json:"groupName"`
		MatchDatasources  []string `json:"matchDatasources"`
		MatchPackageNames []string `json:"matchPackageNames"`
		Enabled           *bool    `json:"enabled"`
	} `json:"packageRules"`
	CustomManagers []struct {
		CustomType          string   `json:"customType"`
		ManagerFilePatterns []string `json:"managerFilePatterns"`
		MatchStrings        []string `json:"matchStrings"`
		DatasourceTemplate  string   `json:"datasourceTemplate"`
	} `json:"customManagers"`
}

func load(t *testing.T) config {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, "renovate.json"))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	var c config
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("renovate.json: %v", err)
	}
	return c
}

// trackedFiles lists the repository's files as Renovate sees them: what git tracks.
func trackedFiles(t *testing.T) []string {
	t.Helper()
	cmd := exec.Command("git", "ls-files", "--cached", "--others", "--exclude-standard")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	return strings.Fields(string(out))
}

// filePattern turns a managerFilePatterns entry into a Go regexp; only the /regex/ form is used
// here, and Renovate's JavaScript patterns of this kind mean the same in Go.
func filePattern(t *testing.T, p string) *regexp.Regexp {
	t.Helper()
	if len(p) < 2 || p[0] != '/' || p[len(p)-1] != '/' {
		t.Fatalf("managerFilePatterns entry %q is not a /regex/", p)
	}
	return regexp.MustCompile(p[1 : len(p)-1])
}

type hit struct{ file, depName, currentValue string }

// customHits runs every regex manager as Renovate does (each matchString, globally, over each
// file the manager's patterns select) and returns what it extracts.
func customHits(t *testing.T, c config) [][]hit {
	t.Helper()
	files := trackedFiles(t)
	var all [][]hit
	for i, m := range c.CustomManagers {
		if m.CustomType != "regex" || m.DatasourceTemplate == "" {
			t.Fatalf("custom manager %d: type %q datasource %q", i, m.CustomType, m.DatasourceTemplate)
		}
		var hits []hit
		for _, f := range files {
			selected := false
			for _, p := range m.ManagerFilePatterns {
				selected = selected || filePattern(t, p).MatchString(f)
			}
			if !selected {
				continue
			}
			data, err := os.ReadFile(filepath.Join(root, f))
			if err != nil {
				continue // deleted in the work tree
			}
			for _, s := range m.MatchStrings {
				re := regexp.MustCompile(s)
				for _, sm := range re.FindAllStringSubmatch(string(data), -1) {
					h := hit{file: f}
					for gi, g := range re.SubexpNames() {
						switch g {
						case "depName":
							h.depName = sm[gi]
						case "currentValue":
							h.currentValue = sm[gi]
						}
					}
					hits = append(hits, h)
				}
			}
		}
		if len(hits) == 0 {
			t.Errorf("custom manager %d (%q) matches nothing: a pin was renamed or moved", i, m.MatchStrings)
		}
		all = append(all, hits)
	}
	return all
}

// TestImagePinsAreManaged: every place that spells a default image (the Go constant, the
// kubebuilder default, the generated CRD) is found by a regex manager, which reads the image
// and tag the constant says.
func TestImagePinsAreManaged(t *testing.T) {
	c := load(t)
	byManager := customHits(t, c)
	files := trackedFiles(t)
	for _, image := range []string{v1alpha1.DefaultRunnerImage, v1alpha1.DefaultDinDImage, v1alpha1.DefaultDinDRootlessImage} {
		repo, tag, ok := strings.Cut(image, ":")
		if !ok {
			t.Errorf("%s has no tag", image)
			continue
		}
		tag, _, _ = strings.Cut(tag, "@")
		// The image as a whole word: docker:28.5-dind is not inside docker:28.5-dind-rootless.
		spelled := regexp.MustCompile(regexp.QuoteMeta(image) + `(?:[^A-Za-z0-9._-]|$)`)
		found := map[string]bool{}
		for _, hits := range byManager {
			for _, h := range hits {
				if h.depName == repo && h.currentValue == tag {
					found[h.file] = true
				}
			}
		}
		for _, f := range files {
			if !strings.HasSuffix(f, ".go") && !strings.HasSuffix(f, ".yaml") {
				continue
			}
			data, err := os.ReadFile(filepath.Join(root, f))
			if err != nil || !spelled.Match(data) {
				continue
			}
			if !found[f] && !strings.HasSuffix(f, "_test.go") {
				t.Errorf("%s spells %s, but no regex manager of renovate.json reads it there", f, image)
			}
		}
		if len(found) == 0 {
			t.Errorf("no regex manager reads %s (depName %s, currentValue %s)", image, repo, tag)
		}
	}
}

// TestRunnerPinIsRecentEnough: the default runner is a release the ephemeral flow works with.
func TestRunnerPinIsRecentEnough(t *testing.T) {
	_, tag, _ := strings.Cut(v1alpha1.DefaultRunnerImage, ":")
	tag, _, _ = strings.Cut(tag, "@")
	var v [3]int
	parts := strings.Split(tag, ".")
	if len(parts) != 3 {
		t.Fatalf("runner tag %q is not X.Y.Z", tag)
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil {
			t.Fatalf("runner tag %q: %v", tag, err)
		}
		v[i] = n
	}
	if v[0] < 12 || (v[0] == 12 && (v[1] < 8 || (v[1] == 8 && v[2] < 2))) {
		t.Errorf("default runner %s is older than 12.8.2 (one-job --handle, --token-url, exit code 2)", tag)
	}
}

// TestTestBinaryPinsAreManaged: hack/build-test-binaries.sh reads the Kubernetes, etcd and kwok
// versions with awk from single-line requires in hack/*/go.mod; those files are the ones
// Renovate's gomod manager updates (its default pattern), and the awk still finds a version.
func TestTestBinaryPinsAreManaged(t *testing.T) {
	c := load(t)
	if len(c.EnabledManagers) > 0 && !slices.Contains(c.EnabledManagers, "gomod") {
		t.Fatal("renovate.json leaves out the gomod manager")
	}
	gomod := regexp.MustCompile(`(^|/)go\.mod$`) // Renovate's default managerFilePatterns for gomod
	script, err := os.ReadFile(filepath.Join(root, "hack/build-test-binaries.sh"))
	if err != nil {
		t.Fatal(err)
	}
	reads := regexp.MustCompile(`\$2 == "([^"]+)" \{print \$3\}' ([^\s)]+)`).FindAllStringSubmatch(string(script), -1)
	if len(reads) < 3 {
		t.Fatalf("hack/build-test-binaries.sh reads %d versions from go.mod files, want kubernetes, etcd and kwok", len(reads))
	}
	for _, r := range reads {
		mod, file := r[1], r[2]
		if !gomod.MatchString(file) {
			t.Errorf("%s is not a go.mod Renovate updates", file)
		}
		for _, ig := range c.IgnorePaths {
			if strings.HasPrefix(file, strings.TrimSuffix(ig, "**")) {
				t.Errorf("renovate.json ignores %s (%s)", file, ig)
			}
		}
		data, err := os.ReadFile(filepath.Join(root, file))
		if err != nil {
			t.Fatal(err)
		}
		re := regexp.MustCompile(`(?m)^require ` + regexp.QuoteMeta(mod) + ` v\d+\.\d+\.\d+\S*$`)
		if !re.Match(data) {
			t.Errorf("%s has no single-line `require %s vX.Y.Z`, which the script's awk reads", file, mod)
		}
	}
}

// TestGoMovesAsOne: the go directive and the Containerfile's golang image are one group, as
// the Containerfile test requires them to agree.
func TestGoMovesAsOne(t *testing.T) {
	c := load(t)
	for _, r := range c.PackageRules {
		if r.GroupName == "go" && slices.Contains(r.MatchPackageNames, "go") &&
			slices.Contains(r.MatchPackageNames, "docker.io/library/golang") &&
			slices.Contains(r.MatchDatasources, "golang-version") && slices.Contains(r.MatchDatasources, "docker") {
			return
		}
	}
	t.Error(`renovate.json has no "go" group holding both the go directive and docker.io/library/golang`)
}
