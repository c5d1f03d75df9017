package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha512"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tarball is an npm package tarball holding files.
func tarball(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func integrity(data []byte) string {
	sum := sha512.Sum512(data)
	return "sha512-" + base64.StdEncoding.EncodeToString(sum[:])
}

// TestInstallVerifiesIntegrity: the binary is installed from a tarball whose sha512 is the
// pinned one, and from no other; a refused download leaves what was installed before alone.
func TestInstallVerifiesIntegrity(t *testing.T) {
	good := tarball(t, map[string]string{"package/package.json": "{}", "package/bin/buf": "#!/bin/sh\necho good\n"})
	evil := tarball(t, map[string]string{"package/bin/buf": "#!/bin/sh\necho evil\n"})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/good.tgz":
			w.Write(good)
		case "/evil.tgz":
			w.Write(evil)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	dst := filepath.Join(t.TempDir(), "bin", "buf")

	if err := install(t.Context(), srv.URL+"/good.tgz", integrity(good), dst); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(dst)
	if err != nil || !strings.Contains(string(got), "good") {
		t.Fatalf("installed %q, %v", got, err)
	}
	if fi, err := os.Stat(dst); err != nil || fi.Mode().Perm()&0o100 == 0 {
		t.Fatalf("installed buf is not executable: %v %v", fi, err)
	}

	err = install(t.Context(), srv.URL+"/evil.tgz", integrity(good), dst)
	if err == nil || !strings.Contains(err.Error(), "integrity mismatch") {
		t.Fatalf("a tarball with another sha512 was not refused: %v", err)
	}
	if got, _ := os.ReadFile(dst); !strings.Contains(string(got), "good") {
		t.Errorf("a refused download replaced the installed buf with %q", got)
	}
	if err := install(t.Context(), srv.URL+"/missing.tgz", integrity(good), dst); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("a missing tarball: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Dir(dst))
	if len(entries) != 1 {
		t.Errorf("left behind in bin/: %v", entries)
	}
}

// TestPins: the platforms CI and developers use are pinned, every pin is a well-formed sha512
// integrity, and an unknown platform is refused by name.
func TestPins(t *testing.T) {
	for _, platform := range []string{"linux/amd64", "linux/arm64", "darwin/amd64", "darwin/arm64"} {
		p, err := pinFor(platform)
		if err != nil {
			t.Errorf("%s: %v", platform, err)
			continue
		}
		sum, ok := strings.CutPrefix(p.integrity, "sha512-")
		raw, err := base64.StdEncoding.DecodeString(sum)
		if !ok || err != nil || len(raw) != sha512.Size {
			t.Errorf("%s: integrity %q is not sha512-<base64 of 64 bytes>", platform, p.integrity)
		}
		if !strings.HasPrefix(p.pkg, "buf-") {
			t.Errorf("%s: package %q is not one of @bufbuild/buf-*", platform, p.pkg)
		}
	}
	_, err := pinFor("plan9/386")
	if err == nil || !strings.Contains(err.Error(), "plan9/386") || !strings.Contains(err.Error(), "linux/amd64") {
		t.Errorf("unknown platform: %v", err)
	}
}
