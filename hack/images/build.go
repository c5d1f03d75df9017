package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	module = "git.brooktrails.org/brooktrails/forgejo-runner-operator"

	annRefName     = "org.opencontainers.image.ref.name"
	annTitle       = "org.opencontainers.image.title"
	annDescription = "org.opencontainers.image.description"
	annVersion     = "org.opencontainers.image.version"
	annRevision    = "org.opencontainers.image.revision"
	annSource      = "org.opencontainers.image.source"
	annURL         = "org.opencontainers.image.url"
	annLicenses    = "org.opencontainers.image.licenses"
	annCreated     = "org.opencontainers.image.created"

	emptyConfigType = "application/vnd.oci.empty.v1+json"
)

// descriptions are the images' org.opencontainers.image.description; a binary without one gets
// a generic line, so a new cmd/ needs no change here to get an image.
var descriptions = map[string]string{
	"forgejo-runner-operator":    "Kubernetes operator that runs ephemeral Forgejo Actions runners",
	"forgejo-runner-provisioner": "VM host agent that creates ephemeral runner VMs for forgejo-runner-operator",
}

// Options says what to build. Everything that goes into an image is here (plus the Go toolchain
// and the sources), which is what makes two builds with the same Options byte-identical.
type Options struct {
	Root        string    // the module's root directory
	Binaries    []string  // names of main packages under cmd/
	Platforms   []string  // os/arch pairs
	Version     string    // injected into internal/version and used as the tag
	Commit      string    // injected into internal/version (short form, as `make build` does)
	Revision    string    // the full commit, for the revision label
	Created     time.Time // SOURCE_DATE_EPOCH: every timestamp in the images
	Source      string    // the repository URL, for labels and the SBOM
	License     string    // SPDX expression
	CABundle    string    // path of the PEM bundle copied to /etc/ssl/certs/ca-certificates.crt
	CACopyright string    // optional path of the bundle's licence file, copied beside it
	CAVersion   string    // optional Debian version of the bundle, for the SBOM
	Out         string    // output directory
	Log         func(format string, args ...any)
}

// Built is one binary's result.
type Built struct {
	Binary    string
	Layout    string             // OCI image layout directory
	Tarball   string             // the same layout as one tar
	Index     v1.Hash            // digest of the multi-arch index
	Images    map[string]v1.Hash // platform -> image manifest digest
	SBOMs     map[string]v1.Hash // platform -> SBOM artifact manifest digest
	Binaries  map[string]string  // platform -> path of the compiled binary
	LayerSize map[string][]int64 // platform -> compressed layer sizes, base first
	Labels    map[string]string  // what every image carries as labels and annotations
	Durations map[string]time.Duration
}

// Build compiles each binary for each platform and writes, per binary, an OCI layout holding a
// multi-arch index tagged with the version (annotation org.opencontainers.image.ref.name) and
// one SBOM referrer per platform image, plus the same layout as a tar.
func Build(ctx context.Context, o Options) ([]Built, error) {
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	caBundle, err := os.ReadFile(o.CABundle)
	if err != nil {
		return nil, fmt.Errorf("reading the CA bundle (Debian: apt-get install ca-certificates): %w", err)
	}
	var caCopyright []byte
	if o.CACopyright != "" {
		if caCopyright, err = os.ReadFile(o.CACopyright); err != nil {
			return nil, fmt.Errorf("reading the CA bundle's licence: %w", err)
		}
	}
	base, err := layerOf(baseFiles(caBundle, caCopyright), o.Created)
	if err != nil {
		return nil, fmt.Errorf("base layer: %w", err)
	}
	var out []Built
	for _, b := range o.Binaries {
		built, err := buildOne(ctx, o, b, base)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", b, err)
		}
		out = append(out, built)
	}
	return out, nil
}

