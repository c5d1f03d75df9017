package mtls_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
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
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/mtls"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/mtls/mtlstest"
)

const operatorID = "spiffe://brooktrails.org/ns/forgejo-runners/sa/forgejo-runner-operator"

type fixture struct {
	ca              *mtlstest.CA
	srvLeaf         mtlstest.Leaf
	files           *mtls.Files
	svc             *whoami
	addr            string
	now             time.Time
	certF, keyF, cF string
}

// start serves health and whoami with mtls, allowing operatorID (a URI) and legacy-operator
// (a CN); tune changes the configuration before New.
func start(t *testing.T, tune ...func(*mtls.Config)) *fixture {
	t.Helper()
	now := time.Now()
	ca := mtlstest.NewCA(t, "provisioner CA", now)
	srvLeaf := ca.Issue(t, mtlstest.Opts{CN: "vmhost-1", Server: true, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour)})
	certF, keyF, caF := mtlstest.WriteFiles(t, t.TempDir(), srvLeaf, ca.PEM)
	cfg := mtls.Config{CertFile: certF, KeyFile: keyF, CAFile: caF,
		AllowedIdentities: []string{operatorID, "legacy-operator"}, Logger: logr.Discard()}
	for _, fn := range tune {
		fn(&cfg)
	}
	files, err := mtls.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(files.ServerOptions()...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	who := &whoami{}
	srv.RegisterService(&whoamiDesc, who)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln) //nolint:errcheck,gosec // stopped below
	t.Cleanup(srv.Stop)
	return &fixture{ca: ca, srvLeaf: srvLeaf, files: files, svc: who, addr: ln.Addr().String(), now: now, certF: certF, keyF: keyF, cF: caF}
}

// whoami is a test service whose handlers answer the identity their context carries: Who
// (unary) once, Watch (server streaming) three times. It counts the handlers that ran.
type whoami struct {
	mu   sync.Mutex
	runs int
}

func (w *whoami) ran() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.runs
}

func (w *whoami) identity(ctx context.Context) (*wrapperspb.StringValue, error) {
	w.mu.Lock()
	w.runs++
	w.mu.Unlock()
	id := mtls.Identity(ctx)
	if id == "" {
		return nil, status.Error(codes.Internal, "handler ran without an identity")
	}
	return wrapperspb.String(id), nil
}

var whoamiDesc = grpc.ServiceDesc{
	ServiceName: "mtlstest.Whoami",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Who",
		Handler: func(srv any, ctx context.Context, dec func(any) error, in grpc.UnaryServerInterceptor) (any, error) {
			req := &emptypb.Empty{}
			if err := dec(req); err != nil {
				return nil, err
			}
			h := func(ctx context.Context, _ any) (any, error) { return srv.(*whoami).identity(ctx) }
			if in == nil {
				return h(ctx, req)
			}
			return in(ctx, req, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/mtlstest.Whoami/Who"}, h)
		},
	}},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Watch",
		ServerStreams: true,
		Handler: func(srv any, ss grpc.ServerStream) error {
			if err := ss.RecvMsg(&emptypb.Empty{}); err != nil {
				return err
			}
			for range 3 {
				id, err := srv.(*whoami).identity(ss.Context())
				if err != nil {
					return err
				}
				if err := ss.SendMsg(id); err != nil {
					return err
				}
			}
			return nil
		},
	}},
}

// whoamiConn connects with the given client certificate.
func (f *fixture) whoamiConn(t *testing.T, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: f.pool(), ServerName: "localhost", Certificates: []tls.Certificate{*cert}}
	conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// who makes a unary Who call and returns the identity the handler saw.
func (f *fixture) who(t *testing.T, cert *tls.Certificate) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := &wrapperspb.StringValue{}
	err := f.whoamiConn(t, cert).Invoke(ctx, "/mtlstest.Whoami/Who", &emptypb.Empty{}, out)
	return out.GetValue(), err
}

