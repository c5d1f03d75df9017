package promreg_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/promreg"
)

func TestASecondRegistrationGetsTheFirstCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	opts := prometheus.CounterOpts{Name: "things_total", Help: "Things."}
	first, err := promreg.Register(reg, prometheus.NewCounter(opts))
	if err != nil {
		t.Fatal(err)
	}
	second, err := promreg.Register(reg, prometheus.NewCounter(opts))
	if err != nil {
		t.Fatal(err)
	}
	second.Inc()
	if first != second {
		t.Fatal("the second registration did not return the collector registered first")
	}
	// A collector of another type under the same name is an error, not a silent swap.
	if _, err := promreg.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{Name: "things_total", Help: "Things."})); err == nil {
		t.Fatal("a gauge was registered over a counter of the same name")
	}
}