func buildOne(ctx context.Context, o Options, binary string, base v1.Layer) (Built, error) {
	built := Built{
		Binary: binary, Images: map[string]v1.Hash{}, SBOMs: map[string]v1.Hash{},
		Binaries: map[string]string{}, LayerSize: map[string][]int64{}, Durations: map[string]time.Duration{},
	}
	desc := descriptions[binary]
	if desc == "" {
		desc = binary + ", part of forgejo-runner-operator"
	}
	built.Labels = map[string]string{
		annTitle: binary, annDescription: desc, annVersion: o.Version, annRevision: o.Revision,
		annSource: o.Source, annURL: o.Source, annLicenses: o.License,
		annCreated: o.Created.UTC().Format(time.RFC3339),
	}
	var adds []mutate.IndexAddendum
	var sboms []mutate.IndexAddendum
	for _, platform := range o.Platforms {
		osName, arch, ok := strings.Cut(platform, "/")
		if !ok {
			return built, fmt.Errorf("platform %q is not os/arch", platform)
		}
		start := time.Now()
		binPath := filepath.Join(o.Out, "build", osName+"-"+arch, binary)
		if err := compile(ctx, o, binary, osName, arch, binPath); err != nil {
			return built, err
		}
		built.Durations["compile "+platform] = time.Since(start)
		built.Binaries[platform] = binPath
		binData, err := os.ReadFile(binPath)
		if err != nil {
			return built, fmt.Errorf("reading %s: %w", binPath, err)
		}
		img, err := assemble(o, binary, osName, arch, base, binData, built.Labels)
		if err != nil {
			return built, err
		}
		layers, err := img.Layers()
		if err != nil {
			return built, fmt.Errorf("listing layers: %w", err)
		}
		for _, l := range layers {
			size, err := l.Size()
			if err != nil {
				return built, fmt.Errorf("layer size: %w", err)
			}
			built.LayerSize[platform] = append(built.LayerSize[platform], size)
		}
		imgDesc, err := partial.Descriptor(img)
		if err != nil {
			return built, fmt.Errorf("describing the %s image: %w", platform, err)
		}
		built.Images[platform] = imgDesc.Digest
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: osName, Architecture: arch},
		}})

		bi, err := buildinfo.Read(bytes.NewReader(binData))
		if err != nil {
			return built, fmt.Errorf("reading the build info of %s: %w", binPath, err)
		}
		sbom, err := buildSBOM(sbomInput{
			binary: binary, version: o.Version, platform: platform, source: o.Source, license: o.License,
			created: o.Created, binData: binData, buildInfo: bi, caVersion: o.CAVersion,
		})
		if err != nil {
			return built, err
		}
		art, err := newArtifact(sbomMediaType, sbom, binary+"-"+osName+"-"+arch+".spdx.json",
			v1.Descriptor{MediaType: imgDesc.MediaType, Digest: imgDesc.Digest, Size: imgDesc.Size},
			map[string]string{annCreated: built.Labels[annCreated]})
		if err != nil {
			return built, err
		}
		artDigest, err := art.Digest()
		if err != nil {
			return built, fmt.Errorf("SBOM digest: %w", err)
		}
		built.SBOMs[platform] = artDigest
		sboms = append(sboms, mutate.IndexAddendum{Add: art, Descriptor: v1.Descriptor{
			Annotations: map[string]string{annTitle: "SBOM of " + binary + " " + platform},
		}})
	}

	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	idx = mutate.AppendManifests(idx, adds...)
	idx, ok := mutate.Annotations(idx, built.Labels).(v1.ImageIndex)
	if !ok {
		return built, fmt.Errorf("annotating the index")
	}
	digest, err := idx.Digest()
	if err != nil {
		return built, fmt.Errorf("index digest: %w", err)
	}
	built.Index = digest

	// The layout's own index.json lists the tagged index and, untagged, the SBOM referrers,
	// as `oras` and other OCI 1.1 tools lay them out.
	top := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	top = mutate.AppendManifests(top, append([]mutate.IndexAddendum{{Add: idx, Descriptor: v1.Descriptor{
		Annotations: map[string]string{annRefName: o.Version},
	}}}, sboms...)...)
	built.Layout = filepath.Join(o.Out, binary)
	if err := os.RemoveAll(built.Layout); err != nil {
		return built, fmt.Errorf("clearing %s: %w", built.Layout, err)
	}
	if _, err := layout.Write(built.Layout, top); err != nil {
		return built, fmt.Errorf("writing layout %s: %w", built.Layout, err)
	}
	tarData, err := tarDir(os.DirFS(built.Layout), o.Created)
	if err != nil {
		return built, err
	}
	built.Tarball = filepath.Join(o.Out, binary+".oci.tar")
	if err := os.WriteFile(built.Tarball, tarData, 0o644); err != nil {
		return built, fmt.Errorf("writing %s: %w", built.Tarball, err)
	}
	return built, nil
}

