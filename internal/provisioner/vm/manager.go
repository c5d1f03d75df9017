// Package vm keeps the provisioner's VMs: their records (owner, lease, shape) on disk, the host's
// capacity, idempotent creation by the caller's key, and the reaper that destroys a VM whose
// lease lapsed or whose hypervisor is gone. It drives a hypervisor only through driver.Driver.
package vm

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/state"
)

// Errors the API maps to its status codes.
var (
	ErrNotFound   = errors.New("no such VM")
	ErrConflict   = errors.New("idempotency key already used with other parameters")
	ErrNoCapacity = errors.New("not enough capacity on this host")
	ErrInvalid    = errors.New("invalid request")
	ErrNoLog      = errors.New("no log on the host")
)

// Config configures a Manager.
type Config struct {
	Driver driver.Driver
	Store  *state.Store
	Clock  clock.WithTicker
	// ImageDir holds the kernels and base images a request may name.
	ImageDir string
	// VCPUs and MemoryMiB are what this host gives its VMs in total.
	VCPUs     uint32
	MemoryMiB uint64
	// MaxSlots bounds the VMs at once (0: no bound beyond vCPUs and memory), e.g. by the
	// addresses of the tap subnet.
	MaxSlots int
	// Lease bounds: a request's lease is clamped to [MinLease, MaxLease], DefaultLease if unset.
	MinLease, DefaultLease, MaxLease time.Duration
	Logger                           logr.Logger
	// Events, when set, is told of every VM's moments (figures and the event log); it is called
	// without the manager's lock held and must not call back into the manager.
	Events func(Event)
}

// CreateRequest is a create call, the caller's identity included.
type CreateRequest struct {
	IdempotencyKey   string
	Owner            state.Owner
	VCPUs            uint32
	MemoryMiB        uint32
	Kernel           string
	RootfsImage      string
	ForgejoURL       string
	RegistrationUUID string
	Labels           []string
	JobHandle        string
	Token            string
	Lease            time.Duration
}

// Filter selects an operator's VMs; empty fields match all.
type Filter struct {
	PoolNamespace, PoolName, RunnerName string
}

// Capacity is the host's room for VMs.
type Capacity struct {
	VCPUsTotal, VCPUsUsed         uint32
	MemoryMiBTotal, MemoryMiBUsed uint64
	VMs                           int
	ByPhase                       map[state.Phase]int
}

// Manager keeps the VMs.
type Manager struct {
	cfg Config
	log logr.Logger

	mu  sync.Mutex
	vms map[string]*state.Record
	// creating holds a channel per VM whose Create is under way, closed when it ends: the
	// driver is never asked to destroy a VM it is still making.
	creating map[string]chan struct{}
}

// New returns a Manager; call Recover before serving.
func New(cfg Config) (*Manager, error) {
	if cfg.Driver == nil || cfg.Store == nil || cfg.Clock == nil {
		return nil, errors.New("vm: driver, store and clock are required")
	}
	if cfg.MinLease <= 0 || cfg.DefaultLease < cfg.MinLease || cfg.MaxLease < cfg.DefaultLease {
		return nil, fmt.Errorf("vm: lease bounds must satisfy 0 < min (%s) <= default (%s) <= max (%s)", cfg.MinLease, cfg.DefaultLease, cfg.MaxLease)
	}
	return &Manager{cfg: cfg, log: cfg.Logger, vms: map[string]*state.Record{}, creating: map[string]chan struct{}{}}, nil
}

