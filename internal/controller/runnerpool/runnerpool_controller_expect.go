package runnerpool

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
)

// creationMemory is how long a created Runner is counted although the cache does not show it:
// far longer than a cache lags, short enough that a Runner deleted by someone else at once is not
// counted for long.
const creationMemory = time.Minute

// creations are the expectations of the pools: the Runners each created that its cache may not
// show yet. Without them a reconcile on a stale cache counts too few runners and goes past
// maxRunners or minIdle.
type creations struct {
	mu     sync.Mutex
	byPool map[types.UID]map[string]creation
}

type creation struct {
	at   time.Time
	warm bool
}

func (c *creations) add(pool types.UID, name string, warm bool, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byPool == nil {
		c.byPool = map[types.UID]map[string]creation{}
	}
	if c.byPool[pool] == nil {
		c.byPool[pool] = map[string]creation{}
	}
	c.byPool[pool][name] = creation{at: now, warm: warm}
}

// pending returns the pool's Runners created but not in listed, and how many of them are warm;
// it forgets those listed and those older than creationMemory.
func (c *creations) pending(pool types.UID, listed []v1alpha1.Runner, now time.Time) (names map[string]bool, warm int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	mine := c.byPool[pool]
	if len(mine) == 0 {
		return nil, 0
	}
	seen := make(map[string]bool, len(listed))
	for _, rn := range listed {
		seen[rn.Name] = true
	}
	names = map[string]bool{}
	for name, cr := range mine {
		if seen[name] || now.Sub(cr.at) > creationMemory {
			delete(mine, name)
			continue
		}
		names[name] = true
		if cr.warm {
			warm++
		}
	}
	return names, warm
}

func (c *creations) forget(pool types.UID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.byPool, pool)
}

// terminating counts the listed Runners being deleted: their pods may still run, so they hold
// their place under maxRunners until they are gone.
func terminating(listed []v1alpha1.Runner) int {
	n := 0
	for _, rn := range listed {
		if !rn.DeletionTimestamp.IsZero() {
			n++
		}
	}
	return n
}
