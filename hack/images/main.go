// Command images builds the project's container images without a container engine, and pushes
// them. `make images` and `make push` run it; docs/images.md says what the images hold.
//
//	go run ./hack/images build -binaries forgejo-runner-operator [-out bin/images] [-platforms linux/amd64,linux/arm64]
//	go run ./hack/images push -repo registry.example.com/brooktrails -binaries forgejo-runner-operator
//
// Each binary is cross-compiled with CGO_ENABLED=0 and laid on a distroless-static-like root
// assembled here (no base image is pulled), as a multi-arch OCI index in an OCI layout under
// -out, with an SPDX SBOM per platform attached as an OCI referrer. The same sources, Go
// toolchain, CA bundle and SOURCE_DATE_EPOCH give the same digests.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
)

const (
	defaultSource   = "https://" + module
	defaultLicense  = "Apache-2.0"
	debianCABundle  = "/etc/ssl/certs/ca-certificates.crt"
	debianCALicence = "/usr/share/doc/ca-certificates/copyright"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: images build|push [flags]")
	}
	switch args[0] {
	case "build":
		return runBuild(ctx, args[1:])
	case "push":
		return runPush(ctx, args[1:])
	}
	return fmt.Errorf("unknown command %q: want build or push", args[0])
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		out = append(out, strings.TrimSpace(f))
	}
	return out
}

func runBuild(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	o := Options{}
	var binaries, platforms, epoch string
	fs.StringVar(&o.Root, "root", ".", "The module's root directory.")
	fs.StringVar(&binaries, "binaries", "forgejo-runner-operator", "Main packages under cmd/ to build an image of, comma-separated.")
	fs.StringVar(&platforms, "platforms", "linux/amd64,linux/arm64", "Platforms of the multi-arch index.")
	fs.StringVar(&o.Version, "version", "", "Version stamped into the binary and used as the tag (default: git describe --tags --always --dirty).")
	fs.StringVar(&o.Commit, "commit", "", "Commit stamped into the binary (default: git rev-parse --short HEAD).")
	fs.StringVar(&o.Revision, "revision", "", "Full commit for the revision label (default: git rev-parse HEAD).")
	fs.StringVar(&epoch, "source-date-epoch", os.Getenv("SOURCE_DATE_EPOCH"), "Unix time of every timestamp in the image (default: $SOURCE_DATE_EPOCH, else the commit time).")
	fs.StringVar(&o.Source, "source", defaultSource, "Repository URL for labels and the SBOM.")
	fs.StringVar(&o.License, "license", defaultLicense, "SPDX licence expression of the project.")
	fs.StringVar(&o.CABundle, "ca-bundle", debianCABundle, "PEM bundle copied to "+caPath+".")
	fs.StringVar(&o.CACopyright, "ca-copyright", "", "Licence file of the CA bundle (default: Debian's, when it exists).")
	fs.StringVar(&o.CAVersion, "ca-version", "", "Version of the CA bundle for the SBOM (default: the Debian package's, via dpkg-query).")
	fs.StringVar(&o.Out, "out", "bin/images", "Output directory.")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("build flags: %w", err)
	}
	o.Binaries, o.Platforms = splitList(binaries), splitList(platforms)
	if err := fillFromGit(&o, epoch); err != nil {
		return err
	}
	if o.CACopyright == "" && o.CABundle == debianCABundle {
		if _, err := os.Stat(debianCALicence); err == nil {
			o.CACopyright = debianCALicence
		}
	}
	if o.CAVersion == "" && o.CABundle == debianCABundle {
		if v, err := exec.CommandContext(ctx, "dpkg-query", "-W", "-f=${Version}", "ca-certificates").Output(); err == nil {
			o.CAVersion = strings.TrimSpace(string(v))
		}
	}
	o.Log = func(format string, args ...any) { fmt.Fprintf(os.Stderr, "images: "+format+"\n", args...) }
	start := time.Now()
	built, err := Build(ctx, o)
	if err != nil {
		return err
	}
	for _, b := range built {
		fmt.Printf("%s %s\n  index    %s\n  layout   %s\n  tarball  %s (%s)\n",
			b.Binary, o.Version, b.Index, b.Layout, b.Tarball, fileSize(b.Tarball))
		for _, p := range o.Platforms {
			fmt.Printf("  %-13s image %s layers %v, SBOM %s\n", p, b.Images[p], b.LayerSize[p], b.SBOMs[p])
		}
	}
	fmt.Printf("built in %s (SOURCE_DATE_EPOCH=%d)\n", time.Since(start).Round(time.Second), o.Created.Unix())
	return nil
}

// fillFromGit gives the flags left empty the values `make build` uses, so an image and a
// locally built binary report the same version.
func fillFromGit(o *Options, epoch string) error {
	git := func(args ...string) (string, error) {
		cmd := exec.Command("git", args...)
		cmd.Dir = o.Root
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(out)), nil
	}
	var err error
	if o.Version == "" {
		if o.Version, err = git("describe", "--tags", "--always", "--dirty"); err != nil {
			return err
		}
	}
	if o.Commit == "" {
		if o.Commit, err = git("rev-parse", "--short", "HEAD"); err != nil {
			return err
		}
	}
	if o.Revision == "" {
		if o.Revision, err = git("rev-parse", "HEAD"); err != nil {
			return err
		}
	}
	if epoch == "" {
		if epoch, err = git("log", "-1", "--format=%ct"); err != nil {
			return err
		}
	}
	secs, err := strconv.ParseInt(epoch, 10, 64)
	if err != nil {
		return fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", epoch, err)
	}
	o.Created = time.Unix(secs, 0).UTC()
	if _, err := name.NewTag("example.invalid/x:" + o.Version); err != nil {
		return fmt.Errorf("version %q cannot be an image tag: %w", o.Version, err)
	}
	return nil
}

func fileSize(p string) string {
	st, err := os.Stat(p)
	if err != nil {
		return "?"
	}
	return fmt.Sprintf("%.1f MiB", float64(st.Size())/(1<<20))
}

func runPush(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("push", flag.ContinueOnError)
	var repo, binaries, out string
	var insecure bool
	fs.StringVar(&repo, "repo", "", "Registry and path the images go under: <repo>/<binary>:<version>.")
	fs.StringVar(&binaries, "binaries", "forgejo-runner-operator", "Images to push, comma-separated.")
	fs.StringVar(&out, "out", "bin/images", "Directory `build` wrote to.")
	fs.BoolVar(&insecure, "insecure", false, "Allow a registry over plain HTTP.")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("push flags: %w", err)
	}
	if repo == "" {
		return errors.New("push needs -repo (make push IMAGE_REPO=registry.example.com/brooktrails)")
	}
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	for _, b := range splitList(binaries) {
		pushed, err := Push(ctx, out+"/"+b, strings.TrimSuffix(repo, "/")+"/"+b, opts...)
		if err != nil {
			return err
		}
		fmt.Printf("pushed %s@%s (%d SBOM referrers)\n", pushed.Ref, pushed.Index, len(pushed.Referrer))
	}
	return nil
}