// compile cross-compiles one binary the reproducible way: no cgo, no paths of this machine, no
// VCS stamp (the version comes in through -X like `make build`), and an environment that does
// not inherit GOFLAGS or GOAMD64-style settings from the caller.
func compile(ctx context.Context, o Options, binary, osName, arch, out string) error {
	ldflags := fmt.Sprintf("-s -w -X %s/internal/version.Version=%s -X %s/internal/version.Commit=%s",
		module, o.Version, module, o.Commit)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags,
		"-o", out, "./cmd/"+binary)
	cmd.Dir = o.Root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+osName, "GOARCH="+arch, "GOFLAGS=",
		"GOAMD64=v1", "GOARM64=v8.0", "GOEXPERIMENT=")
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	o.Log("compiling %s for %s/%s", binary, osName, arch)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s for %s/%s: %w", binary, osName, arch, err)
	}
	return nil
}

func assemble(o Options, binary, osName, arch string, base v1.Layer, binData []byte, labels map[string]string) (v1.Image, error) {
	binLayer, err := layerOf(binaryFiles(binary, binData), o.Created)
	if err != nil {
		return nil, fmt.Errorf("binary layer: %w", err)
	}
	created := v1.Time{Time: o.Created.UTC()}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.Append(img,
		mutate.Addendum{Layer: base, MediaType: types.OCILayer, History: v1.History{
			Created: created, CreatedBy: "hack/images: base (passwd, group, nsswitch.conf, CA bundle, /home/nonroot, /tmp)",
		}},
		mutate.Addendum{Layer: binLayer, MediaType: types.OCILayer, History: v1.History{
			Created: created, CreatedBy: "hack/images: " + entrypoint(binary),
		}})
	if err != nil {
		return nil, fmt.Errorf("appending layers: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Created = osName, arch, created
	cf.Config = v1.Config{
		User:       imageUser,
		Entrypoint: []string{entrypoint(binary)},
		WorkingDir: nonrootHome,
		Env: []string{
			"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"SSL_CERT_FILE=" + caPath,
		},
		Labels: labels,
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("setting config: %w", err)
	}
	annotated, ok := mutate.Annotations(img, labels).(v1.Image)
	if !ok {
		return nil, fmt.Errorf("annotating the image")
	}
	return annotated, nil
}

func layerOf(files []file, mtime time.Time) (v1.Layer, error) {
	data, err := tarFiles(files, mtime)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressionLevel(gzip.BestCompression))
	if err != nil {
		return nil, fmt.Errorf("compressing layer: %w", err)
	}
	return layer, nil
}

// artifact is an OCI 1.1 artifact manifest (empty config, one blob, a subject), the shape
// registries serve through the referrers API. go-containerregistry writes it to a layout or a
// registry like any image.
type artifact struct {
	manifest []byte
	blob     []byte
	blobType types.MediaType
}

var emptyConfig = []byte("{}")

func sha(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

func newArtifact(mediaType string, blob []byte, title string, subject v1.Descriptor, anns map[string]string) (v1.Image, error) {
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  mediaType,
		Config: v1.Descriptor{MediaType: emptyConfigType, Size: int64(len(emptyConfig)),
			Digest: sha(emptyConfig), Data: emptyConfig},
		Layers: []v1.Descriptor{{MediaType: types.MediaType(mediaType), Size: int64(len(blob)), Digest: sha(blob),
			Annotations: map[string]string{annTitle: title}}},
		Subject:     &subject,
		Annotations: anns,
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encoding artifact manifest: %w", err)
	}
	img, err := partial.CompressedToImage(&artifact{manifest: raw, blob: blob, blobType: types.MediaType(mediaType)})
	if err != nil {
		return nil, fmt.Errorf("artifact image: %w", err)
	}
	return img, nil
}

func (a *artifact) RawConfigFile() ([]byte, error)      { return emptyConfig, nil }
func (a *artifact) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }
func (a *artifact) RawManifest() ([]byte, error)        { return a.manifest, nil }

func (a *artifact) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	switch h {
	case sha(a.blob):
		return static.NewLayer(a.blob, a.blobType), nil
	case sha(emptyConfig):
		return static.NewLayer(emptyConfig, emptyConfigType), nil
	}
	return nil, fmt.Errorf("artifact has no blob %s", h)
}
