package forgejosim

import (
	"net/http/httptest"
	"testing"
)

// NewTestServer starts a Server on a loopback httptest.Server and returns it with the instance
// URL (no trailing slash). Both are shut down when the test ends.
func NewTestServer(tb testing.TB, opts Options) (*Server, string) {
	tb.Helper()
	s := New(opts)
	ts := httptest.NewServer(s)
	tb.Cleanup(func() {
		ts.Close()
		s.Close()
	})
	return s, ts.URL
}
