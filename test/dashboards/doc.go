// Package dashboards checks the monitoring files shipped with the operator: the Grafana
// dashboard (config/grafana), the Prometheus alert rules (config/prometheus) and the metrics
// reference (docs/metrics.md). Its tests make sure the dashboard imports, every alert carries
// what an on-call person needs, every query is well-formed PromQL and every metric a query uses
// is documented. It has no code of its own outside the tests.
package dashboards
