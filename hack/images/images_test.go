// The race detector makes assembling and reading back two platforms' layers (gzip, SHA-256
// over tens of megabytes) take over half an hour on two cores, and these tests share no memory
// between goroutines worth checking; `make test` runs this package once more without -race.
//
//go:build !race

package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The images are built once per test binary (two cross-compiles) and shared by the tests that
// only read them; the reproducibility test builds a second time.
var (
	buildOnce  sync.Once
	buildDir   string
	builtImage Built
	buildErr   error
)

const (
	testBinary  = "forgejo-runner-operator"
	testVersion = "v9.8.7-test.1"
	testCommit  = "abc1234"
)

var testCreated = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "images-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buildDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

func testOptions(out string) Options {
	return Options{
		Root:        "../..",
		Binaries:    []string{testBinary},
		Platforms:   []string{"linux/amd64", "linux/arm64"},
		Version:     testVersion,
		Commit:      testCommit,
		Revision:    testCommit + "0000000000000000000000000000000000",
		Created:     testCreated,
		Source:      defaultSource,
		License:     defaultLicense,
		CABundle:    debianCABundle,
		CACopyright: "",
		CAVersion:   "20250419",
		Out:         out,
	}
}

func built(t *testing.T) Built {
	t.Helper()
	buildOnce.Do(func() {
		if _, err := os.Stat(debianCABundle); err != nil {
			buildErr = fmt.Errorf("the images carry Debian's CA bundle (apt-get install ca-certificates): %w", err)
			return
		}
		start := time.Now()
		var bs []Built
		bs, buildErr = Build(context.Background(), testOptions(filepath.Join(buildDir, "a")))
		if buildErr == nil {
			builtImage = bs[0]
			fmt.Fprintf(os.Stderr, "images test: built %s in %s\n", builtImage.Index, time.Since(start).Round(time.Second))
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtImage
}

// openLayout reads the layout's index.json: one tagged index, then the SBOM referrers.
func openLayout(t *testing.T, dir string) (v1.ImageIndex, *v1.IndexManifest) {
	t.Helper()
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	top, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	return top, im
}

func platformImages(t *testing.T, dir string) map[string]v1.Image {
	t.Helper()
	top, im := openLayout(t, dir)
	if len(im.Manifests) == 0 || im.Manifests[0].MediaType != types.OCIImageIndex {
		t.Fatalf("index.json does not start with an image index: %+v", im.Manifests)
	}
	if got := im.Manifests[0].Annotations[annRefName]; got != testVersion {
		t.Fatalf("tag (ref.name) %q, want %q", got, testVersion)
	}
	idx, err := top.ImageIndex(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	idxm, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]v1.Image{}
	for _, d := range idxm.Manifests {
		if d.Platform == nil || d.MediaType != types.OCIManifestSchema1 {
			t.Fatalf("index entry %+v: want an OCI image manifest with a platform", d)
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		out[d.Platform.String()] = img
	}
	return out
}

func TestImageIndexAndConfig(t *testing.T) {
	b := built(t)
	imgs := platformImages(t, b.Layout)
	if len(imgs) != 2 || imgs["linux/amd64"] == nil || imgs["linux/arm64"] == nil {
		t.Fatalf("platforms %v, want linux/amd64 and linux/arm64", keys(imgs))
	}
	wantLabels := map[string]string{
		annVersion: testVersion, annRevision: testOptions("").Revision, annSource: defaultSource,
		annLicenses: "Apache-2.0", annCreated: "2026-01-02T03:04:05Z", annTitle: testBinary,
	}
	for platform, img := range imgs {
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.OS+"/"+cf.Architecture != platform {
			t.Errorf("%s: config says %s/%s", platform, cf.OS, cf.Architecture)
		}
		if cf.Config.User != "65532:65532" {
			t.Errorf("%s: user %q, want 65532:65532", platform, cf.Config.User)
		}
		if want := []string{"/usr/local/bin/" + testBinary}; !slices.Equal(cf.Config.Entrypoint, want) {
			t.Errorf("%s: entrypoint %q, want %q", platform, cf.Config.Entrypoint, want)
		}
		if len(cf.Config.Cmd) != 0 {
			t.Errorf("%s: cmd %q, want none (arguments come from the Deployment)", platform, cf.Config.Cmd)
		}
		if !cf.Created.Equal(testCreated) {
			t.Errorf("%s: created %s, want the commit time %s", platform, cf.Created.Time, testCreated)
		}
		m, err := img.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range wantLabels {
			if cf.Config.Labels[k] != v {
				t.Errorf("%s: label %s=%q, want %q", platform, k, cf.Config.Labels[k], v)
			}
			if m.Annotations[k] != v {
				t.Errorf("%s: annotation %s=%q, want %q", platform, k, m.Annotations[k], v)
			}
		}
		if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON {
			t.Errorf("%s: manifest %s with config %s, want OCI", platform, m.MediaType, m.Config.MediaType)
		}
		if len(m.Layers) != 2 || len(cf.History) != 2 {
			t.Fatalf("%s: %d layers, %d history entries, want 2 (base, binary)", platform, len(m.Layers), len(cf.History))
		}
		for i, l := range m.Layers {
			if l.MediaType != types.OCILayer {
				t.Errorf("%s: layer %d is %s", platform, i, l.MediaType)
			}
		}
		for _, h := range cf.History {
			if !h.Created.Equal(testCreated) {
				t.Errorf("%s: history %q created %s", platform, h.CreatedBy, h.Created.Time)
			}
		}
	}
	// The base layer holds nothing platform-specific, so both images share it.
	la, _ := imgs["linux/amd64"].Manifest()
	lb, _ := imgs["linux/arm64"].Manifest()
	if la.Layers[0].Digest != lb.Layers[0].Digest {
		t.Errorf("base layers differ between platforms: %s, %s", la.Layers[0].Digest, lb.Layers[0].Digest)
	}
	if la.Layers[1].Digest == lb.Layers[1].Digest {
		t.Error("the binary layers of amd64 and arm64 are identical")
	}
}

type entry struct {
	hdr  *tar.Header
	data []byte
}

func extract(t *testing.T, img v1.Image) map[string]entry {
	t.Helper()
	rc := mutate.Extract(img)
	defer func() { _ = rc.Close() }()
	tr := tar.NewReader(rc)
	out := map[string]entry{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[hdr.Name] = entry{hdr: hdr, data: data}
	}
}

func TestImageFilesystem(t *testing.T) {
	b := built(t)
	img := platformImages(t, b.Layout)["linux/arm64"]
	files := extract(t, img)
	want := []string{ // as mutate.Extract names them: directories without their "/"
		"etc", "etc/group", "etc/nsswitch.conf", "etc/passwd", "etc/ssl", "etc/ssl/certs",
		"etc/ssl/certs/ca-certificates.crt", "home", "home/nonroot", "root", "tmp",
		"usr", "usr/local", "usr/local/bin", "usr/local/bin/" + testBinary,
	}
	if got := keys(files); !slices.Equal(got, want) {
		t.Fatalf("files\n got %q\nwant %q", got, want)
	}
	if !strings.Contains(string(files["etc/passwd"].data), "nonroot:x:65532:65532:") {
		t.Errorf("/etc/passwd has no nonroot 65532:\n%s", files["etc/passwd"].data)
	}
	bundle, err := os.ReadFile(debianCABundle)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(files["etc/ssl/certs/ca-certificates.crt"].data, bundle) {
		t.Error("the image's CA bundle is not the machine's")
	}
	bin := files["usr/local/bin/"+testBinary].hdr
	if bin.Mode != 0o755 || bin.Uid != 0 {
		t.Errorf("binary mode %o uid %d, want 755 owned by root (not writable by the user it runs as)", bin.Mode, bin.Uid)
	}
	if home := files["home/nonroot"].hdr; home.Uid != nonrootUID || home.Gid != nonrootUID {
		t.Errorf("/home/nonroot owned by %d:%d", home.Uid, home.Gid)
	}
	if tmp := files["tmp"].hdr; tmp.Mode != 0o1777 {
		t.Errorf("/tmp mode %o, want 1777", tmp.Mode)
	}
	for n, e := range files {
		if !e.hdr.ModTime.Equal(testCreated) || e.hdr.Uname != "" || e.hdr.Gname != "" {
			t.Errorf("%s: mtime %s, owner names %q/%q: want SOURCE_DATE_EPOCH and numeric owners only", n, e.hdr.ModTime, e.hdr.Uname, e.hdr.Gname)
		}
	}
}

// TestImageBinaryVersion runs the binary taken out of the image for this machine's
// architecture: it is the version the image is tagged with.
func TestImageBinaryVersion(t *testing.T) {
	b := built(t)
	platform := "linux/" + runtime.GOARCH
	img := platformImages(t, b.Layout)[platform]
	if img == nil || runtime.GOOS != "linux" {
		t.Skipf("no image for %s/%s to run", runtime.GOOS, runtime.GOARCH)
	}
	e := extract(t, img)["usr/local/bin/"+testBinary]
	bin := filepath.Join(t.TempDir(), testBinary)
	if err := os.WriteFile(bin, e.data, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s --version: %v\n%s", bin, err, out)
	}
	want := fmt.Sprintf("%s %s (commit %s, ", testBinary, testVersion, testCommit)
	if !strings.HasPrefix(string(out), want) || !strings.Contains(string(out), platform) {
		t.Errorf("--version printed %q, want %q… %s", out, want, platform)
	}
}

func TestImageSBOMReferrers(t *testing.T) {
	b := built(t)
	top, im := openLayout(t, b.Layout)
	goMod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	crVersion := regexp.MustCompile(`(?m)^\s*sigs\.k8s\.io/controller-runtime (v\S+)`).FindSubmatch(goMod)
	if crVersion == nil {
		t.Fatal("go.mod requires no controller-runtime")
	}
	seen := map[string]bool{}
	for _, d := range im.Manifests[1:] {
		if d.ArtifactType != sbomMediaType {
			t.Errorf("index.json entry %s has artifactType %q", d.Digest, d.ArtifactType)
			continue
		}
		art, err := top.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		m, err := art.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject == nil {
			t.Fatalf("SBOM %s has no subject", d.Digest)
		}
		var platform string
		for p, dg := range b.Images {
			if dg == m.Subject.Digest {
				platform = p
			}
		}
		if platform == "" {
			t.Fatalf("SBOM %s refers to %s, which is none of the images %v", d.Digest, m.Subject.Digest, b.Images)
		}
		seen[platform] = true
		layers, err := art.Layers()
		if err != nil || len(layers) != 1 {
			t.Fatalf("SBOM layers %d, %v", len(layers), err)
		}
		rc, err := layers[0].Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		raw, err := io.ReadAll(rc)
		_ = rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		var doc spdxDocument
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatalf("SBOM is not JSON: %v", err)
		}
		if doc.SPDXVersion != "SPDX-2.3" || doc.CreationInfo.Created != "2026-01-02T03:04:05Z" {
			t.Errorf("SBOM header %s %s", doc.SPDXVersion, doc.CreationInfo.Created)
		}
		byName := map[string]spdxPackage{}
		for _, p := range doc.Packages {
			byName[p.Name] = p
		}
		if got := byName["sigs.k8s.io/controller-runtime"].VersionInfo; got != string(crVersion[1]) {
			t.Errorf("%s SBOM: controller-runtime %q, go.mod says %s", platform, got, crVersion[1])
		}
		if got := byName[module]; got.VersionInfo != testVersion || !strings.Contains(got.Comment, "GOARCH="+strings.TrimPrefix(platform, "linux/")) {
			t.Errorf("%s SBOM: main package %+v", platform, got)
		}
		if got := byName["stdlib"].VersionInfo; got != runtime.Version() {
			t.Errorf("%s SBOM: stdlib %q, want %s", platform, got, runtime.Version())
		}
	}
	if len(seen) != 2 {
		t.Errorf("SBOMs for %v, want both platforms", seen)
	}
}

// TestImageReproducible builds everything again, compile included, into another directory:
// the digests and the tarball are byte for byte the same.
func TestImageReproducible(t *testing.T) {
	a := built(t)
	bs, err := Build(context.Background(), testOptions(filepath.Join(buildDir, "b")))
	if err != nil {
		t.Fatal(err)
	}
	b := bs[0]
	if a.Index != b.Index {
		t.Errorf("index digest %s, then %s", a.Index, b.Index)
	}
	for p := range a.Images {
		if a.Images[p] != b.Images[p] || a.SBOMs[p] != b.SBOMs[p] {
			t.Errorf("%s: image %s/%s, SBOM %s/%s", p, a.Images[p], b.Images[p], a.SBOMs[p], b.SBOMs[p])
		}
	}
	if sumFile(t, a.Tarball) != sumFile(t, b.Tarball) {
		t.Error("the two tarballs differ")
	}
}

func sumFile(t *testing.T, p string) [32]byte {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(data)
}

// TestImageTarball: the tarball is the layout, in a fixed order and with fixed times.
func TestImageTarball(t *testing.T) {
	b := built(t)
	f, err := os.Open(b.Tarball)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	tr := tar.NewReader(f)
	var names []string
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !hdr.ModTime.Equal(testCreated) {
			t.Errorf("%s: mtime %s", hdr.Name, hdr.ModTime)
		}
		names = append(names, hdr.Name)
	}
	if !slices.IsSorted(names) {
		t.Errorf("entries not sorted: %q", names)
	}
	for _, want := range []string{"oci-layout", "index.json", "blobs/sha256/" + b.Index.Hex} {
		if !slices.Contains(names, want) {
			t.Errorf("tarball lacks %s: %q", want, names)
		}
	}
}

// TestPush pushes the layout to an in-process registry, with and without the OCI 1.1
// referrers API (without it, the SBOMs are found through the referrers tag scheme), and reads
// everything back.
func TestPush(t *testing.T) {
	b := built(t)
	for _, referrers := range []bool{true, false} {
		t.Run(fmt.Sprintf("referrersAPI=%v", referrers), func(t *testing.T) {
			var opts []registry.Option
			if referrers {
				opts = append(opts, registry.WithReferrersSupport(true))
			}
			srv := httptest.NewServer(registry.New(opts...))
			defer srv.Close()
			u, err := url.Parse(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			repo := u.Host + "/brooktrails/" + testBinary
			for range 2 { // a second push of the same layout is a no-op that succeeds
				pushed, err := Push(context.Background(), b.Layout, repo)
				if err != nil {
					t.Fatal(err)
				}
				if pushed.Ref.String() != repo+":"+testVersion || pushed.Index != b.Index || len(pushed.Referrer) != 2 {
					t.Fatalf("pushed %s@%s with %d referrers", pushed.Ref, pushed.Index, len(pushed.Referrer))
				}
			}
			ref, err := name.ParseReference(repo + ":" + testVersion)
			if err != nil {
				t.Fatal(err)
			}
			idx, err := remote.Index(ref)
			if err != nil {
				t.Fatal(err)
			}
			if d, _ := idx.Digest(); d != b.Index {
				t.Errorf("registry serves %s for the tag, built %s", d, b.Index)
			}
			for platform, imgDigest := range b.Images {
				r, err := name.NewDigest(repo + "@" + imgDigest.String())
				if err != nil {
					t.Fatal(err)
				}
				refs, err := remote.Referrers(r)
				if err != nil {
					t.Fatal(err)
				}
				rm, err := refs.IndexManifest()
				if err != nil {
					t.Fatal(err)
				}
				if len(rm.Manifests) != 1 || rm.Manifests[0].Digest != b.SBOMs[platform] {
					t.Fatalf("%s: referrers %+v, want the SBOM %s", platform, rm.Manifests, b.SBOMs[platform])
				}
				// The manifest itself, not the listing: go-containerregistry's test registry
				// lists a referrer's config media type as its artifactType.
				art, err := remote.Image(r.Context().Digest(b.SBOMs[platform].String()))
				if err != nil {
					t.Fatal(err)
				}
				m, err := art.Manifest()
				if err != nil {
					t.Fatal(err)
				}
				if m.ArtifactType != sbomMediaType {
					t.Errorf("%s: the registry's SBOM manifest has artifactType %q", platform, m.ArtifactType)
				}
			}
		})
	}
}

func TestTarFilesRejectsDuplicates(t *testing.T) {
	if _, err := tarFiles([]file{{name: "a", mode: 0o644}, {name: "a", mode: 0o644}}, testCreated); err == nil {
		t.Fatal("a layer with one path twice was written")
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// The provisioner, the project's second binary, gets an image of the same shape: its own
// entrypoint, the same user, and the version it is tagged with. One platform is enough here:
// what is per platform is tested on the operator's image.
func TestProvisionerImage(t *testing.T) {
	if _, err := os.Stat(debianCABundle); err != nil {
		t.Fatalf("the images carry Debian's CA bundle (apt-get install ca-certificates): %v", err)
	}
	const binary = "forgejo-runner-provisioner"
	platform := "linux/" + runtime.GOARCH
	opts := testOptions(filepath.Join(t.TempDir(), "provisioner"))
	opts.Binaries, opts.Platforms = []string{binary}, []string{platform}
	bs, err := Build(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) != 1 || bs[0].Binary != binary {
		t.Fatalf("built %+v, want the provisioner's image", bs)
	}
	img := platformImages(t, bs[0].Layout)[platform]
	if img == nil {
		t.Fatalf("no %s image", platform)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != "65532:65532" || !slices.Equal(cf.Config.Entrypoint, []string{"/usr/local/bin/" + binary}) {
		t.Errorf("user %q, entrypoint %q", cf.Config.User, cf.Config.Entrypoint)
	}
	if cf.Config.Labels[annTitle] != binary {
		t.Errorf("title label %q, want %s", cf.Config.Labels[annTitle], binary)
	}
	e := extract(t, img)["usr/local/bin/"+binary]
	bin := filepath.Join(t.TempDir(), binary)
	if err := os.WriteFile(bin, e.data, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s -version: %v\n%s", bin, err, out)
	}
	if want := fmt.Sprintf("%s %s (commit %s, ", binary, testVersion, testCommit); !strings.HasPrefix(string(out), want) {
		t.Errorf("%s -version printed %q, want it to start with %q", binary, out, want)
	}
}
