package jobwatch

import "k8s.io/apimachinery/pkg/types"

// TriggerPools is Trigger limited to the connections the named pools poll through, where they
// cover the repository: what a webhook delivery signed with those pools' own secret may ask
// for, so that a pool's owner cannot make anyone else's connection poll. The repository's name
// is remembered for those connections only (for records of their jobs with that repo_id): the
// name comes from the pools' owner, who may name only their own. It returns how many
// connections it asked.
func (w *Watcher) TriggerPools(pools []types.NamespacedName, repo RepositoryRef, cause string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	asked := map[Connection]bool{}
	for _, key := range pools {
		reg, ok := w.pools[key]
		if !ok || asked[reg.conn] {
			continue
		}
		p := w.pollers[reg.conn]
		if p == nil || !p.covers(reg.conn, repo) {
			continue
		}
		asked[reg.conn] = true
		p.rememberRepository(repo.ID, repo.FullName)
		w.wantLocked(p, cause, w.trigger.FollowUps)
	}
	return len(asked)
}

// OfferPools is Offer limited to the named pools' connections, for a job event signed with those
// pools' own secret. It may move on only what those connections already list: a listed job
// that started running, or one that ended, with its result for the records. It never adds a
// job: only a poll may, because the dispatcher picks among every pool by the owner and
// repository ids a job carries, and in an event those are the signer's word. It returns whether
// it changed anything.
func (w *Watcher) OfferPools(pools []types.NamespacedName, job Job) bool {
	if job.Handle == "" || job.Status == "waiting" {
		return false
	}
	now := w.now()
	changed := map[Connection]bool{}
	w.mu.Lock()
	for _, key := range pools {
		reg, ok := w.pools[key]
		if !ok || changed[reg.conn] {
			continue
		}
		p := w.pollers[reg.conn]
		if p == nil {
			continue
		}
		listed, isKnown := p.jobs[job.Handle]
		_, isGone := p.gone[job.Handle]
		if !isKnown && !isGone {
			continue
		}
		// What the connection listed stands; the event brings only the new status.
		moved := listed
		if !isKnown {
			moved = Job{Handle: job.Handle}
		}
		moved.Status = job.Status
		if w.offerLocked(p, moved, now) {
			changed[reg.conn] = true
			w.changedLocked()
		}
	}
	w.mu.Unlock()
	for conn := range changed {
		w.notifyUsers(conn)
	}
	return len(changed) > 0
}
