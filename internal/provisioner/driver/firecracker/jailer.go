package firecracker

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver"
)

// Jailer runs Firecracker under Firecracker's jailer: a chroot per VM at
// <ChrootBase>/firecracker/<id>/root, an unprivileged uid/gid, a cgroup (v2) per VM with the
// VM's CPU and memory limits, and a new network namespace when NetNS is set. The layout is in
// docs/provisioner.md.
type Jailer struct {
	// Binary is the jailer executable.
	Binary string
	// ChrootBase is the jailer's --chroot-base-dir.
	ChrootBase string
	UID, GID   int
	// NetNS is a network namespace path for --netns (where the VM's tap lives), optional.
	NetNS string
	// ParentCgroup is --parent-cgroup, e.g. "forgejo-runner-vms".
	ParentCgroup string
}

// root is the chroot of a VM, where its files are put and Firecracker sees "/".
func (j *Jailer) root(id string) string {
	// The jailer names the jail after the exec file's base name: always "firecracker" here.
	return filepath.Join(j.ChrootBase, "firecracker", id, "root")
}

func (j *Jailer) argv(firecracker string, spec driver.Spec) []string {
	args := []string{j.Binary,
		"--id", spec.ID,
		"--exec-file", firecracker,
		"--uid", strconv.Itoa(j.UID),
		"--gid", strconv.Itoa(j.GID),
		"--chroot-base-dir", j.ChrootBase,
		"--cgroup-version", "2",
		// The guest's vCPUs and memory plus headroom for the VMM itself.
		"--cgroup", fmt.Sprintf("cpu.max=%d 100000", 100000*int(spec.VCPUs)),
		"--cgroup", fmt.Sprintf("memory.max=%d", (int64(spec.MemoryMiB)+64)<<20),
	}
	if j.ParentCgroup != "" {
		args = append(args, "--parent-cgroup", j.ParentCgroup)
	}
	if j.NetNS != "" {
		args = append(args, "--netns", j.NetNS)
	}
	return append(args, "--", "--api-sock", "/"+apiSocketName, "--id", spec.ID)
}

// chownJail hands the jail's files to the jailer's user: Firecracker opens them after dropping
// privileges.
func (j *Jailer) chownJail(root string) error {
	for _, dir := range []string{filepath.Dir(root), root} {
		if err := os.Lchown(dir, j.UID, j.GID); err != nil {
			return fmt.Errorf("chown jail: %w", err)
		}
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		return fmt.Errorf("read jail: %w", err)
	}
	for _, e := range entries {
		if e.Name() == kernelName {
			continue // a hard link of the shared kernel: readable, and not the VM's to own
		}
		if err := os.Lchown(filepath.Join(root, e.Name()), j.UID, j.GID); err != nil {
			return fmt.Errorf("chown jail: %w", err)
		}
	}
	return nil
}
