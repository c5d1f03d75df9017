package errreport

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/getsentry/sentry-go"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"sigs.k8s.io/controller-runtime/pkg/controller"
)

// recovered is a reconcile panic seen by the panic handler, kept until controller-runtime logs
// it as "Reconciler error" with the reconcile's key/values. The error it logs ("panic: V
// [recovered]") has lost the stack, which the handler still has: it runs inside the recover.
type recovered struct {
	value any
	stack *sentry.Stacktrace
}

// maxPanics bounds the panics waiting for their log line; each one's line follows at once, so
// only a storm of panics could fill it.
const maxPanics = 256

var (
	// active is the Reporter the panic handler feeds. utilruntime.PanicHandlers is a global
	// list, so the handler is appended once and follows whichever Reporter is open.
	active      atomic.Pointer[Reporter]
	installOnce sync.Once
)

func installPanicHandler(r *Reporter) {
	active.Store(r)
	installOnce.Do(func() {
		utilruntime.PanicHandlers = append(utilruntime.PanicHandlers, func(ctx context.Context, v any) {
			if r := active.Load(); r != nil {
				r.onPanic(ctx, v)
			}
		})
	})
}

func uninstallPanicHandler(r *Reporter) { active.CompareAndSwap(r, nil) }

// onPanic runs inside controller-runtime's recover, so the stack is still the panicking one.
func (r *Reporter) onPanic(ctx context.Context, v any) {
	stack := sentry.NewStacktrace()
	id := string(controller.ReconcileIDFromContext(ctx))
	if id == "" {
		// Not a reconcile (another user of utilruntime.HandleCrash): no log line will follow with
		// key/values, so report it now, without tags.
		r.capture(report{err: fmt.Errorf("panic: %v", v), msg: "panic", panic: &recovered{value: v, stack: stack}})
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.panics) >= maxPanics {
		clear(r.panics)
	}
	r.panics[id] = recovered{value: v, stack: stack}
}

// takePanic returns the panic recovered in the reconcile, if err is controller-runtime's error
// for it.
func (r *Reporter) takePanic(reconcileID string, err error) (recovered, bool) {
	if reconcileID == "" || err == nil || !strings.HasPrefix(err.Error(), "panic: ") {
		return recovered{}, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.panics[reconcileID]
	if ok {
		delete(r.panics, reconcileID)
	}
	return p, ok
}
