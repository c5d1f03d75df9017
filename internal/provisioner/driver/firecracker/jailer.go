package firecracker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver"
)

// Jailer runs Firecracker under Firecracker's jailer: a chroot per VM at
// <ChrootBase>/<exec name>/<id>/root (the exec name is the Firecracker binary's file name, its
// symlinks resolved, as the jailer names it), an unprivileged uid/gid, a cgroup (v2) per VM with
// the VM's CPU and memory limits, optionally a new PID namespace and a network namespace. The
// layout is in docs/provisioner.md.
type Jailer struct {
	// Binary is the jailer executable.
	Binary string
	// ChrootBase is the jailer's --chroot-base-dir.
	ChrootBase string
	UID, GID   int
	// NetNS is --netns: the path of the network namespace the VM's tap lives in, e.g.
	// /var/run/netns/forgejo-runners; empty leaves Firecracker in the provisioner's.
	NetNS string
	// ParentCgroup is --parent-cgroup, e.g. "forgejo-runner-vms": each VM's cgroup is
	// <cgroup v2 root>/<ParentCgroup>/<vm id>. Empty: the jailer's default, the exec name.
	ParentCgroup string
	// NewPIDNS is --new-pid-ns: Firecracker runs in a PID namespace of its own (as its init), and
	// sees no other process of the host.
	NewPIDNS bool
	// CgroupRoot is where the cgroup v2 hierarchy is mounted, /sys/fs/cgroup by default: the
	// jailer makes each VM's cgroup below it, and Destroy removes it.
	CgroupRoot string
}

// cgroup is the directory of a VM's cgroup, which the jailer makes (for the --cgroup limits) and
// nothing else removes.
func (j *Jailer) cgroup(jailName, id string) string {
	root, parent := j.CgroupRoot, j.ParentCgroup
	if root == "" {
		root = "/sys/fs/cgroup"
	}
	if parent == "" {
		parent = jailName // the jailer's default
	}
	return filepath.Join(root, parent, id)
}

// removeCgroup removes the VM's cgroup once its processes are gone; one never made, or removed
// already, is no error. A cgroup still busy after a while (a process of the VM's left) is.
func (j *Jailer) removeCgroup(ctx context.Context, jailName, id string) error {
	dir := j.cgroup(jailName, id)
	for tries := 0; ; tries++ {
		err := syscall.Rmdir(dir)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) || tries == 50 {
			return fmt.Errorf("remove the VM's cgroup %s: %w", dir, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("remove the VM's cgroup %s: %w", dir, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// jailName is the name the jailer gives a jail's directory under the chroot base: the exec
// file's name after its symlinks are resolved (the jailer canonicalizes --exec-file). A binary
// that cannot be resolved here is named as given (the jailer will refuse it anyway).
func jailName(firecracker string) string {
	if resolved, err := filepath.EvalSymlinks(firecracker); err == nil {
		firecracker = resolved
	}
	return filepath.Base(firecracker)
}

// root is the chroot of a VM, where Firecracker's files are put and Firecracker sees "/".
func (j *Jailer) root(name, id string) string {
	return filepath.Join(j.ChrootBase, name, id, "root")
}

// argv is the jailer's command line. Firecracker's own arguments follow "--"; the jailer gives
// it --id itself (a second --id would make Firecracker refuse to start).
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
	if j.NewPIDNS {
		args = append(args, "--new-pid-ns")
	}
	return append(args, "--", "--api-sock", "/"+apiSocketName)
}

// chownJail hands the jail's root and files to the jailer's user: Firecracker opens them after
// dropping privileges. The directory above the root stays the provisioner's: it is the VM's state
// directory.
func (j *Jailer) chownJail(root string) error {
	if err := os.Lchown(root, j.UID, j.GID); err != nil {
		return fmt.Errorf("chown jail: %w", err)
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
