package runnerpool

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/cluster"
)

func historyRecord(i int) v1alpha1.RunnerRecord {
	at := metav1.NewTime(time.Date(2026, 12, 1, 10, 0, i%60, 0, time.UTC))
	return v1alpha1.RunnerRecord{
		Name: fmt.Sprintf("ci-%d", i), UID: k8stypes.UID(fmt.Sprintf("uid-%d", i)), JobID: int64(i), CreatedAt: &at, FinishedAt: &at,
		Outcome: v1alpha1.OutcomeSucceeded, Reason: "Completed", Message: "the runner ran its job and exited",
	}
}

// The pool's status is patched, not replaced: applied by the real API server, the patch gives
// exactly the status computed, for a pool that had none, for a history that gained records and
// lost its oldest, for a history edited in place, and for fields removed; a patch against a
// status that changed since it was read is a conflict, as an update is; and a retired runner in a
// pool with a long history costs a request of one record, not of the whole history.
func TestStatusPatchGivesTheComputedStatus(t *testing.T) {
	c := cluster.StartForTest(t, cluster.Options{APIServerOnly: true})
	ctx := t.Context()
	pool := &v1alpha1.RunnerPool{
		ObjectMeta: metav1.ObjectMeta{Name: "ci", Namespace: "default"},
		Spec: v1alpha1.RunnerPoolSpec{
			Forgejo: v1alpha1.ForgejoConnection{URL: "https://forgejo.example", Scope: v1alpha1.ScopeGlobal, TokenSecretRef: v1alpha1.SecretKeySelector{Name: "t"}},
			Labels:  []string{"docker"},
		},
	}
	if err := c.Client.Create(ctx, pool); err != nil {
		t.Fatal(err)
	}
	apply := func(t *testing.T, want *v1alpha1.RunnerPoolStatus) int {
		t.Helper()
		patch, err := StatusPatch(&pool.Status, want, pool.ResourceVersion)
		if err != nil {
			t.Fatal(err)
		}
		data, err := patch.Data(pool)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Client.Status().Patch(ctx, pool, patch); err != nil {
			t.Fatalf("patch %s: %v", data, err)
		}
		var got v1alpha1.RunnerPool
		if err := c.Client.Get(ctx, client.ObjectKeyFromObject(pool), &got); err != nil {
			t.Fatal(err)
		}
		if !equality.Semantic.DeepEqual(got.Status, *want) {
			gotJSON, _ := json.Marshal(got.Status)
			wantJSON, _ := json.Marshal(want)
			t.Fatalf("after patch %s\n got %s\nwant %s", data, gotJSON, wantJSON)
		}
		*pool = got
		return len(data)
	}

	first := &v1alpha1.RunnerPoolStatus{ObservedGeneration: 1, Desired: 2, Current: 1, Idle: 1,
		Conditions: []metav1.Condition{{Type: ConditionReady, Status: metav1.ConditionTrue, Reason: "Ready", Message: "ok",
			LastTransitionTime: metav1.NewTime(time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC))}}}
	for i := range 3 {
		first.RecentRunners = AddRecord(first.RecentRunners, historyRecord(i), 4)
	}
	apply(t, first)

	grown := pool.Status.DeepCopy()
	for i := 3; i < 6; i++ {
		grown.RecentRunners = AddRecord(grown.RecentRunners, historyRecord(i), 4)
	}
	grown.Busy = 1
	apply(t, grown)

	edited := pool.Status.DeepCopy()
	edited.RecentRunners[2].JobResult = "failure"
	edited.JobFailures = []v1alpha1.JobFailure{{Handle: "h", JobID: 9, Failures: 1}}
	apply(t, edited)

	emptied := pool.Status.DeepCopy()
	emptied.RecentRunners, emptied.JobFailures, emptied.Busy = nil, nil, 0
	apply(t, emptied)

	stale, err := StatusPatch(&pool.Status, first, "1")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Client.Status().Patch(ctx, pool.DeepCopy(), stale); !apierrors.IsConflict(err) {
		t.Fatalf("a patch of a status read at an old resourceVersion: %v, want a conflict", err)
	}

	long := pool.Status.DeepCopy()
	for i := range 1000 {
		long.RecentRunners = AddRecord(long.RecentRunners, historyRecord(100+i), 1000)
	}
	whole := apply(t, long)
	retired := pool.Status.DeepCopy()
	retired.RecentRunners = AddRecord(retired.RecentRunners, historyRecord(5000), 1000)
	one := apply(t, retired)
	if one*100 > whole {
		t.Fatalf("retiring one runner with 1,000 records of history sent %d bytes; setting the history whole, %d", one, whole)
	}
	t.Logf("status patch for one retired runner: %d bytes; the whole 1,000-record history: %d bytes", one, whole)
}
