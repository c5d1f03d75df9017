// Package mtls is the provisioner's transport security: TLS 1.3 with a client certificate that
// must chain to the configured CA, certificate, key and CA re-read from their files when they
// change (so rotation needs no restart), certificate expiry as Prometheus gauges, and gRPC
// interceptors that let through only clients whose certificate identity (a URI SAN, e.g. a
// SPIFFE ID, or the subject CN) is on the allow-list. An allow-list entry containing "://" is a
// URI and matches only URI SANs; any other entry matches only the subject CN, so a CN spelled
// like an allowed URI is not that URI.
package mtls

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Config names the files and the clients allowed.
type Config struct {
	CertFile, KeyFile, CAFile string
	// AllowedIdentities are the client identities let in. An entry containing "://" (e.g.
	// spiffe://example.org/ns/x/sa/y) is compared with the certificate's URI SANs only; any
	// other entry with its subject CN only.
	AllowedIdentities []string
	// RecheckAfter is how long the files read last are trusted before a handshake reads them
	// again; zero reads them on every handshake.
	RecheckAfter time.Duration
	// Now is the clock for certificate validity and rechecks; time.Now when nil.
	Now    func() time.Time
	Logger logr.Logger
}

// Files serves the current certificate and CA from their files.
type Files struct {
	cfg Config
	// allowedURIs are matched against URI SANs only, allowedCNs against the subject CN only.
	allowedURIs, allowedCNs map[string]bool
	expiry                  *prometheus.GaugeVec

	mu        sync.Mutex
	checked   time.Time
	raw       [3][]byte
	cert      *tls.Certificate
	pool      *x509.CertPool
	serverTLS *tls.Config
}

// New reads the files once (failing if they do not make a valid pair and CA) and returns Files.
func New(cfg Config) (*Files, error) {
	if cfg.CertFile == "" || cfg.KeyFile == "" || cfg.CAFile == "" {
		return nil, errors.New("mtls: certificate, key and CA files are required")
	}
	if len(cfg.AllowedIdentities) == 0 {
		return nil, errors.New("mtls: at least one allowed client identity is required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	f := &Files{cfg: cfg, allowedURIs: map[string]bool{}, allowedCNs: map[string]bool{}, expiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "forgejo_runner_provisioner_certificate_expiry_timestamp_seconds",
		Help: "When the provisioner's serving certificate (cert=\"server\") and the earliest-expiring CA certificate (cert=\"ca\") expire, in Unix seconds.",
	}, []string{"cert"})}
	for _, id := range cfg.AllowedIdentities {
		switch {
		case strings.TrimSpace(id) == "":
			return nil, errors.New("mtls: an allowed client identity is empty")
		case isURI(id):
			f.allowedURIs[id] = true
		default:
			f.allowedCNs[id] = true
		}
	}
	if err := f.load(true); err != nil {
		return nil, err
	}
	return f, nil
}

// Expiry is the expiry gauge, for registration.
func (f *Files) Expiry() *prometheus.GaugeVec { return f.expiry }

// load re-reads the files when force is set or RecheckAfter has passed, and swaps in what they
// hold when it changed and is valid. A broken rotation (a key not matching its certificate,
// half-written files) keeps serving the last good pair.
func (f *Files) load(force bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.cfg.Now()
	if !force && f.cert != nil && now.Sub(f.checked) < f.cfg.RecheckAfter {
		return nil
	}
	f.checked = now
	var raw [3][]byte
	for i, name := range []string{f.cfg.CertFile, f.cfg.KeyFile, f.cfg.CAFile} {
		b, err := os.ReadFile(name) //nolint:gosec // configured by the administrator
		if err != nil {
			return fmt.Errorf("mtls: read %s: %w", name, err)
		}
		raw[i] = b
	}
	if f.cert != nil && bytes.Equal(raw[0], f.raw[0]) && bytes.Equal(raw[1], f.raw[1]) && bytes.Equal(raw[2], f.raw[2]) {
		return nil
	}
	cert, err := tls.X509KeyPair(raw[0], raw[1])
	if err != nil {
		return fmt.Errorf("mtls: load certificate %s and key %s: %w", f.cfg.CertFile, f.cfg.KeyFile, err)
	}
	pool := x509.NewCertPool()
	var caExpiry time.Time
	rest := raw[2]
	for len(rest) > 0 {
		var certs []*x509.Certificate
		certs, rest, err = parsePEMCerts(rest)
		if err != nil {
			return fmt.Errorf("mtls: CA %s: %w", f.cfg.CAFile, err)
		}
		for _, c := range certs {
			pool.AddCert(c)
			if caExpiry.IsZero() || c.NotAfter.Before(caExpiry) {
				caExpiry = c.NotAfter
			}
		}
	}
	if caExpiry.IsZero() {
		return fmt.Errorf("mtls: CA %s holds no certificate", f.cfg.CAFile)
	}
	f.raw, f.cert, f.pool = raw, &cert, pool
	f.serverTLS = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		Time:         f.cfg.Now,
	}
	f.expiry.WithLabelValues("server").Set(float64(cert.Leaf.NotAfter.Unix()))
	f.expiry.WithLabelValues("ca").Set(float64(caExpiry.Unix()))
	f.cfg.Logger.Info("loaded TLS files", "serverCertNotAfter", cert.Leaf.NotAfter, "serial", cert.Leaf.SerialNumber.String())
	return nil
}

// ServerConfig is a TLS configuration whose every handshake uses the current files.
func (f *Files) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			if err := f.load(false); err != nil {
				f.cfg.Logger.Error(err, "reloading TLS files; serving the last good ones")
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.serverTLS, nil
		},
	}
}

// ServerOptions are the gRPC server options: TLS credentials and the identity check.
func (f *Files) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.Creds(credentials.NewTLS(f.ServerConfig())),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			ctx, err := f.authorize(ctx)
			if err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			ctx, err := f.authorize(ss.Context())
			if err != nil {
				return err
			}
			return h(srv, &identityStream{ServerStream: ss, ctx: ctx})
		}),
	}
}

type identityStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *identityStream) Context() context.Context { return s.ctx }

type identityKey struct{}

// Identity is the authorised client identity a call carries ("" outside an authorised call).
func Identity(ctx context.Context) string {
	id, _ := ctx.Value(identityKey{}).(string)
	return id
}

// WithIdentity returns ctx carrying id, as the interceptors do; for tests of the API alone.
func WithIdentity(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// isURI tells an allow-list entry naming a URI SAN from one naming a subject CN.
func isURI(id string) bool { return strings.Contains(id, "://") }

// authorize finds the verified client certificate and the first of its identities on the
// allow-list: a URI SAN among the allowed URIs, else the subject CN among the allowed CNs.
func (f *Files) authorize(ctx context.Context) (context.Context, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no peer")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return nil, status.Error(codes.Unauthenticated, "no verified client certificate")
	}
	leaf := info.State.VerifiedChains[0][0]
	var seen []string
	for _, u := range leaf.URIs {
		id := u.String()
		if f.allowedURIs[id] {
			return WithIdentity(ctx, id), nil
		}
		seen = append(seen, id)
	}
	if cn := leaf.Subject.CommonName; cn != "" {
		if f.allowedCNs[cn] {
			return WithIdentity(ctx, cn), nil
		}
		seen = append(seen, "CN="+cn)
	}
	f.cfg.Logger.Info("refused a client identity", "identities", seen, "serial", leaf.SerialNumber.String())
	return nil, status.Errorf(codes.PermissionDenied, "client identity %v is not allowed", seen)
}
