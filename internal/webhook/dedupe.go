package webhook

import (
	"sync"
	"time"
)

// DefaultReplayWindow is how long a verified delivery is remembered.
//
// Why a body, and why an hour. Forgejo's signature (X-Forgejo-Signature, an HMAC-SHA256 of the
// body) covers no header and no time, so the delivery id (X-Forgejo-Delivery) proves nothing:
// whoever saw one signed body (on the wire, in a proxy's log, or in the hook's delivery history,
// which Forgejo shows with its headers to the repository's administrators) can send it again
// under any id. The verified body's HMAC is the only key a replay cannot change.
//
// A genuine Forgejo v15.0.3 does not send one body twice by itself: a hook task is marked
// delivered before it is sent and never retried (services/webhook/deliver.go, Deliver and
// models/webhook/hooktask.go, MarkTaskDelivered), and the payloads of the events that can start
// a run carry what makes them unique (a push its ref, before and after commits; a pull request
// its head and updated_at; an action_run_* its run id and times; modules/structs/hook.go).
// Three things do repeat a body: "Redeliver" in the hook's settings (ReplayHookTask copies the
// stored PayloadContent into a new task with a new UUID, and a Forgejo-type hook sends
// PayloadContent as the body, services/webhook/default.go: the bytes are equal), a second hook
// of the same event signed with the same secret (a repository's and its organization's hook:
// one poll serves both), and the rare push that returns a branch to where it was within the
// window. None loses anything by being dropped: a redelivery's jobs were polled for when
// the original arrived, and the periodic poll finds whatever a dropped delivery would have
// pointed at, one poll interval later at worst. A "duplicate" answer is shown in the hook's
// delivery history, so an administrator who redelivers sees why nothing happened.
//
// So the window trades memory against how often a captured body can act again: at most once
// per window, each time asking for no more than one coalesced poll of its own pools (or, for a
// job event, offering a job the next poll corrects). An hour makes that negligible and keeps,
// at DefaultDedupeSize entries, about 5 deliveries a second for a whole hour before the fallback
// below begins, far above what a Forgejo instance sends for the events that start runs.
const DefaultReplayWindow = time.Hour

// dedupe remembers verified deliveries, each by its body's HMAC and its delivery id, for a
// window of time and up to a number of entries, whichever ends first.
//
// Memory is bounded by size; the window is kept unless more than size deliveries are verified
// within it. Then the oldest delivery of the signer that holds the most is forgotten: deliveries
// are kept apart by the secret that verified them (signer), and only a holder of a secret can
// add deliveries under it, so whoever floods the memory, even with a valid secret of their own,
// evicts their own deliveries first and never another signer's while that signer holds no more
// than its share. A replay of someone else's body stays a replay for the whole window.
type dedupe struct {
	mu      sync.Mutex
	window  time.Duration
	size    int
	total   int
	seen    map[string]struct{}
	signers map[string]*signerLog
}

// signerLog is one signer's deliveries, oldest first.
type signerLog struct {
	entries []seenEntry
	head    int
}

func (l *signerLog) len() int { return len(l.entries) - l.head }

func (l *signerLog) oldest() seenEntry { return l.entries[l.head] }

func (l *signerLog) pop() seenEntry {
	e := l.entries[l.head]
	l.entries[l.head] = seenEntry{}
	l.head++
	// Compacting when half the slice is dead keeps popping O(1) amortized and the slice no
	// larger than twice what it holds.
	if l.head > len(l.entries)/2 {
		l.entries = append(l.entries[:0:0], l.entries[l.head:]...)
		l.head = 0
	}
	return e
}

type seenEntry struct {
	at time.Time
	// keys are the body's and the delivery id's keys in dedupe.seen; the second is "" when the
	// delivery had no id.
	keys [2]string
}

func newDedupe(size int, window time.Duration) *dedupe {
	return &dedupe{window: window, size: size, seen: map[string]struct{}{}, signers: map[string]*signerLog{}}
}

// add records a verified delivery and reports whether it was new: its body's HMAC (mac) and its
// delivery id (id, may be "") both unseen under signer within the window. Checking and recording
// under one lock makes two concurrent deliveries of the same body reach the sink once.
func (d *dedupe) add(signer string, mac []byte, id string, now time.Time) bool {
	bodyKey := signer + "\x00b" + string(mac)
	idKey := ""
	if id != "" {
		idKey = signer + "\x00i" + dedupeKey(id)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if l := d.signers[signer]; l != nil {
		d.expireLocked(signer, l, now)
	}
	if _, ok := d.seen[bodyKey]; ok {
		return false
	}
	if idKey != "" {
		if _, ok := d.seen[idKey]; ok {
			return false
		}
	}
	if d.total >= d.size {
		for s, l := range d.signers {
			d.expireLocked(s, l, now)
		}
	}
	if d.total >= d.size {
		d.evictLocked()
	}
	l := d.signers[signer]
	if l == nil {
		l = &signerLog{}
		d.signers[signer] = l
	}
	l.entries = append(l.entries, seenEntry{at: now, keys: [2]string{bodyKey, idKey}})
	d.seen[bodyKey] = struct{}{}
	if idKey != "" {
		d.seen[idKey] = struct{}{}
	}
	d.total++
	return true
}

// expireLocked forgets the signer's deliveries older than the window.
func (d *dedupe) expireLocked(signer string, l *signerLog, now time.Time) {
	for l.len() > 0 && now.Sub(l.oldest().at) >= d.window {
		d.forgetLocked(l.pop())
	}
	if l.len() == 0 {
		delete(d.signers, signer)
	}
}

// evictLocked forgets the oldest delivery of the signer holding the most.
func (d *dedupe) evictLocked() {
	var (
		most   *signerLog
		signer string
	)
	for s, l := range d.signers {
		if most == nil || l.len() > most.len() {
			most, signer = l, s
		}
	}
	if most == nil {
		return
	}
	d.forgetLocked(most.pop())
	if most.len() == 0 {
		delete(d.signers, signer)
	}
}

func (d *dedupe) forgetLocked(e seenEntry) {
	for _, k := range e.keys {
		if k != "" {
			delete(d.seen, k)
		}
	}
	d.total--
}

// stats returns how many deliveries and signers are remembered, for tests.
func (d *dedupe) stats() (deliveries, keys, signers int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.total, len(d.seen), len(d.signers)
}
