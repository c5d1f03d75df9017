package runnerpool

import (
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	v1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jobwatch"
)

func TestRunnerNameForHandleIsStableAndValid(t *testing.T) {
	long := "a-pool-name-that-goes-on-and-on-well-past-what-fits-into-a-label-value-x"
	for _, pool := range []string{"p", long} {
		a, b := RunnerNameForHandle(pool, "handle-1"), RunnerNameForHandle(pool, "handle-1")
		if a != b {
			t.Fatalf("same handle gave %q and %q", a, b)
		}
		if a == RunnerNameForHandle(pool, "handle-2") {
			t.Fatalf("two handles share the name %q", a)
		}
		if errs := validation.IsDNS1123Label(a); len(errs) > 0 {
			t.Fatalf("%q is not a valid name: %v", a, errs)
		}
	}
}

func TestAddRecordKeepsNewestFirstWithinTheLimit(t *testing.T) {
	var history []v1alpha1.RunnerRecord
	for i := range 5 {
		history = AddRecord(history, v1alpha1.RunnerRecord{Name: fmt.Sprintf("r%d", i)}, 3)
	}
	if len(history) != 3 || history[0].Name != "r4" || history[2].Name != "r2" {
		t.Fatalf("history = %v", history)
	}
	// Recording the same runner twice (a retry after a crash) changes nothing.
	if again := AddRecord(history, v1alpha1.RunnerRecord{Name: "r3"}, 3); len(again) != 3 || again[0].Name != "r4" {
		t.Fatalf("duplicate record changed history: %v", again)
	}
	if none := AddRecord(nil, v1alpha1.RunnerRecord{Name: "x"}, 0); len(none) != 0 {
		t.Fatalf("limit 0 kept %v", none)
	}
}

func TestRecordCarriesTheJobAndOutcome(t *testing.T) {
	code := int32(0)
	rn := &v1alpha1.Runner{
		ObjectMeta: metav1.ObjectMeta{Name: "r"},
		Spec:       v1alpha1.RunnerSpec{Job: &v1alpha1.JobRef{ID: 9, Handle: "h"}},
		Status: v1alpha1.RunnerStatus{
			Outcome: v1alpha1.OutcomeSucceeded, ExitCode: &code,
			Registration: &v1alpha1.Registration{UUID: "u"},
			Conditions:   []metav1.Condition{{Type: "Ended", Reason: "TaskRan", Message: "m"}},
		},
	}
	rec := Record(rn)
	if rec.JobID != 9 || rec.Handle != "h" || rec.UUID != "u" || rec.Outcome != v1alpha1.OutcomeSucceeded || rec.Reason != "TaskRan" || *rec.ExitCode != 0 {
		t.Fatalf("record = %+v", rec)
	}
	if Record(&v1alpha1.Runner{}).Outcome != v1alpha1.OutcomeError {
		t.Fatalf("a runner without outcome must be recorded as Error")
	}
}

func TestBuildRunner(t *testing.T) {
	pool := &v1alpha1.RunnerPool{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ci"}}
	rn := BuildRunner(pool, "p-1", &jobwatch.Job{ID: 3, Handle: "h", RunsOn: []string{"docker"}})
	if rn.Spec.Mode != v1alpha1.ModeEphemeral || rn.Spec.Job.Handle != "h" || rn.Labels[v1alpha1.PoolLabel] != "p" || rn.Namespace != "ci" {
		t.Fatalf("runner = %+v", rn)
	}
	if idle := BuildRunner(pool, "", nil); idle.Spec.Job != nil {
		t.Fatalf("idle runner has a job")
	}
}
