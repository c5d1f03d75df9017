package runnerpool

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
)

// jsonPatchOp is one operation of an RFC 6902 JSON patch.
type jsonPatchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// recentRunnersField is status.recentRunners' JSON name: the one field patched item by item.
const recentRunnersField = "recentRunners"

// StatusPatch is the JSON patch that turns a pool's status from old, as read at resourceVersion,
// into updated. A busy pool retires a runner every few seconds and keeps up to 1,000 records of
// them: sending the whole status each time would cost a request of up to a megabyte per retired
// runner, so recentRunners is patched by the records it gained at its head and lost at its tail,
// and every other field, all small, is set whole. The patch carries resourceVersion, so that it
// fails with a conflict, as an update would, if the status changed since it was read: the item
// positions are those of old.
func StatusPatch(old, updated *v1alpha1.RunnerPoolStatus, resourceVersion string) (client.Patch, error) {
	ops := []jsonPatchOp{{Op: "replace", Path: "/metadata/resourceVersion", Value: resourceVersion}}
	if equality.Semantic.DeepEqual(old, &v1alpha1.RunnerPoolStatus{}) {
		// The object may have no status at all, and a path into it would not resolve.
		ops = append(ops, jsonPatchOp{Op: "add", Path: "/status", Value: updated})
		return rawJSONPatch(ops)
	}
	before, err := fieldsOf(old)
	if err != nil {
		return nil, err
	}
	after, err := fieldsOf(updated)
	if err != nil {
		return nil, err
	}
	for _, name := range sortedKeys(before) {
		if _, kept := after[name]; !kept {
			ops = append(ops, jsonPatchOp{Op: "remove", Path: "/status/" + name})
		}
	}
	for _, name := range sortedKeys(after) {
		value := after[name]
		if prev, ok := before[name]; ok && string(prev) == string(value) {
			continue
		}
		if _, ok := before[name]; ok && name == recentRunnersField {
			if items, ok := historyOps(old.RecentRunners, updated.RecentRunners); ok {
				ops = append(ops, items...)
				continue
			}
		}
		// "add" sets a member whether or not it is there.
		ops = append(ops, jsonPatchOp{Op: "add", Path: "/status/" + name, Value: value})
	}
	return rawJSONPatch(ops)
}

// historyOps are the operations that turn the history old into updated when updated is old with
// records added at its head and dropped from its tail, which is all AddRecord does; ok is false
// otherwise, and the list is then set whole.
func historyOps(old, updated []v1alpha1.RunnerRecord) (ops []jsonPatchOp, ok bool) {
	added := -1
	for a := 0; a <= len(updated); a++ {
		rest := updated[a:]
		if len(rest) <= len(old) && equality.Semantic.DeepEqual(rest, old[:len(rest)]) {
			added = a
			break
		}
	}
	if added < 0 {
		return nil, false
	}
	kept := len(updated) - added
	// From the tail, so that each index is still where old had it.
	for i := len(old) - 1; i >= kept; i-- {
		ops = append(ops, jsonPatchOp{Op: "remove", Path: "/status/" + recentRunnersField + "/" + strconv.Itoa(i)})
	}
	// The oldest of the new records first, each in front of the ones before it.
	for j := added - 1; j >= 0; j-- {
		ops = append(ops, jsonPatchOp{Op: "add", Path: "/status/" + recentRunnersField + "/0", Value: updated[j]})
	}
	return ops, true
}

func fieldsOf(status *v1alpha1.RunnerPoolStatus) (map[string]json.RawMessage, error) {
	data, err := json.Marshal(status)
	if err != nil {
		return nil, fmt.Errorf("encode pool status: %w", err)
	}
	fields := map[string]json.RawMessage{}
	if err := json.Unmarshal(data, &fields); err != nil {
		return nil, fmt.Errorf("decode pool status: %w", err)
	}
	return fields, nil
}

func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func rawJSONPatch(ops []jsonPatchOp) (client.Patch, error) {
	data, err := json.Marshal(ops)
	if err != nil {
		return nil, fmt.Errorf("encode status patch: %w", err)
	}
	return client.RawPatch(types.JSONPatchType, data), nil
}
