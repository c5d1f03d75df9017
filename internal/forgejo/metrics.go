package forgejo

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/promreg"
)

// Observer is told about every REST call the client makes: endpoint is one of the Endpoint*
// names, code the HTTP status ("200", "404") or "error" when no answer came.
type Observer interface {
	ObserveRequest(endpoint, code string, d time.Duration)
}

// ObserverFunc adapts a function to Observer.
type ObserverFunc func(endpoint, code string, d time.Duration)

// ObserveRequest calls f.
func (f ObserverFunc) ObserveRequest(endpoint, code string, d time.Duration) { f(endpoint, code, d) }

// Metric names.
const (
	MetricRequestsTotal   = "forgejo_runner_operator_forgejo_api_requests_total"
	MetricRequestDuration = "forgejo_runner_operator_forgejo_api_request_duration_seconds"
)

// PrometheusObserver counts calls by endpoint and code and times them by endpoint. Make one per
// registry and share it between clients.
type PrometheusObserver struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewPrometheusObserver registers the metrics on reg (controller-runtime's metrics.Registry in
// the operator). If they are registered already, the existing collectors are used, so building
// a second observer on the same registry is harmless.
func NewPrometheusObserver(reg prometheus.Registerer) (*PrometheusObserver, error) {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricRequestsTotal,
		Help: "Forgejo API requests by endpoint and HTTP status code (\"error\" when no answer came).",
	}, []string{"endpoint", "code"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    MetricRequestDuration,
		Help:    "Duration of Forgejo API requests by endpoint.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"endpoint"})
	var err error
	if requests, err = promreg.Register(reg, requests); err != nil {
		return nil, err
	}
	if duration, err = promreg.Register(reg, duration); err != nil {
		return nil, err
	}
	return &PrometheusObserver{requests: requests, duration: duration}, nil
}

// ObserveRequest implements Observer.
func (o *PrometheusObserver) ObserveRequest(endpoint, code string, d time.Duration) {
	o.requests.WithLabelValues(endpoint, code).Inc()
	o.duration.WithLabelValues(endpoint).Observe(d.Seconds())
}
