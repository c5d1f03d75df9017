package webhook

import "sync"

// dedupe remembers the last size delivery ids, first in first out. A replay comes within
// minutes of the original (a retrying proxy, a hand redelivery), so the oldest ids are the ones
// that can be forgotten, and a refresh on hit, as an LRU would do, buys nothing.
type dedupe struct {
	mu   sync.Mutex
	set  map[string]struct{}
	ring []string
	next int
}

func newDedupe(size int) *dedupe {
	return &dedupe{set: make(map[string]struct{}, size), ring: make([]string, size)}
}

// add records id and reports whether it was new. Checking and recording under one lock makes two
// concurrent deliveries of the same id reach the sink once.
func (d *dedupe) add(id string) bool {
	key := dedupeKey(id)
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.set[key]; ok {
		return false
	}
	if old := d.ring[d.next]; old != "" {
		delete(d.set, old)
	}
	d.ring[d.next] = key
	d.set[key] = struct{}{}
	d.next = (d.next + 1) % len(d.ring)
	return true
}