// Recover loads the records a previous run left and settles each VM: one whose hypervisor is
// still running and whose guest already has its token is adopted; any other is destroyed (its
// process is gone, or it never got its token, which was never written down and cannot be handed
// over again). Each destroyed VM's record is removed with it.
//
// Records of another driver stop the start: this driver cannot see or destroy their VMs, which
// would run on unaccounted (switch drivers only on an empty host).
func (m *Manager) Recover(ctx context.Context) error {
	records, err := m.cfg.Store.Load()
	if err != nil {
		return err
	}
	var foreign []string
	for _, r := range records {
		if r.Driver != m.cfg.Driver.Name() {
			foreign = append(foreign, r.ID+" ("+r.Driver+")")
		}
	}
	if len(foreign) > 0 {
		return fmt.Errorf("the state directory holds VMs of another driver than %s: %v; start with their driver to destroy them, or remove them by hand",
			m.cfg.Driver.Name(), foreign)
	}
	for i := range records {
		r := records[i]
		st, err := m.cfg.Driver.State(ctx, r.ID)
		if err != nil {
			m.driverError(r.ID, "state", err)
			return fmt.Errorf("recover VM %s: %w", r.ID, err)
		}
		if st == driver.StateRunning && r.TokenDelivered {
			// A VM found running was started; and its operator, which could not reach a stopped
			// provisioner, gets at least the shortest lease to renew it again.
			r.Phase = state.PhaseRunning
			if floor := m.cfg.Clock.Now().Add(m.cfg.MinLease); r.LeaseExpireTime.Before(floor) {
				r.LeaseExpireTime = floor
			}
			if err := m.cfg.Store.Save(r); err != nil {
				return fmt.Errorf("recover VM %s: %w", r.ID, err)
			}
			m.mu.Lock()
			m.vms[r.ID] = &r
			m.mu.Unlock()
			rerr := m.cfg.Driver.Reattach(ctx, r.ID, m.onGuestEvent(r.ID))
			if rerr == nil {
				m.log.Info("adopted VM", "vm", r.ID, "pool", r.Owner.PoolNamespace+"/"+r.Owner.PoolName, "runner", r.Owner.RunnerName)
				m.emit(Event{Kind: EventAdopted, Record: r})
				continue
			}
			// Its logs could not be taken up again: a VM whose output is not kept is not kept.
			m.driverError(r.ID, "reattach", rerr)
			m.log.Error(rerr, "could not reattach to a running VM; destroying it", "vm", r.ID)
		}
		m.log.Info("destroying VM left by an earlier run", "vm", r.ID, "driverState", st, "tokenDelivered", r.TokenDelivered)
		m.mu.Lock()
		m.vms[r.ID] = &r
		m.mu.Unlock()
		if err := m.destroy(ctx, r.ID, ReasonRecovered); err != nil {
			return fmt.Errorf("recover VM %s: %w", r.ID, err)
		}
	}
	return nil
}

var imageName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

func (m *Manager) imagePath(name string) (string, error) {
	if !imageName.MatchString(name) {
		return "", fmt.Errorf("%w: image name %q", ErrInvalid, name)
	}
	p := filepath.Join(m.cfg.ImageDir, name)
	if info, err := os.Stat(p); err != nil || !info.Mode().IsRegular() {
		return "", fmt.Errorf("%w: no image %q on this host", ErrInvalid, name)
	}
	return p, nil
}

func (m *Manager) validate(req *CreateRequest) error {
	switch {
	case req.IdempotencyKey == "" || len(req.IdempotencyKey) > 253:
		return fmt.Errorf("%w: idempotency key must be 1 to 253 bytes", ErrInvalid)
	case req.Owner.Operator == "":
		return fmt.Errorf("%w: no operator identity", ErrInvalid)
	case req.VCPUs == 0 || req.MemoryMiB == 0:
		return fmt.Errorf("%w: vcpus and memory must be set", ErrInvalid)
	case req.ForgejoURL == "" || req.RegistrationUUID == "" || req.Token == "":
		return fmt.Errorf("%w: forgejo URL, registration UUID and token must be set", ErrInvalid)
	}
	return nil
}

func (m *Manager) clampLease(d time.Duration) time.Duration {
	switch {
	case d <= 0:
		return m.cfg.DefaultLease
	case d < m.cfg.MinLease:
		return m.cfg.MinLease
	case d > m.cfg.MaxLease:
		return m.cfg.MaxLease
	}
	return d
}

