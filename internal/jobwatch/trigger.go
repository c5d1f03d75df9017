package jobwatch

import (
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// Defaults of triggered polls.
const (
	// DefaultCoalesceWindow is the least time between two polls of one connection, however
	// many deliveries and runner ends ask for one: a flood costs one poll per window.
	DefaultCoalesceWindow = time.Second
)

// DefaultFollowUps are the extra polls after a webhook's. Forgejo v15.0.3 runs its webhook
// notifier before its Actions notifier (services/webhook/notifier.go registers at init,
// services/actions/init.go later), so a push's delivery is queued before the run's jobs are
// inserted (services/actions/notifier_helper.go), and a fast receiver can list the jobs before
// they are there.
var DefaultFollowUps = []time.Duration{1500 * time.Millisecond, 5 * time.Second}

// DefaultRunnerEndFollowUps are the extra polls after a runner ends: Forgejo releases the jobs
// that `needs:` the ended one from its job emitter queue, shortly after the task's last report
// (services/actions/job_emitter.go), and sends no webhook when it does.
var DefaultRunnerEndFollowUps = []time.Duration{2 * time.Second}

// TriggerOptions tune the polls that webhooks and runner ends ask for.
type TriggerOptions struct {
	// Window is the least time between two polls of a connection; 0 means
	// DefaultCoalesceWindow.
	Window time.Duration
	// FollowUps are the delays, after a webhook, of extra polls; nil means DefaultFollowUps.
	FollowUps []time.Duration
	// RunnerEndFollowUps are the delays, after a runner's end, of extra polls; nil means
	// DefaultRunnerEndFollowUps.
	RunnerEndFollowUps []time.Duration
}

// SetTriggerOptions sets how triggered polls are spaced; call it before Start.
func (w *Watcher) SetTriggerOptions(o TriggerOptions) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if o.Window <= 0 {
		o.Window = DefaultCoalesceWindow
	}
	if o.FollowUps == nil {
		o.FollowUps = DefaultFollowUps
	}
	if o.RunnerEndFollowUps == nil {
		o.RunnerEndFollowUps = DefaultRunnerEndFollowUps
	}
	w.trigger = o
}

// RepositoryRef names a repository as a webhook delivery does.
type RepositoryRef struct {
	// FullName is "owner/name".
	FullName string
	// ID and OwnerID are 0 when unknown.
	ID, OwnerID int64
}

// wantedPoll is a poll asked for: not before at, and the reason, which becomes the Via of the
// jobs it finds.
type wantedPoll struct {
	at    time.Time
	cause string
}

// Trigger asks for a poll now, and the follow-ups, of every connection on the Forgejo instance at
// url whose scope covers the repository; cause says why (it becomes the Via of jobs those polls
// find first). It returns how many connections it asked. Polls are coalesced: each connection
// is polled at most once per window, and a poll asked for while one is under way runs after it,
// since that one's list may predate the jobs.
func (w *Watcher) Trigger(url string, repo RepositoryRef, cause string) int {
	url = strings.TrimSuffix(url, "/")
	w.mu.Lock()
	defer w.mu.Unlock()
	asked := 0
	for conn, p := range w.pollers {
		if conn.URL != url || !p.covers(conn, repo) {
			continue
		}
		p.rememberRepository(repo.ID, repo.FullName)
		w.wantLocked(p, cause, w.trigger.FollowUps)
		asked++
	}
	return asked
}

// Poll asks for a poll, and the follow-ups, of the pool's connection because one of its runners
// ended: the jobs that needed that runner's job may be waiting now, and Forgejo 15 sends no
// webhook to say so.
func (w *Watcher) Poll(key types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if reg, ok := w.pools[key]; ok {
		if p := w.pollers[reg.conn]; p != nil {
			w.wantLocked(p, "poll after a runner of "+key.String()+" ended", w.trigger.RunnerEndFollowUps)
		}
	}
}

// wantLocked records a poll wanted now and after each follow-up delay. Wanted polls less than a
// window apart are one: the earlier time stands, since a poll then serves both (a later one might
// come too late for the earlier wish). None is earlier than a window after the last poll began.
func (w *Watcher) wantLocked(p *poller, cause string, followUps []time.Duration) {
	now := w.now()
	add := func(at time.Time) {
		if earliest := p.lastStart.Add(w.trigger.Window); at.Before(earliest) {
			at = earliest
		}
		defer slices.SortFunc(p.wanted, func(a, b wantedPoll) int { return a.at.Compare(b.at) })
		for i, wp := range p.wanted {
			switch d := at.Sub(wp.at); {
			case d >= 0 && d < w.trigger.Window:
				return // wanted already, a little earlier
			case d < 0 && d > -w.trigger.Window:
				p.wanted[i] = wantedPoll{at: at, cause: cause} // wanted a little later: bring it forward
				return
			}
		}
		p.wanted = append(p.wanted, wantedPoll{at: at, cause: cause})
	}
	add(now)
	for _, d := range followUps {
		add(now.Add(d))
	}
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// takeDueLocked is called as a poll begins: it drops the wanted polls this one serves and
// returns the cause of the first of them, "" for a periodic poll.
func (p *poller) takeDueLocked(start time.Time) string {
	cause := ""
	kept := p.wanted[:0]
	for _, wp := range p.wanted {
		if wp.at.After(start) {
			kept = append(kept, wp)
		} else if cause == "" {
			cause = wp.cause
		}
	}
	p.wanted = kept
	p.lastStart = start
	return cause
}

// nextPollLocked is when the poller should poll next: the first wanted poll, or a whole
// interval after the last one.
func (p *poller) nextPollLocked(interval, window time.Duration) time.Time {
	next := p.lastStart.Add(interval)
	if len(p.wanted) > 0 && p.wanted[0].at.Before(next) {
		next = p.wanted[0].at
	}
	// Never two polls within a window, whatever was wanted.
	return latest(next, p.lastStart.Add(window))
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// covers reports whether the connection's scope covers the repository. A user scope's owner is
// the token's user, whose id is resolved from Forgejo or learnt from the jobs its polls list;
// until it is known any repository may be the user's, so it is polled (one more coalesced poll
// costs little; a job left waiting costs a poll interval).
func (p *poller) covers(conn Connection, repo RepositoryRef) bool {
	if kind, _, _ := strings.Cut(conn.Scope, " "); kind == "user" {
		return !p.coverage.known || repo.OwnerID == 0 || p.coverage.OwnerID == repo.OwnerID
	}
	return conn.Covers(repo.FullName)
}

// maxRepositoryNames bounds the repository names a connection remembers from webhooks.
const maxRepositoryNames = 10000

// rememberRepository keeps a repository's name by id, so jobs that polls list (which carry only
// repo_id) can be named in records. The caller holds the watcher's lock.
func (p *poller) rememberRepository(id int64, fullName string) {
	if id == 0 || fullName == "" {
		return
	}
	if p.repoNames == nil || len(p.repoNames) >= maxRepositoryNames {
		p.repoNames = map[int64]string{}
	}
	p.repoNames[id] = fullName
}
