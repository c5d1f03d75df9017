package jobwatch

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/promreg"
)

// PrometheusTimings exports job timings as histograms.
type PrometheusTimings struct {
	queueWait prometheus.Histogram
	execution prometheus.Histogram
}

// NewPrometheusTimings registers forgejo_runner_operator_job_queue_wait_seconds and
// forgejo_runner_operator_job_execution_seconds on reg (reusing them if already there).
func NewPrometheusTimings(reg prometheus.Registerer) (*PrometheusTimings, error) {
	buckets := prometheus.ExponentialBucketsRange(0.1, 4*3600, 16)
	wait, err := promreg.Register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "forgejo_runner_operator_job_queue_wait_seconds",
		Help:    "Time from a job being seen waiting to it being seen running, by poll or webhook.",
		Buckets: buckets,
	}))
	if err != nil {
		return nil, err
	}
	exec, err := promreg.Register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "forgejo_runner_operator_job_execution_seconds",
		Help:    "Time from a job being seen running to it being seen finished, by poll or webhook.",
		Buckets: buckets,
	}))
	if err != nil {
		return nil, err
	}
	return &PrometheusTimings{queueWait: wait, execution: exec}, nil
}

// ObserveQueueWait records one job's wait for a runner.
func (p *PrometheusTimings) ObserveQueueWait(d time.Duration) { p.queueWait.Observe(d.Seconds()) }

// ObserveExecution records one job's run time.
func (p *PrometheusTimings) ObserveExecution(d time.Duration) { p.execution.Observe(d.Seconds()) }
