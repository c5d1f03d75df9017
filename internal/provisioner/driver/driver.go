// Package driver is the interface between the provisioner and a hypervisor: one VM per runner,
// made, started, stopped and destroyed by id. The provisioner keeps the records (owner, lease,
// shape); a driver keeps only what its hypervisor needs, under a directory of its own per VM, so
// that after a restart it can find and destroy a VM from its id alone.
package driver

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Spec is what a driver needs to make one VM.
type Spec struct {
	ID string
	// Slot is unique among the host's live VMs; drivers derive per-VM host resources from it
	// (vsock CID, tap device name), so two VMs never share one.
	Slot      int
	VCPUs     uint32
	MemoryMiB uint32
	// KernelPath and RootfsPath are host paths the provisioner resolved inside its image
	// directory. The rootfs is a read-only base: the driver boots from its own overlay of it.
	KernelPath string
	RootfsPath string
	// Guest is handed to the guest once, over a channel only the guest can read (the token is in
	// it); OnGuestConfigRead is called after it was read.
	Guest             GuestConfig
	OnGuestConfigRead func()
	// OnGuestEvent, when set, is told of the guest's milestones; it must not block.
	OnGuestEvent func(GuestEvent)
}

// GuestEventKind names a milestone of a guest.
type GuestEventKind string

const (
	// GuestLogOpen: the guest's init is up and its log stream was acknowledged.
	GuestLogOpen GuestEventKind = "log-stream-open"
	// GuestRunnerStarted: the init started forgejo-runner.
	GuestRunnerStarted GuestEventKind = "runner-started"
	// GuestRunnerExited: the runner ended, with ExitCode; the guest powers off next.
	GuestRunnerExited GuestEventKind = "runner-exited"
)

// GuestEvent is a milestone the guest reported, timed when the host read it.
type GuestEvent struct {
	Kind     GuestEventKind
	ExitCode int
	Time     time.Time
}

// GuestConfig is what the guest's init needs to start forgejo-runner. The guest reads it once
// over the driver's private channel (docs/provisioner.md); it is never written to disk.
type GuestConfig struct {
	VMID             string   `json:"vm_id"`
	ForgejoURL       string   `json:"forgejo_url"`
	RegistrationUUID string   `json:"registration_uuid"`
	Token            string   `json:"token"`
	Labels           []string `json:"labels,omitempty"`
	JobHandle        string   `json:"job_handle,omitempty"`
}

// State is what a driver can tell of a VM.
type State string

const (
	// StateCreated: the hypervisor is configured, the guest not started.
	StateCreated State = "created"
	// StateRunning: the guest was started and its hypervisor process lives.
	StateRunning State = "running"
	// StateStopped: something of the VM is on the host but its hypervisor process is gone.
	StateStopped State = "stopped"
	// StateGone: nothing of the VM is left on the host.
	StateGone State = "gone"
)

// ErrNotFound is returned for an id the driver has nothing of.
var ErrNotFound = errors.New("no such VM")

// Driver makes and destroys VMs of one hypervisor. Every method is safe to call concurrently for
// different ids; Destroy is idempotent.
type Driver interface {
	// Name is the driver's name in records and flags: "firecracker", "qemu".
	Name() string
	// Create prepares the VM (overlay, hypervisor process, devices) without starting the guest.
	// On error, what was made is left for Destroy.
	Create(ctx context.Context, spec Spec) error
	// Start boots the guest.
	Start(ctx context.Context, id string) error
	// Stop asks the guest to shut down; the VM's files stay until Destroy.
	Stop(ctx context.Context, id string) error
	// Destroy kills the hypervisor process and removes everything the VM had on the host.
	Destroy(ctx context.Context, id string) error
	// State reports the VM's state; StateGone when the driver has nothing of it.
	State(ctx context.Context, id string) (State, error)
	// ConsoleLog is the path of the file the guest's console is written to.
	ConsoleLog(id string) (string, error)
	// Reattach connects again to a running VM an earlier run of the provisioner made (its
	// console and log stream), after State said it runs; onEvent is as Spec.OnGuestEvent.
	Reattach(ctx context.Context, id string, onEvent func(GuestEvent)) error
}

// ValidID keeps VM ids usable as path elements (directories, jails) and findable in a process's
// command line: lower-case letters, digits and dashes, at most 64.
func ValidID(id string) error {
	if id == "" || len(id) > 64 || strings.Trim(id, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
		return fmt.Errorf("invalid VM id %q", id)
	}
	return nil
}

// GuestMAC is the VM's network card address: locally administered, unicast, from its slot.
func GuestMAC(slot int) string {
	return fmt.Sprintf("06:00:ac:10:%02x:%02x", (slot>>8)&0xff, slot&0xff)
}
