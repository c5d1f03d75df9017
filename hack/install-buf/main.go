// Command install-buf installs the pinned buf CLI into bin/ and prints its path. `make
// proto-lint` runs it before buf lint and buf breaking check the provisioner's API (buf.yaml).
//
//	go run ./hack/install-buf [-bin bin] [-registry https://registry.npmjs.org]
//
// Buf publishes its official prebuilt binaries as npm packages, one per platform
// (@bufbuild/buf-linux-x64, …); the npm registry is reachable where the GitHub releases are not,
// and a download takes seconds where building buf from the Go module proxy takes many minutes.
// Only the tarball is fetched, over plain HTTPS with the standard library: no node, npm, curl or
// tar is needed. Its sha512 must equal the npm integrity pinned below, or nothing is installed.
// When bin/buf already reports the pinned version the command only prints the path.
//
// To move to another buf release, set version and replace each platform's integrity with the
// dist.integrity the registry lists for it (curl -s https://registry.npmjs.org/@bufbuild/buf-linux-x64).
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

// version is the buf release installed.
const version = "1.75.0"

// pin is buf's npm package for a platform and the npm integrity of its tarball (sha512 of the
// .tgz, base64), as the registry lists it under versions[version].dist.integrity.
type pin struct{ pkg, integrity string }

// pins are keyed by GOOS/GOARCH. npm spells linux/arm64 aarch64.
var pins = map[string]pin{
	"linux/amd64":  {"buf-linux-x64", "sha512-YGGJAx0lpMCE7aMWjNOJcfoEaG/e+iYHnTC4SZ0P5eS4IffMryA9Z4/bb1m1wNXAEJ8ATFMEZOAk/5x9VE47ig=="},
	"linux/arm64":  {"buf-linux-aarch64", "sha512-eX+XyokzJDqsNIFo8b1O3DBvbnksOozPJX4QVsNn61JqSUtWspyTNeYqwg8lRDancML+bDqZEDFPABjAsVCQGQ=="},
	"darwin/amd64": {"buf-darwin-x64", "sha512-U2W+MRE9jJ7Am7x02ZWt87U5lfPrjKMdB1aZDslsuyOHo+fEUvZolupmhoW30v6syNAWBOfkoi0k5TLc2FNGqQ=="},
	"darwin/arm64": {"buf-darwin-arm64", "sha512-QiQYSmtVUcKy9DK/d+zJ3+D4iUQmmiDQ3i8/yBr8cf7Nr28lqKMAIKznJE/uGRsjr90fHaUQO+Xsedec0ArN5g=="},
}

// maxTarball bounds the download (the linux-x64 tarball is 33 MB).
const maxTarball = 256 << 20

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	path, err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "install-buf:", err)
		os.Exit(1)
	}
	fmt.Println(path)
}

func run(ctx context.Context, args []string) (string, error) {
	fs := flag.NewFlagSet("install-buf", flag.ContinueOnError)
	bin := fs.String("bin", "bin", "Directory to install buf into.")
	registry := fs.String("registry", "https://registry.npmjs.org", "npm registry to download from (the integrity check still applies).")
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	p, err := pinFor(runtime.GOOS + "/" + runtime.GOARCH)
	if err != nil {
		return "", err
	}
	dst, err := filepath.Abs(filepath.Join(*bin, "buf"))
	if err != nil {
		return "", err
	}
	if installedVersion(ctx, dst) == version {
		fmt.Fprintf(os.Stderr, "install-buf: buf %s already at %s\n", version, dst)
		return dst, nil
	}
	url := fmt.Sprintf("%s/@bufbuild/%s/-/%s-%s.tgz", strings.TrimSuffix(*registry, "/"), p.pkg, p.pkg, version)
	start := time.Now()
	if err := install(ctx, url, p.integrity, dst); err != nil {
		return "", err
	}
	fmt.Fprintf(os.Stderr, "install-buf: installed buf %s from %s (integrity %s verified) in %s\n",
		version, url, p.integrity, time.Since(start).Round(time.Millisecond))
	return dst, nil
}

// pinFor is the npm package and integrity of buf for a GOOS/GOARCH.
func pinFor(platform string) (pin, error) {
	p, ok := pins[platform]
	if !ok {
		known := make([]string, 0, len(pins))
		for k := range pins {
			known = append(known, k)
		}
		sort.Strings(known)
		return pin{}, fmt.Errorf("no pinned buf %s for %s (pinned: %s); add its npm package and integrity to hack/install-buf/main.go",
			version, platform, strings.Join(known, ", "))
	}
	return p, nil
}

// installedVersion is what the buf at path reports, or "" when there is none that runs.
func installedVersion(ctx context.Context, path string) string {
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// install downloads the tarball at url, checks it against integrity and writes its bin/buf to
// dst, replacing any file there only once the new one is complete.
func install(ctx context.Context, url, integrity, dst string) error {
	tgz, err := download(ctx, url)
	if err != nil {
		return err
	}
	if err := verify(tgz, integrity); err != nil {
		return fmt.Errorf("%s: %w", url, err)
	}
	binary, err := extract(tgz, "package/bin/buf")
	if err != nil {
		return fmt.Errorf("%s: %w", url, err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".buf-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) //nolint:errcheck // gone after the rename; removed on failure
	if _, err := tmp.Write(binary); err != nil {
		tmp.Close() //nolint:errcheck,gosec // the write error is the one to report
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o755); err != nil { //nolint:gosec // an executable
		return err
	}
	return os.Rename(tmp.Name(), dst)
}

func download(ctx context.Context, url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxTarball+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if len(data) > maxTarball {
		return nil, fmt.Errorf("GET %s: larger than %d bytes", url, maxTarball)
	}
	return data, nil
}

// verify checks data against an npm integrity string ("sha512-<base64>").
func verify(data []byte, integrity string) error {
	want, ok := strings.CutPrefix(integrity, "sha512-")
	if !ok {
		return fmt.Errorf("integrity %q is not sha512", integrity)
	}
	sum := sha512.Sum512(data)
	if got := base64.StdEncoding.EncodeToString(sum[:]); got != want {
		return fmt.Errorf("integrity mismatch: downloaded sha512-%s, pinned %s; nothing installed", got, integrity)
	}
	return nil
}

// extract returns the regular file named name from a gzipped tarball.
func extract(tgz []byte, name string) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(tgz))
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("no %s in the tarball", name)
		}
		if err != nil {
			return nil, err
		}
		if h.Name == name && h.Typeflag == tar.TypeReg {
			return io.ReadAll(tr)
		}
	}
}
