package qemu_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/driver"
)

// BenchmarkBoot prints boot figures under TCG, from the create call: the guest took its token,
// the guest's init is up with its log stream acknowledged (guest ready), the runner started; for
// VMs booted one after another and all at once. Run it with
//
//	make bench-vm            (go test -run '^$' -bench Boot -benchtime 4x ./internal/provisioner/driver/qemu)
//
// b.N is the number of VMs. Figures are printed, not asserted: TCG on shared cores is slow and
// noisy; KVM boots the same guest in well under a second.
func BenchmarkBoot(b *testing.B) {
	for _, parallel := range []bool{false, true} {
		name := "sequential"
		if parallel {
			name = "parallel"
		}
		b.Run(name, func(b *testing.B) {
			e := newEnv(b)
			d := e.driver("", nil)
			n := b.N
			tokens := make([]time.Duration, n)
			ready := make([]time.Duration, n)
			runners := make([]time.Duration, n)
			boot := func(i int) {
				id := fmt.Sprintf("vm-bench-%d", i)
				reg := e.register(id) // no job queued: the runner finds none and ends
				begin := time.Now()
				started := make(chan struct{})
				var mu sync.Mutex
				s := spec(id, i, e, reg, func() {
					mu.Lock()
					tokens[i] = time.Since(begin)
					mu.Unlock()
				})
				s.OnGuestEvent = func(ev driver.GuestEvent) {
					mu.Lock()
					defer mu.Unlock()
					switch ev.Kind {
					case driver.GuestLogOpen:
						ready[i] = ev.Time.Sub(begin)
					case driver.GuestRunnerStarted:
						runners[i] = ev.Time.Sub(begin)
						close(started)
					}
				}
				if err := d.Create(context.Background(), s); err != nil {
					b.Errorf("create: %v", err)
					return
				}
				defer d.Destroy(context.Background(), id) //nolint:errcheck // best effort
				if err := d.Start(context.Background(), id); err != nil {
					b.Errorf("start: %v", err)
					return
				}
				select {
				case <-started:
				case <-time.After(5 * time.Minute):
					b.Errorf("%s: runner not started", id)
				}
			}
			b.ResetTimer()
			if parallel {
				var wg sync.WaitGroup
				for i := range n {
					wg.Add(1)
					go func() { defer wg.Done(); boot(i) }()
				}
				wg.Wait()
			} else {
				for i := range n {
					boot(i)
				}
			}
			b.StopTimer()
			p50t, p95t := percentiles(tokens)
			p50g, p95g := percentiles(ready)
			p50r, p95r := percentiles(runners)
			b.ReportMetric(p50r.Seconds(), "s-to-runner-p50")
			b.ReportMetric(p95r.Seconds(), "s-to-runner-p95")
			b.Logf("%s, %d VMs (TCG, %s): create→token p50 %s p95 %s; →guest ready p50 %s p95 %s; →runner started p50 %s p95 %s "+
				"(KVM would boot this guest in well under a second)",
				name, n, runtime.GOARCH, p50t, p95t, p50g, p95g, p50r, p95r)
		})
	}
}

func percentiles(ds []time.Duration) (p50, p95 time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0, 0
	}
	at := func(q float64) time.Duration {
		return s[min(len(s)-1, int(q*float64(len(s)-1)+0.5))].Round(time.Millisecond)
	}
	return at(0.5), at(0.95)
}
