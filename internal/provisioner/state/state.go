// Package state keeps the provisioner's VM records in a directory, one JSON file per VM, so a
// restarted agent finds the VMs it made. A record never holds the runner token.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Owner says whom a VM belongs to.
type Owner struct {
	Operator      string `json:"operator"`
	PoolNamespace string `json:"poolNamespace,omitempty"`
	PoolName      string `json:"poolName,omitempty"`
	RunnerName    string `json:"runnerName,omitempty"`
}

// Record is one VM as the provisioner knows it.
type Record struct {
	ID             string `json:"id"`
	IdempotencyKey string `json:"idempotencyKey"`
	// RequestHash identifies the create request (without the token and the lease), so a retry
	// with the same key and different parameters is told apart from a plain retry.
	RequestHash      string    `json:"requestHash"`
	Driver           string    `json:"driver"`
	Slot             int       `json:"slot"`
	VCPUs            uint32    `json:"vcpus"`
	MemoryMiB        uint32    `json:"memoryMiB"`
	Kernel           string    `json:"kernel"`
	RootfsImage      string    `json:"rootfsImage"`
	ForgejoURL       string    `json:"forgejoURL"`
	RegistrationUUID string    `json:"registrationUUID"`
	Labels           []string  `json:"labels,omitempty"`
	JobHandle        string    `json:"jobHandle,omitempty"`
	Owner            Owner     `json:"owner"`
	Phase            Phase     `json:"phase"`
	Message          string    `json:"message,omitempty"`
	CreateTime       time.Time `json:"createTime"`
	LeaseExpireTime  time.Time `json:"leaseExpireTime"`
	TokenDelivered   bool      `json:"tokenDelivered,omitempty"`
	// The guest's milestones as the host saw them; zero until reached.
	GuestReadyTime  time.Time `json:"guestReadyTime,omitzero"`
	RunnerStartTime time.Time `json:"runnerStartTime,omitzero"`
	RunnerExitTime  time.Time `json:"runnerExitTime,omitzero"`
	RunnerExitCode  int       `json:"runnerExitCode,omitempty"`
}

// Phase is a record's place in a VM's life.
type Phase string

// The phases a record goes through.
const (
	PhaseCreating Phase = "Creating"
	PhaseRunning  Phase = "Running"
	PhaseStopped  Phase = "Stopped"
	PhaseFailed   Phase = "Failed"
)

// Store is a directory of records.
type Store struct {
	dir string
}

// Open makes dir (owner-only) when missing and returns a Store over it.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory %s: %w", dir, err)
	}
	return &Store{dir: dir}, nil
}

const suffix = ".json"

func (s *Store) path(id string) string { return filepath.Join(s.dir, id+suffix) }

// Save writes r atomically (a temporary file renamed over the old one), so a crash leaves either
// the old record or the new one, never half of one.
func (s *Store) Save(r Record) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode record %s: %w", r.ID, err)
	}
	tmp, err := os.CreateTemp(s.dir, "."+r.ID+".tmp-*")
	if err != nil {
		return fmt.Errorf("save record %s: %w", r.ID, err)
	}
	defer os.Remove(tmp.Name()) //nolint:errcheck // gone after the rename; removes it otherwise
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close() //nolint:errcheck,gosec // the write error is the one to report
		return fmt.Errorf("save record %s: %w", r.ID, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close() //nolint:errcheck,gosec // the sync error is the one to report
		return fmt.Errorf("save record %s: %w", r.ID, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save record %s: %w", r.ID, err)
	}
	if err := os.Rename(tmp.Name(), s.path(r.ID)); err != nil {
		return fmt.Errorf("save record %s: %w", r.ID, err)
	}
	return nil
}

// Delete removes a record; a missing one is not an error.
func (s *Store) Delete(id string) error {
	if err := os.Remove(s.path(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete record %s: %w", id, err)
	}
	return nil
}

// Load reads every record, ordered by id. A file that does not parse is an error: the agent must
// not start while it cannot account for a VM.
func (s *Store) Load() ([]Record, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("read state directory %s: %w", s.dir, err)
	}
	var records []Record
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || strings.HasPrefix(name, ".") || !strings.HasSuffix(name, suffix) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(s.dir, name))
		if err != nil {
			return nil, fmt.Errorf("read record %s: %w", name, err)
		}
		var r Record
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, fmt.Errorf("parse record %s: %w", name, err)
		}
		if r.ID+suffix != name {
			return nil, fmt.Errorf("record %s holds id %q", name, r.ID)
		}
		records = append(records, r)
	}
	sort.Slice(records, func(i, j int) bool { return records[i].ID < records[j].ID })
	return records, nil
}
