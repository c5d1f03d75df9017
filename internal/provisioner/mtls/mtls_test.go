package mtls_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/mtls"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/mtls/mtlstest"
)

const operatorID = "spiffe://brooktrails.org/ns/forgejo-runners/sa/forgejo-runner-operator"

type fixture struct {
	ca              *mtlstest.CA
	files           *mtls.Files
	addr            string
	now             time.Time
	certF, keyF, cF string
}

func start(t *testing.T) *fixture {
	t.Helper()
	now := time.Now()
	ca := mtlstest.NewCA(t, "provisioner CA", now)
	srvLeaf := ca.Issue(t, mtlstest.Opts{CN: "vmhost-1", Server: true, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour)})
	certF, keyF, caF := mtlstest.WriteFiles(t, t.TempDir(), srvLeaf, ca.PEM)
	files, err := mtls.New(mtls.Config{CertFile: certF, KeyFile: keyF, CAFile: caF,
		AllowedIdentities: []string{operatorID, "legacy-operator"}, Logger: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(files.ServerOptions()...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln) //nolint:errcheck,gosec // stopped below
	t.Cleanup(srv.Stop)
	return &fixture{ca: ca, files: files, addr: ln.Addr().String(), now: now, certF: certF, keyF: keyF, cF: caF}
}

func (f *fixture) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(f.ca.Cert)
	return p
}

// call makes one health check with the given client certificate (none when nil) and returns
// its error and the serving certificate's serial.
func (f *fixture) call(t *testing.T, cert *tls.Certificate) (string, error) {
	t.Helper()
	var mu sync.Mutex
	var serial string
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: f.pool(), ServerName: "localhost",
		VerifyConnection: func(cs tls.ConnectionState) error {
			mu.Lock()
			defer mu.Unlock()
			serial = cs.PeerCertificates[0].SerialNumber.String()
			return nil
		}}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	err := f.dial(t, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	mu.Lock()
	defer mu.Unlock()
	return serial, err
}

func (f *fixture) dial(t *testing.T, opt grpc.DialOption) error {
	t.Helper()
	conn, err := grpc.NewClient(f.addr, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close() //nolint:errcheck // test client
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

func (f *fixture) client(t *testing.T, o mtlstest.Opts) *tls.Certificate {
	t.Helper()
	if o.NotBefore.IsZero() {
		o.NotBefore = f.now.Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = f.now.Add(time.Hour)
	}
	c := f.ca.Issue(t, o).TLS(t)
	return &c
}

func TestRefusals(t *testing.T) {
	f := start(t)
	other := mtlstest.NewCA(t, "another CA", f.now)
	otherCert := other.Issue(t, mtlstest.Opts{URIs: []string{operatorID}, NotBefore: f.now.Add(-time.Hour), NotAfter: f.now.Add(time.Hour)}).TLS(t)

	cases := []struct {
		name string
		err  func() error
		want codes.Code
	}{
		{"plaintext", func() error { return f.dial(t, grpc.WithTransportCredentials(insecure.NewCredentials())) }, codes.Unavailable},
		{"no client certificate", func() error { _, err := f.call(t, nil); return err }, codes.Unavailable},
		{"wrong CA", func() error { _, err := f.call(t, &otherCert); return err }, codes.Unavailable},
		{"expired client", func() error {
			_, err := f.call(t, f.client(t, mtlstest.Opts{URIs: []string{operatorID}, NotBefore: f.now.Add(-48 * time.Hour), NotAfter: f.now.Add(-time.Hour)}))
			return err
		}, codes.Unavailable},
		{"identity not allowed", func() error {
			_, err := f.call(t, f.client(t, mtlstest.Opts{CN: "someone", URIs: []string{"spiffe://brooktrails.org/ns/x/sa/intruder"}}))
			return err
		}, codes.PermissionDenied},
		{"allowed URI SAN", func() error { _, err := f.call(t, f.client(t, mtlstest.Opts{URIs: []string{operatorID}})); return err }, codes.OK},
		{"allowed CN", func() error { _, err := f.call(t, f.client(t, mtlstest.Opts{CN: "legacy-operator"})); return err }, codes.OK},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.err()
			if got := status.Code(err); got != c.want {
				t.Fatalf("code %s (%v), want %s", got, err, c.want)
			}
		})
	}
}

func TestRotatedServerCertificateIsServed(t *testing.T) {
	f := start(t)
	good := f.client(t, mtlstest.Opts{URIs: []string{operatorID}})
	before, err := f.call(t, good)
	if err != nil {
		t.Fatal(err)
	}
	gauge := f.files.Expiry().WithLabelValues("server")
	firstExpiry := testutil.ToFloat64(gauge)

	rotated := f.ca.Issue(t, mtlstest.Opts{CN: "vmhost-1", Server: true, NotBefore: f.now.Add(-time.Minute), NotAfter: f.now.Add(72 * time.Hour)})
	mtlstest.WriteFiles(t, dirOf(f.certF), rotated, f.ca.PEM)

	after, err := f.call(t, good)
	if err != nil {
		t.Fatal(err)
	}
	if after == before {
		t.Fatalf("still serving certificate %s after rotation", before)
	}
	rc := rotated.TLS(t)
	leaf, _ := x509.ParseCertificate(rc.Certificate[0])
	if after != leaf.SerialNumber.String() {
		t.Fatalf("serving %s, want the rotated %s", after, leaf.SerialNumber)
	}
	if got := testutil.ToFloat64(gauge); got == firstExpiry || got != float64(rotated.NotAfter.Unix()) {
		t.Fatalf("expiry gauge %v, want %v", got, rotated.NotAfter.Unix())
	}

	// A broken rotation (key of another certificate) keeps the last good pair in service.
	broken := f.ca.Issue(t, mtlstest.Opts{CN: "vmhost-1", Server: true, NotBefore: f.now, NotAfter: f.now.Add(time.Hour)})
	broken.KeyPEM = rotated.KeyPEM
	mtlstest.WriteFiles(t, dirOf(f.certF), broken, f.ca.PEM)
	if still, err := f.call(t, good); err != nil || still != after {
		t.Fatalf("after a broken rotation: %v, serving %s (want %s)", err, still, after)
	}
}

func dirOf(path string) string { return filepath.Dir(path) }
