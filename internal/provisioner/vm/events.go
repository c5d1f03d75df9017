package vm

import (
	"time"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/state"
)

// EventKind names a moment in a VM's life.
type EventKind string

// What the manager reports, in the order a VM usually meets them.
const (
	// EventCreated: the record is written; the driver is about to make the VM.
	EventCreated EventKind = "Created"
	// EventStarted: the driver made the VM and its guest boots.
	EventStarted EventKind = "Started"
	// EventGuestReady: the guest's init is up and its log stream was acknowledged.
	EventGuestReady EventKind = "GuestReady"
	// EventRunnerStarted: the guest started forgejo-runner.
	EventRunnerStarted EventKind = "RunnerStarted"
	// EventRunnerExited: the runner ended (Event.ExitCode); the guest powers off next.
	EventRunnerExited EventKind = "RunnerExited"
	// EventStopped: the hypervisor process ended; the record stays until deleted or lapsed.
	EventStopped EventKind = "Stopped"
	// EventFailed: making or starting the VM failed (Event.Message says why).
	EventFailed EventKind = "Failed"
	// EventAdopted: a restarted provisioner took over a running VM.
	EventAdopted EventKind = "Adopted"
	// EventDestroyed: nothing of the VM is left on the host (Event.Reason says why).
	EventDestroyed EventKind = "Destroyed"
	// EventDriverError: a driver operation (Event.Reason) failed.
	EventDriverError EventKind = "DriverError"
)

// Reasons a VM is destroyed.
const (
	ReasonDeleted     = "Deleted"
	ReasonLeaseLapsed = "LeaseLapsed"
	ReasonRecovered   = "NotAdoptable"
)

// Event is one moment of one VM. Record is the VM's record at that moment (it never holds a
// token); Time is when it happened.
type Event struct {
	Kind     EventKind
	Time     time.Time
	Record   state.Record
	Reason   string
	Message  string
	ExitCode int
}

// Since is how long after the VM's creation the event happened.
func (e Event) Since() time.Duration { return e.Time.Sub(e.Record.CreateTime) }

func (m *Manager) emit(ev Event) {
	if m.cfg.Events == nil {
		return
	}
	if ev.Time.IsZero() {
		ev.Time = m.cfg.Clock.Now()
	}
	m.cfg.Events(ev)
}

func (m *Manager) driverError(id, op string, err error) {
	m.mu.Lock()
	r := m.vms[id]
	var rec state.Record
	if r != nil {
		rec = *r
	} else {
		rec = state.Record{ID: id, Driver: m.cfg.Driver.Name()}
	}
	m.mu.Unlock()
	m.emit(Event{Kind: EventDriverError, Record: rec, Reason: op, Message: err.Error()})
}

// onGuestEvent records a guest's milestone on its record and reports it.
func (m *Manager) onGuestEvent(id string) func(driver.GuestEvent) {
	return func(ge driver.GuestEvent) {
		at := ge.Time
		if at.IsZero() {
			at = m.cfg.Clock.Now()
		}
		var kind EventKind
		var rec state.Record
		// Each milestone counts once, the first time: the guest is not trusted, and a repeated
		// one would only skew the figures and cost a write of the record.
		m.updateIf(id, func(r *state.Record) bool {
			switch {
			case ge.Kind == driver.GuestLogOpen && r.GuestReadyTime.IsZero():
				kind, r.GuestReadyTime = EventGuestReady, at
			case ge.Kind == driver.GuestRunnerStarted && r.RunnerStartTime.IsZero():
				kind, r.RunnerStartTime = EventRunnerStarted, at
			case ge.Kind == driver.GuestRunnerExited && r.RunnerExitTime.IsZero():
				kind, r.RunnerExitTime, r.RunnerExitCode = EventRunnerExited, at, ge.ExitCode
			default:
				return false
			}
			rec = *r
			return true
		})
		if kind != "" && rec.ID != "" { // a VM deleted meanwhile has no more moments
			m.emit(Event{Kind: kind, Time: at, Record: rec, ExitCode: ge.ExitCode})
		}
	}
}
