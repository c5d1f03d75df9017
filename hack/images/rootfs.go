package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"time"
)

// The image's user. 65532 is distroless' "nonroot", so an image from `make images` and one
// built from the Containerfile on gcr.io/distroless/static run as the same uid, and a
// Deployment's runAsUser/fsGroup fits both.
const (
	nonrootUID  = 65532
	nonrootName = "nonroot"
	nonrootHome = "/home/nonroot"
	// imageUser is the config's User: numeric, so the kubelet's runAsNonRoot check can verify it
	// without reading /etc/passwd.
	imageUser = "65532:65532"
	binDir    = "/usr/local/bin"
	caPath    = "/etc/ssl/certs/ca-certificates.crt"
)

// entrypoint is where a binary lives in its image and what the image runs.
func entrypoint(binary string) string { return path.Join(binDir, binary) }

// file is one entry of a layer. Directories end in "/".
type file struct {
	name string
	mode int64
	uid  int
	data []byte
}

// baseFiles is the distroless-static-like root: users and groups, the CA bundle, a home for
// nonroot and a /tmp. It has no shell and no package manager; Go binaries built with
// CGO_ENABLED=0 need nothing else.
func baseFiles(caBundle, caCopyright []byte) []file {
	files := []file{
		{name: "etc/", mode: 0o755},
		{name: "etc/passwd", mode: 0o644, data: []byte(
			"root:x:0:0:root:/root:/sbin/nologin\n" +
				"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
				fmt.Sprintf("%s:x:%d:%d:%s:%s:/sbin/nologin\n", nonrootName, nonrootUID, nonrootUID, nonrootName, nonrootHome))},
		{name: "etc/group", mode: 0o644, data: []byte(
			"root:x:0:\nnobody:x:65534:\n" + fmt.Sprintf("%s:x:%d:\n", nonrootName, nonrootUID))},
		// Go's resolver reads hosts: from here; without it the order is guessed.
		{name: "etc/nsswitch.conf", mode: 0o644, data: []byte("hosts: files dns\n")},
		{name: "etc/ssl/", mode: 0o755},
		{name: "etc/ssl/certs/", mode: 0o755},
		{name: strings.TrimPrefix(caPath, "/"), mode: 0o644, data: caBundle},
		{name: "home/", mode: 0o755},
		{name: strings.TrimPrefix(nonrootHome, "/") + "/", mode: 0o700, uid: nonrootUID},
		{name: "root/", mode: 0o700},
		{name: "tmp/", mode: 0o1777},
	}
	if caCopyright != nil {
		// The bundle's licence terms travel with it.
		files = append(files,
			file{name: "usr/", mode: 0o755},
			file{name: "usr/share/", mode: 0o755},
			file{name: "usr/share/doc/", mode: 0o755},
			file{name: "usr/share/doc/ca-certificates/", mode: 0o755},
			file{name: "usr/share/doc/ca-certificates/copyright", mode: 0o644, data: caCopyright})
	}
	return files
}

// binaryFiles is the layer holding one binary, root-owned and not writable by the user it runs as.
func binaryFiles(binary string, data []byte) []file {
	return []file{
		{name: "usr/", mode: 0o755},
		{name: "usr/local/", mode: 0o755},
		{name: "usr/local/bin/", mode: 0o755},
		{name: strings.TrimPrefix(entrypoint(binary), "/"), mode: 0o755, data: data},
	}
}

// tarFiles writes files as an uncompressed tar that depends only on its arguments: entries sorted
// by name, one fixed modification time, numeric owners without names, USTAR headers.
func tarFiles(files []file, mtime time.Time) ([]byte, error) {
	sorted := append([]file(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].name < sorted[j].name })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i, f := range sorted {
		if i > 0 && sorted[i-1].name == f.name {
			return nil, fmt.Errorf("layer entry %s twice", f.name)
		}
		hdr := &tar.Header{
			Name:    f.name,
			Mode:    f.mode,
			Uid:     f.uid,
			Gid:     f.uid,
			ModTime: mtime,
			Format:  tar.FormatUSTAR,
		}
		if strings.HasSuffix(f.name, "/") {
			hdr.Typeflag = tar.TypeDir
		} else {
			hdr.Typeflag = tar.TypeReg
			hdr.Size = int64(len(f.data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("tar header %s: %w", f.name, err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, fmt.Errorf("tar body %s: %w", f.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("closing tar: %w", err)
	}
	return buf.Bytes(), nil
}

// tarDir writes a directory tree (an OCI layout) as a tar with the same guarantees as tarFiles.
func tarDir(fsys fs.FS, mtime time.Time) ([]byte, error) {
	var files []file
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == "." {
			return err
		}
		if d.IsDir() {
			files = append(files, file{name: p + "/", mode: 0o755})
			return nil
		}
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return fmt.Errorf("reading %s: %w", p, err)
		}
		files = append(files, file{name: p, mode: 0o644, data: data})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("walking layout: %w", err)
	}
	return tarFiles(files, mtime)
}