// watch makes a streaming Watch call and returns the identities streamed.
func (f *fixture) watch(t *testing.T, cert *tls.Certificate) ([]string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := f.whoamiConn(t, cert).NewStream(ctx, &whoamiDesc.Streams[0], "/mtlstest.Whoami/Watch")
	if err != nil {
		return nil, err
	}
	if err := cs.SendMsg(&emptypb.Empty{}); err != nil {
		return nil, err
	}
	if err := cs.CloseSend(); err != nil {
		return nil, err
	}
	var ids []string
	for {
		out := &wrapperspb.StringValue{}
		if err := cs.RecvMsg(out); errors.Is(err, io.EOF) {
			return ids, nil
		} else if err != nil {
			return ids, err
		}
		ids = append(ids, out.GetValue())
	}
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

// TestIdentityMatching: allow-list entries with "://" match URI SANs only, others the subject
// CN only; the identity a handler sees is the one matched, on unary and streaming RPCs alike,
// and a refused call runs no handler.
func TestIdentityMatching(t *testing.T) {
	f := start(t)
	cases := []struct {
		name string
		opts mtlstest.Opts
		want string // "" for PERMISSION_DENIED
	}{
		{"allowed URI SAN", mtlstest.Opts{CN: "anything", URIs: []string{operatorID}}, operatorID},
		{"allowed CN", mtlstest.Opts{CN: "legacy-operator"}, "legacy-operator"},
		{"allowed URI SAN before allowed CN", mtlstest.Opts{CN: "legacy-operator", URIs: []string{operatorID}}, operatorID},
		{"unknown URI SAN, allowed CN", mtlstest.Opts{CN: "legacy-operator", URIs: []string{"spiffe://brooktrails.org/ns/x/sa/intruder"}}, "legacy-operator"},
		{"unknown URI SAN and CN", mtlstest.Opts{CN: "someone", URIs: []string{"spiffe://brooktrails.org/ns/x/sa/intruder"}}, ""},
		{"CN spelled like an allowed URI", mtlstest.Opts{CN: operatorID}, ""},
		{"CN spelled like an allowed URI, unknown URI SAN", mtlstest.Opts{CN: operatorID, URIs: []string{"spiffe://brooktrails.org/ns/x/sa/intruder"}}, ""},
		{"URI SAN equal to an allowed CN", mtlstest.Opts{CN: "someone", URIs: []string{"legacy-operator"}}, ""},
		{"no CN, URI SAN equal to an allowed CN", mtlstest.Opts{URIs: []string{"legacy-operator"}}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cert := f.client(t, c.opts)
			before := f.svc.ran()
			id, err := f.who(t, cert)
			ids, serr := f.watch(t, cert)
			if c.want == "" {
				if status.Code(err) != codes.PermissionDenied || status.Code(serr) != codes.PermissionDenied {
					t.Fatalf("unary %v, stream %v; want PERMISSION_DENIED for both", err, serr)
				}
				if len(ids) != 0 {
					t.Fatalf("refused stream received %q", ids)
				}
				if ran := f.svc.ran() - before; ran != 0 {
					t.Fatalf("%d handlers ran for a refused client", ran)
				}
				return
			}
			if err != nil || id != c.want {
				t.Fatalf("unary: %v, identity %q; want %q", err, id, c.want)
			}
			if serr != nil || len(ids) != 3 || ids[0] != c.want || ids[1] != c.want || ids[2] != c.want {
				t.Fatalf("stream: %v, identities %q; want %q three times", serr, ids, c.want)
			}
		})
	}
}

func TestNewRefusesAnEmptyIdentity(t *testing.T) {
	ca := mtlstest.NewCA(t, "ca", time.Now())
	leaf := ca.Issue(t, mtlstest.Opts{CN: "vmhost", Server: true, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)})
	certF, keyF, caF := mtlstest.WriteFiles(t, t.TempDir(), leaf, ca.PEM)
	_, err := mtls.New(mtls.Config{CertFile: certF, KeyFile: keyF, CAFile: caF, AllowedIdentities: []string{operatorID, " "}, Logger: logr.Discard()})
	if err == nil {
		t.Fatal("New accepted an empty allowed identity")
	}
}

