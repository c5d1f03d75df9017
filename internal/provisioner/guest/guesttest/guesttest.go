// Package guesttest assembles a test guest for the QEMU driver: Debian's kernel from /boot and an
// initramfs built here, in Go, from the guest init, the simulated forgejo-runner and the virtio
// modules the kernel needs. Nothing is skipped: a missing QEMU or kernel fails the test with the
// command that installs them.
package guesttest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/guest"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/guest/initramfs"
)

const module = "git.brooktrails.org/brooktrails/forgejo-runner-operator"

// Install is what to run when the tools are missing.
const Install = "run hack/install-vm-tools.sh as root (apt-get install qemu-system-x86 qemu-utils linux-image-cloud-amd64)"

// Modules the guest loads: the virtio PCI transport, the serial ports, the network card and the
// disk. Debian's kernels build them as modules.
var Modules = []string{"virtio_pci", "virtio_console", "virtio_net", "virtio_blk"}

// Image is a bootable test guest.
type Image struct {
	Kernel   string
	Initrd   string
	Modules  []string // paths inside the initramfs, in load order
	BootArgs string   // without the driver's console settings
}

// RequireTools fails the test when QEMU or qemu-img is missing.
func RequireTools(tb testing.TB) {
	tb.Helper()
	for _, b := range []string{"qemu-system-x86_64", "qemu-img"} {
		if _, err := exec.LookPath(b); err != nil {
			tb.Fatalf("%s is missing: %s", b, Install)
		}
	}
}

// Kernel finds a Debian kernel in /boot and its module directory, preferring the cloud flavour
// (smaller, made for VMs).
func Kernel(tb testing.TB) (kernel, moduleDir string) {
	tb.Helper()
	found, _ := filepath.Glob("/boot/vmlinuz-*")
	sort.SliceStable(found, func(i, j int) bool {
		return strings.Contains(found[i], "cloud") && !strings.Contains(found[j], "cloud")
	})
	for _, k := range found {
		dir := filepath.Join("/lib/modules", strings.TrimPrefix(filepath.Base(k), "vmlinuz-"))
		if _, err := os.Stat(filepath.Join(dir, "modules.dep")); err == nil {
			return k, dir
		}
	}
	tb.Fatalf("no kernel with modules in /boot: %s", Install)
	return "", ""
}

// Build assembles the guest into dir.
func Build(tb testing.TB, dir string) Image {
	tb.Helper()
	RequireTools(tb)
	kernel, moduleDir := Kernel(tb)
	bin := filepath.Join(dir, "bin")
	for name, pkg := range map[string]string{"init": "guest-init", "forgejo-runner": "simrunner"} {
		cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(bin, name), module+"/internal/provisioner/guest/cmd/"+pkg) //nolint:gosec // fixed packages
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
		if out, err := cmd.CombinedOutput(); err != nil {
			tb.Fatalf("build %s: %v\n%s", pkg, err, out)
		}
	}
	mods, err := initramfs.Modules(moduleDir, Modules...)
	if err != nil {
		tb.Fatalf("%v (%s)", err, Install)
	}
	var buf bytes.Buffer
	w := initramfs.NewWriter(&buf)
	w.CharDev("/dev/console", 0o600, 5, 1)
	for _, d := range []string{"/proc", "/sys", "/run", "/tmp", "/usr/bin"} {
		w.Dir(d)
	}
	read := func(p string) []byte {
		b, err := os.ReadFile(p) //nolint:gosec // files the test chose
		if err != nil {
			tb.Fatalf("read %s: %v", p, err)
		}
		return b
	}
	w.File("/init", 0o755, read(filepath.Join(bin, "init")))
	w.File("/usr/bin/forgejo-runner", 0o755, read(filepath.Join(bin, "forgejo-runner")))
	img := Image{Kernel: kernel, Initrd: filepath.Join(dir, "initramfs.cpio.gz")}
	for _, m := range mods {
		p := "/lib/modules/" + m
		w.File(p, 0o644, read(filepath.Join(moduleDir, m)))
		img.Modules = append(img.Modules, p)
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(img.Initrd, buf.Bytes(), 0o600); err != nil {
		tb.Fatal(err)
	}
	img.BootArgs = fmt.Sprintf("rdinit=/init %s=%s %s=/usr/bin/forgejo-runner", guest.ParamModules, strings.Join(img.Modules, ","), guest.ParamRunner)
	return img
}