// requestHash identifies a request's parameters, without its token and lease: a retry is the same
// request even after its lease was renewed.
func requestHash(req *CreateRequest) string {
	b, _ := json.Marshal([]any{req.Owner, req.VCPUs, req.MemoryMiB, req.Kernel, req.RootfsImage,
		req.ForgejoURL, req.RegistrationUUID, req.Labels, req.JobHandle})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Create makes and boots a VM, or returns the one the same key made before (created false).
func (m *Manager) Create(ctx context.Context, req CreateRequest) (rec state.Record, created bool, err error) {
	if err := m.validate(&req); err != nil {
		return state.Record{}, false, err
	}
	kernel, err := m.imagePath(req.Kernel)
	if err != nil {
		return state.Record{}, false, err
	}
	rootfs, err := m.imagePath(req.RootfsImage)
	if err != nil {
		return state.Record{}, false, err
	}
	hash := requestHash(&req)

	m.mu.Lock()
	for _, r := range m.vms {
		if r.Owner.Operator == req.Owner.Operator && r.IdempotencyKey == req.IdempotencyKey {
			existing := *r
			m.mu.Unlock()
			if existing.RequestHash != hash {
				return state.Record{}, false, fmt.Errorf("%w: key %q names VM %s", ErrConflict, req.IdempotencyKey, existing.ID)
			}
			return existing, false, nil
		}
	}
	c := m.capacityLocked()
	if slot := m.freeSlotLocked(); m.cfg.MaxSlots > 0 && slot >= m.cfg.MaxSlots {
		m.mu.Unlock()
		return state.Record{}, false, fmt.Errorf("%w: all %d VM slots (addresses) of this host are taken", ErrNoCapacity, m.cfg.MaxSlots)
	}
	if c.VCPUsUsed+req.VCPUs > c.VCPUsTotal || c.MemoryMiBUsed+uint64(req.MemoryMiB) > c.MemoryMiBTotal {
		m.mu.Unlock()
		return state.Record{}, false, fmt.Errorf("%w: asked for %d vCPUs and %d MiB, %d vCPUs and %d MiB free", ErrNoCapacity,
			req.VCPUs, req.MemoryMiB, c.VCPUsTotal-c.VCPUsUsed, c.MemoryMiBTotal-c.MemoryMiBUsed)
	}
	now := m.cfg.Clock.Now()
	r := &state.Record{
		ID: newID(), IdempotencyKey: req.IdempotencyKey, RequestHash: hash, Driver: m.cfg.Driver.Name(),
		Slot: m.freeSlotLocked(), VCPUs: req.VCPUs, MemoryMiB: req.MemoryMiB, Kernel: req.Kernel, RootfsImage: req.RootfsImage,
		ForgejoURL: req.ForgejoURL, RegistrationUUID: req.RegistrationUUID, Labels: req.Labels, JobHandle: req.JobHandle,
		Owner: req.Owner, Phase: state.PhaseCreating, CreateTime: now, LeaseExpireTime: now.Add(m.clampLease(req.Lease)),
	}
	// Written before the driver makes anything, so a crash in between leaves a record that the
	// next start finds and cleans up.
	if err := m.cfg.Store.Save(*r); err != nil {
		m.mu.Unlock()
		return state.Record{}, false, err
	}
	m.vms[r.ID] = r
	made := *r
	createDone := make(chan struct{})
	m.creating[r.ID] = createDone
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.creating, made.ID)
		m.mu.Unlock()
		close(createDone)
	}()
	m.emit(Event{Kind: EventCreated, Time: now, Record: made})

	log := m.log.WithValues("vm", r.ID, "pool", r.Owner.PoolNamespace+"/"+r.Owner.PoolName, "runner", r.Owner.RunnerName)
	id := r.ID
	spec := driver.Spec{
		ID: id, Slot: r.Slot, VCPUs: r.VCPUs, MemoryMiB: r.MemoryMiB, KernelPath: kernel, RootfsPath: rootfs,
		Guest: driver.GuestConfig{VMID: id, ForgejoURL: r.ForgejoURL, RegistrationUUID: r.RegistrationUUID,
			Token: req.Token, Labels: r.Labels, JobHandle: r.JobHandle},
		OnGuestConfigRead: func() { m.update(id, func(r *state.Record) { r.TokenDelivered = true }) },
		OnGuestEvent:      m.onGuestEvent(id),
	}
	op := "create"
	err = m.cfg.Driver.Create(ctx, spec)
	if err == nil {
		op = "start"
		err = m.cfg.Driver.Start(ctx, id)
	}
	var after state.Record
	if err != nil {
		log.Error(err, "creating VM failed", "operation", op)
		m.driverError(id, op, err)
		// What the driver made goes now; the record stays, failed, until deleted or its lease
		// lapses, so the caller can see why.
		if derr := m.cfg.Driver.Destroy(context.WithoutCancel(ctx), id); derr != nil {
			log.Error(derr, "cleaning up after a failed create")
			m.driverError(id, "destroy", derr)
		}
		m.update(id, func(r *state.Record) { r.Phase, r.Message = state.PhaseFailed, err.Error(); after = *r })
		if after.ID != "" {
			m.emit(Event{Kind: EventFailed, Record: after, Reason: op, Message: err.Error()})
		}
	} else {
		m.update(id, func(r *state.Record) {
			if r.Phase == state.PhaseCreating {
				r.Phase = state.PhaseRunning
			}
			after = *r
		})
		log.Info("VM started", "vcpus", r.VCPUs, "memoryMiB", r.MemoryMiB)
		if after.ID != "" {
			m.emit(Event{Kind: EventStarted, Record: after})
		}
	}
	got, gerr := m.Get(req.Owner.Operator, id)
	if gerr != nil {
		// Deleted while it was being made: make sure nothing is left.
		return state.Record{}, false, errors.Join(gerr, m.cfg.Driver.Destroy(context.WithoutCancel(ctx), id))
	}
	return got, true, nil
}

