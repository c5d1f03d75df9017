package forgejo_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
)

func TestPrometheusObserver(t *testing.T) {
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	obs, err := forgejo.NewPrometheusObserver(reg)
	mustNoErr(t, err, "new observer")
	// A second observer on the same registry shares the collectors instead of failing.
	obs2, err := forgejo.NewPrometheusObserver(reg)
	mustNoErr(t, err, "second observer")

	c := e.client(forgejo.OrganizationScope("acme"), e.token(forgejosim.OrganizationScope("acme")),
		func(cfg *forgejo.Config) { cfg.Observer = obs })
	c2 := e.client(forgejo.OrganizationScope("acme"), e.token(forgejosim.OrganizationScope("acme")),
		func(cfg *forgejo.Config) { cfg.Observer = obs2 })
	r1 := e.register(c, "metrics-one")
	e.register(c2, "metrics-two")
	_, err = c.GetRunner(ctx(t), r1.ID)
	mustNoErr(t, err, "get")
	mustNoErr(t, c.DeleteRunner(ctx(t), r1.ID), "delete")
	_, err = c.GetRunner(ctx(t), r1.ID)
	if err == nil {
		t.Fatal("get after delete succeeded")
	}

	families, err := reg.Gather()
	mustNoErr(t, err, "gather")
	counts := map[string]float64{}
	histograms := map[string]uint64{}
	endpoints := []string{forgejo.EndpointVersion, forgejo.EndpointRegisterRunner, forgejo.EndpointListRunners,
		forgejo.EndpointGetRunner, forgejo.EndpointDeleteRunner, forgejo.EndpointListJobs}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
				for _, s := range e.secrets {
					if strings.Contains(l.GetValue(), s) {
						t.Errorf("label %s=%q contains a token", l.GetName(), l.GetValue())
					}
				}
			}
			if !slices.Contains(endpoints, labels["endpoint"]) {
				t.Errorf("endpoint label %q is not a template", labels["endpoint"])
			}
			switch f.GetName() {
			case forgejo.MetricRequestsTotal:
				counts[labels["endpoint"]+" "+labels["code"]] = m.GetCounter().GetValue()
			case forgejo.MetricRequestDuration:
				histograms[labels["endpoint"]] = histogramCount(m.GetHistogram())
			default:
				t.Errorf("unexpected metric %s", f.GetName())
			}
		}
	}
	want := map[string]float64{
		"POST /runners 201": 2, "GET /runners/{id} 200": 1, "DELETE /runners/{id} 204": 1, "GET /runners/{id} 404": 1,
	}
	for k, v := range want {
		if counts[k] != v {
			t.Errorf("requests_total{%s} = %v, want %v (all: %v)", k, counts[k], v, counts)
		}
	}
	if histograms[forgejo.EndpointGetRunner] != 2 || histograms[forgejo.EndpointRegisterRunner] != 2 {
		t.Errorf("histogram counts %v", histograms)
	}
}

func histogramCount(h *dto.Histogram) uint64 { return h.GetSampleCount() }
