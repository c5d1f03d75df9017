package forgejosim

import (
	"fmt"
	"net/http"
	"time"
)

// Fault makes one endpoint misbehave. Endpoint is one of the Endpoint* names (REST API, runner
// protocol) or "*" for every endpoint except the control API.
type Fault struct {
	Endpoint string `json:"endpoint"`
	// ErrorRate is the probability (0..1) that a call fails with StatusCode instead of being served.
	ErrorRate float64 `json:"error_rate,omitempty"`
	// StatusCode of an injected failure; default 500. A Connect client sees the matching code
	// (e.g. 503 → unavailable).
	StatusCode int `json:"status_code,omitempty"`
	// Latency is added before every call is served (or failed); in JSON, nanoseconds.
	Latency time.Duration `json:"latency,omitempty"`
	// RetryAfter, when set, is sent as the Retry-After header of an injected failure (delay
	// seconds or an HTTP date), as Forgejo's rate limiter or a proxy in front of it would.
	RetryAfter string `json:"retry_after,omitempty"`
}

// HeaderInjectedFault marks a response made by an injected fault rather than by the simulated
// Forgejo.
const HeaderInjectedFault = "X-Forgejosim-Injected-Fault"

// WebhookFaults disturb webhook deliveries.
type WebhookFaults struct {
	// DropRate is the probability (0..1) that a delivery is recorded but never sent.
	DropRate float64 `json:"drop_rate,omitempty"`
	// DuplicateRate is the probability (0..1) that a delivered event is sent a second time with
	// the same X-Forgejo-Delivery id, as a receiver behind a retrying proxy would see it.
	DuplicateRate float64 `json:"duplicate_rate,omitempty"`
}

// Faults is the whole fault configuration.
type Faults struct {
	Endpoints []Fault       `json:"endpoints,omitempty"`
	Webhooks  WebhookFaults `json:"webhooks"`
}

// SetFaults replaces the fault configuration.
func (s *Server) SetFaults(f Faults) error {
	for _, e := range f.Endpoints {
		if e.Endpoint == "" {
			return fmt.Errorf("set faults: a fault needs an endpoint (or \"*\")")
		}
		if e.ErrorRate < 0 || e.ErrorRate > 1 || e.Latency < 0 {
			return fmt.Errorf("set faults: endpoint %s: error rate must be within 0..1 and latency not negative", e.Endpoint)
		}
		if e.StatusCode != 0 && (e.StatusCode < 400 || e.StatusCode > 599) {
			return fmt.Errorf("set faults: endpoint %s: status code %d is not an error", e.Endpoint, e.StatusCode)
		}
	}
	if f.Webhooks.DropRate < 0 || f.Webhooks.DropRate > 1 || f.Webhooks.DuplicateRate < 0 || f.Webhooks.DuplicateRate > 1 {
		return fmt.Errorf("set faults: webhook rates must be within 0..1")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append([]Fault(nil), f.Endpoints...)
	s.hookFaults = f.Webhooks
	return nil
}

// ClearFaults removes every injected fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
	s.hookFaults = WebhookFaults{}
}

// Faults returns the current fault configuration.
func (s *Server) Faults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Faults{Endpoints: append([]Fault(nil), s.faults...), Webhooks: s.hookFaults}
}

// withFaults applies the faults aimed at endpoint before h serves the call.
func (s *Server) withFaults(endpoint string, h http.Handler) http.Handler {
	return s.withFaultsFor(func(*http.Request) string { return endpoint }, h)
}

// withFaultsFor is withFaults for a handler serving several endpoints, named by endpointOf.
func (s *Server) withFaultsFor(endpointOf func(*http.Request) string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		endpoint := endpointOf(r)
		var latency time.Duration
		failWith := 0
		retryAfter := ""
		s.mu.Lock()
		for _, f := range s.faults {
			if f.Endpoint != endpoint && f.Endpoint != "*" {
				continue
			}
			latency += f.Latency
			if failWith == 0 && s.chanceLocked(f.ErrorRate) {
				failWith = f.StatusCode
				if failWith == 0 {
					failWith = http.StatusInternalServerError
				}
				retryAfter = f.RetryAfter
			}
		}
		s.mu.Unlock()
		if latency > 0 {
			select {
			case <-time.After(latency):
			case <-r.Context().Done():
				return
			}
		}
		if failWith != 0 {
			s.logf("forgejosim: injected %d on %s %s", failWith, endpoint, r.URL.Path)
			if retryAfter != "" {
				w.Header().Set("Retry-After", retryAfter)
			}
			// Not Forgejo's answer but a proxy's or an overloaded server's: marked so that the
			// contract tests, which hold every other answer to Forgejo's API description, can
			// tell it apart. Clients ignore the header.
			w.Header().Set(HeaderInjectedFault, "1")
			writeJSON(w, failWith, APIError{Message: "injected fault", URL: s.publicURL(r) + "/api/swagger"})
			return
		}
		h.ServeHTTP(w, r)
	})
}
