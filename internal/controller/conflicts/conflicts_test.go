package conflicts

import (
	"errors"
	"fmt"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

func TestRetryQuietensOnlyConflicts(t *testing.T) {
	gr := schema.GroupResource{Group: "forgejo.brooktrails.org", Resource: "runnerpools"}
	conflict := fmt.Errorf("update status of pool ci: %w", apierrors.NewConflict(gr, "ci", errors.New("the object has been modified")))
	res, err := Retry(t.Context(), reconcile.Result{}, conflict)
	if err != nil || res.RequeueAfter != RetryAfter {
		t.Errorf("a wrapped conflict: %+v, %v; want a retry after %s and no error", res, err, RetryAfter)
	}
	other := fmt.Errorf("create runner: %w", apierrors.NewForbidden(gr, "ci", errors.New("no")))
	if _, err := Retry(t.Context(), reconcile.Result{}, other); !errors.Is(err, other) {
		t.Errorf("another error was swallowed: %v", err)
	}
	want := reconcile.Result{RequeueAfter: time.Minute}
	if res, err := Retry(t.Context(), want, nil); err != nil || res != want {
		t.Errorf("a success was changed: %+v, %v", res, err)
	}
}
