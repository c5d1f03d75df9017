package webhook

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/promreg"
)

// MetricDeliveriesTotal counts webhook deliveries by result.
const MetricDeliveriesTotal = "forgejo_runner_operator_webhook_deliveries_total"

// PrometheusObserver counts deliveries by result. Make one per registry.
type PrometheusObserver struct {
	deliveries *prometheus.CounterVec
}

var _ Observer = (*PrometheusObserver)(nil)

// NewPrometheusObserver registers the counter on reg (controller-runtime's metrics.Registry in
// the operator). If it is registered already, the existing collector is used, so a second
// observer on the same registry counts into the same series.
func NewPrometheusObserver(reg prometheus.Registerer) (*PrometheusObserver, error) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricDeliveriesTotal,
		Help: "Forgejo webhook deliveries received, by result (accepted, duplicate, ignored_event, bad_signature, ...).",
	}, []string{"result"})
	c, err := promreg.Register(reg, c)
	if err != nil {
		return nil, fmt.Errorf("register webhook metrics: %w", err)
	}
	// Every result is present from the start, so that a rate() over a result that has not
	// happened yet reads 0 rather than nothing.
	for _, r := range Results {
		c.WithLabelValues(string(r))
	}
	return &PrometheusObserver{deliveries: c}, nil
}

// ObserveDelivery implements Observer.
func (o *PrometheusObserver) ObserveDelivery(result Result) {
	o.deliveries.WithLabelValues(string(result)).Inc()
}
