package jobwatch

import "k8s.io/apimachinery/pkg/types"

// TriggerPools is Trigger limited to the connections the named pools poll through, where they
// cover the repository: what a webhook delivery signed with those pools' own secret may ask
// for, so that a pool's owner cannot make anyone else's connection poll. Unlike Trigger, it does
// not remember the repository's name for records: the name comes from a pool's owner, who may
// not name other pools' repositories. It returns how many connections it asked.
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
		w.wantLocked(p, cause, w.trigger.FollowUps)
	}
	return len(asked)
}