// TestClientCARotation: replacing the CA file changes which clients are let in, without a
// restart: both CAs during the overlap, then only the new one.
func TestClientCARotation(t *testing.T) {
	f := start(t)
	dir := dirOf(f.certF)
	newCA := mtlstest.NewCA(t, "provisioner CA 2", f.now.Add(time.Hour)) // expires an hour after the old one
	oldClient := f.client(t, mtlstest.Opts{URIs: []string{operatorID}})
	nc := newCA.Issue(t, mtlstest.Opts{URIs: []string{operatorID}, NotBefore: f.now.Add(-time.Hour), NotAfter: f.now.Add(time.Hour)}).TLS(t)
	newClient := &nc

	check := func(step string, cert *tls.Certificate, want codes.Code) {
		t.Helper()
		if _, err := f.call(t, cert); status.Code(err) != want {
			t.Fatalf("%s: %v, want %s", step, err, want)
		}
	}
	check("old CA's client before", oldClient, codes.OK)
	check("new CA's client before", newClient, codes.Unavailable)

	mtlstest.WriteFiles(t, dir, f.srvLeaf, append(append([]byte{}, f.ca.PEM...), newCA.PEM...))
	check("old CA's client during the overlap", oldClient, codes.OK)
	check("new CA's client during the overlap", newClient, codes.OK)

	mtlstest.WriteFiles(t, dir, f.srvLeaf, newCA.PEM)
	check("new CA's client after", newClient, codes.OK)
	check("old CA's client after", oldClient, codes.Unavailable)
	if got, want := testutil.ToFloat64(f.files.Expiry().WithLabelValues("ca")), float64(newCA.Cert.NotAfter.Unix()); got != want {
		t.Fatalf("CA expiry gauge %v, want the new CA's %v", got, want)
	}
}

// clock is a settable clock for Config.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// TestRecheckAfter: with RecheckAfter set, the files are not read again until that long after
// the last read, and are then.
func TestRecheckAfter(t *testing.T) {
	clk := &clock{t: time.Now()}
	f := start(t, func(c *mtls.Config) { c.RecheckAfter = 10 * time.Second; c.Now = clk.Now })
	good := f.client(t, mtlstest.Opts{URIs: []string{operatorID}})
	serving := func(step string) string {
		t.Helper()
		s, err := f.call(t, good)
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		return s
	}
	rotate := func() string {
		t.Helper()
		leaf := f.ca.Issue(t, mtlstest.Opts{CN: "vmhost-1", Server: true, NotBefore: f.now.Add(-time.Hour), NotAfter: f.now.Add(48 * time.Hour)})
		mtlstest.WriteFiles(t, dirOf(f.certF), leaf, f.ca.PEM)
		c := leaf.TLS(t)
		return c.Leaf.SerialNumber.String()
	}

	first := serving("start")
	second := rotate()
	clk.Add(9 * time.Second)
	if got := serving("9s after the first read"); got != first {
		t.Fatalf("9s after the first read serving %s, want the first %s (not re-read yet)", got, first)
	}
	clk.Add(2 * time.Second)
	if got := serving("11s after the first read"); got != second {
		t.Fatalf("11s after the first read serving %s, want the rotated %s", got, second)
	}

	// The next recheck counts from that read.
	third := rotate()
	clk.Add(5 * time.Second)
	if got := serving("5s after the second read"); got != second {
		t.Fatalf("5s after the second read serving %s, want %s", got, second)
	}
	clk.Add(6 * time.Second)
	if got := serving("11s after the second read"); got != third {
		t.Fatalf("11s after the second read serving %s, want %s", got, third)
	}
}