// update changes a record and writes it; a record deleted meanwhile is left alone.
func (m *Manager) update(id string, f func(*state.Record)) {
	m.updateIf(id, func(r *state.Record) bool { f(r); return true })
}

// updateIf changes a record and writes it if f says it changed it.
func (m *Manager) updateIf(id string, f func(*state.Record) bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.vms[id]
	if r == nil {
		return
	}
	if !f(r) {
		return
	}
	if err := m.cfg.Store.Save(*r); err != nil {
		m.log.Error(err, "saving VM record", "vm", id)
	}
}

// Get returns one of an operator's VMs.
func (m *Manager) Get(operator, id string) (state.Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.vms[id]
	// Another operator's VM is reported as missing: its existence is not theirs to know.
	if r == nil || r.Owner.Operator != operator {
		return state.Record{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return *r, nil
}

// List returns an operator's VMs that match f, ordered by creation.
func (m *Manager) List(operator string, f Filter) []state.Record {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []state.Record
	for _, r := range m.vms {
		o := r.Owner
		if o.Operator != operator || (f.PoolNamespace != "" && o.PoolNamespace != f.PoolNamespace) ||
			(f.PoolName != "" && o.PoolName != f.PoolName) || (f.RunnerName != "" && o.RunnerName != f.RunnerName) {
			continue
		}
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreateTime.Equal(out[j].CreateTime) {
			return out[i].CreateTime.Before(out[j].CreateTime)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Delete destroys one of an operator's VMs.
func (m *Manager) Delete(ctx context.Context, operator, id string) error {
	if _, err := m.Get(operator, id); err != nil {
		return err
	}
	if err := m.waitCreated(ctx, id); err != nil {
		return err
	}
	m.log.Info("deleting VM", "vm", id, "operator", operator)
	return m.destroy(ctx, id, ReasonDeleted)
}

// waitCreated waits until no Create of the VM is under way.
func (m *Manager) waitCreated(ctx context.Context, id string) error {
	m.mu.Lock()
	done := m.creating[id]
	m.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("VM %s is still being created: %w", id, ctx.Err())
	}
}

// destroy removes a VM from the host, then its record. The record goes last: if destroying
// fails, the VM is still known and tried again.
func (m *Manager) destroy(ctx context.Context, id, reason string) error {
	if err := m.cfg.Driver.Destroy(ctx, id); err != nil {
		m.driverError(id, "destroy", err)
		return fmt.Errorf("destroy VM %s: %w", id, err)
	}
	m.mu.Lock()
	r := m.vms[id]
	delete(m.vms, id)
	m.mu.Unlock()
	if err := m.cfg.Store.Delete(id); err != nil {
		return err
	}
	if r != nil {
		m.emit(Event{Kind: EventDestroyed, Record: *r, Reason: reason})
	}
	return nil
}

// Renew extends the leases of an operator's VMs named by ids (all of the operator's when ids is
// empty) to now + lease (clamped).
func (m *Manager) Renew(operator string, ids []string, lease time.Duration) (renewed []state.Record, missing []string, err error) {
	expire := m.cfg.Clock.Now().Add(m.clampLease(lease))
	m.mu.Lock()
	defer m.mu.Unlock()
	var targets []*state.Record
	if len(ids) == 0 {
		for _, r := range m.vms {
			if r.Owner.Operator == operator {
				targets = append(targets, r)
			}
		}
	}
	for _, id := range ids {
		if r := m.vms[id]; r != nil && r.Owner.Operator == operator {
			targets = append(targets, r)
		} else {
			missing = append(missing, id)
		}
	}
	for _, r := range targets {
		r.LeaseExpireTime = expire
		if serr := m.cfg.Store.Save(*r); serr != nil {
			err = errors.Join(err, serr)
		}
		renewed = append(renewed, *r)
	}
	sort.Slice(renewed, func(i, j int) bool { return renewed[i].ID < renewed[j].ID })
	return renewed, missing, err
}

// Capacity reports the host's room.
func (m *Manager) Capacity() Capacity {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.capacityLocked()
}

func (m *Manager) capacityLocked() Capacity {
	c := Capacity{VCPUsTotal: m.cfg.VCPUs, MemoryMiBTotal: m.cfg.MemoryMiB, VMs: len(m.vms), ByPhase: map[state.Phase]int{}}
	for _, r := range m.vms {
		c.ByPhase[r.Phase]++
		if r.Phase == state.PhaseFailed || r.Phase == state.PhaseStopped {
			continue // nothing of it runs
		}
		c.VCPUsUsed += r.VCPUs
		c.MemoryMiBUsed += uint64(r.MemoryMiB)
	}
	return c
}

func (m *Manager) freeSlotLocked() int {
	used := map[int]bool{}
	for _, r := range m.vms {
		used[r.Slot] = true
	}
	for s := 0; ; s++ {
		if !used[s] {
			return s
		}
	}
}

// ConsoleLog returns the path of one of an operator's VMs' console log; ErrNoLog when nothing
// of the VM is on the host (it failed to be made).
func (m *Manager) ConsoleLog(operator, id string) (string, error) {
	r, err := m.Get(operator, id)
	if err != nil {
		return "", err
	}
	p, err := m.cfg.Driver.ConsoleLog(id)
	if errors.Is(err, driver.ErrNotFound) {
		return "", fmt.Errorf("%w: VM %s is %s: %s", ErrNoLog, id, r.Phase, r.Message)
	}
	return p, err
}

// Reap destroys every VM whose lease lapsed by now, and marks stopped the running VMs whose
// hypervisor process is gone (kept, so their owner sees the end, until deleted or lapsed).
func (m *Manager) Reap(ctx context.Context) {
	now := m.cfg.Clock.Now()
	m.mu.Lock()
	var lapsed, running []string
	for id, r := range m.vms {
		if m.creating[id] != nil {
			continue // its Create ends first; the next round sees it
		}
		if !now.Before(r.LeaseExpireTime) {
			lapsed = append(lapsed, id)
		} else if r.Phase == state.PhaseRunning {
			running = append(running, id)
		}
	}
	m.mu.Unlock()
	sort.Strings(lapsed)
	for _, id := range lapsed {
		m.mu.Lock()
		r := m.vms[id]
		stillLapsed := r != nil && !m.cfg.Clock.Now().Before(r.LeaseExpireTime)
		m.mu.Unlock()
		if !stillLapsed {
			continue // renewed or deleted meanwhile
		}
		m.log.Info("lease lapsed; destroying VM", "vm", id)
		if err := m.destroy(ctx, id, ReasonLeaseLapsed); err != nil {
			m.log.Error(err, "reaping VM", "vm", id)
		}
	}
	for _, id := range running {
		st, err := m.cfg.Driver.State(ctx, id)
		if err != nil {
			m.log.Error(err, "reading VM state", "vm", id)
			m.driverError(id, "state", err)
			continue
		}
		if st == driver.StateStopped || st == driver.StateGone {
			m.log.Info("VM process gone", "vm", id, "driverState", st)
			var rec state.Record
			m.update(id, func(r *state.Record) {
				r.Phase, r.Message = state.PhaseStopped, "the hypervisor process ended"
				rec = *r
			})
			if rec.ID != "" {
				m.emit(Event{Kind: EventStopped, Record: rec, Message: rec.Message})
			}
		}
	}
}

// RunReaper reaps every interval until ctx ends.
func (m *Manager) RunReaper(ctx context.Context, interval time.Duration) {
	t := m.cfg.Clock.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			m.Reap(ctx)
		}
	}
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "vm-" + hex.EncodeToString(b[:])
}
