package caclient

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/openservicemesh/osm/libs/identity"
)

// testPKI is a root and leaves it signs, written to dir.
type testPKI struct {
	t    *testing.T
	dir  string
	key  *identity.Key
	cert *x509.Certificate
}

func newTestPKI(t *testing.T) *testPKI {
	key, err := identity.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.Private().PublicKey, key.Private())
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	p := &testPKI{t: t, dir: t.TempDir(), key: key, cert: cert}
	p.write("root.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	return p
}

func (p *testPKI) write(name string, b []byte) string {
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		p.t.Fatal(err)
	}
	return path
}

// leaf writes a leaf for the DNS name or URI given and returns its files.
func (p *testPKI) leaf(name, dns, uri string) (certPath, keyPath string) {
	key, err := identity.NewKey()
	if err != nil {
		p.t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	if dns != "" {
		tmpl.DNSNames = []string{dns}
	}
	if uri != "" {
		u, _ := url.Parse(uri)
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.Private().PublicKey, p.key.Private())
	if err != nil {
		p.t.Fatal(err)
	}
	keyPEM, err := key.PEM()
	if err != nil {
		p.t.Fatal(err)
	}
	return p.write(name+".crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), p.write(name+".key", keyPEM)
}

func TestConfigValidateNamesTheFlag(t *testing.T) {
	p := newTestPKI(t)
	root := filepath.Join(p.dir, "root.pem")
	cert, key := p.leaf("client", "", "spiffe://cluster.local/osm/xds-edge")
	for _, c := range []struct {
		c    Config
		want string
	}{
		{Config{TrustFile: root}, "--ca-addr"},
		{Config{Addr: DefaultAddr}, "--ca-trust-file"},
		{Config{Addr: DefaultAddr, TrustFile: "/does/not/exist"}, "--ca-trust-file"},
		{Config{Addr: DefaultAddr, TrustFile: root, CertFile: cert}, "--ca-client-key-file"},
		{Config{Addr: DefaultAddr, TrustFile: root, KeyFile: key}, "--ca-client-cert-file"},
		{Config{Addr: DefaultAddr, TrustFile: root, OwnCertTTL: time.Second}, "--control-plane-cert-ttl"},
	} {
		if err := c.c.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: err = %v, want one naming %s", c.c, err, c.want)
		}
	}
	ok := Config{Addr: DefaultAddr, TrustFile: root, CertFile: cert, KeyFile: key, OwnCertTTL: time.Hour}
	if err := ok.Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
	if err := ok.ValidateBootstrap("both overrides are set"); err == nil || !strings.Contains(err.Error(), "--ca-bootstrap-token-file") {
		t.Errorf("no credential: err = %v", err)
	}
	ok.Credential = Credential{File: filepath.Join(p.dir, "missing-token"), Type: "pre-shared"}
	if err := ok.ValidateBootstrap("x"); err == nil || !strings.Contains(err.Error(), "--ca-bootstrap-token-file") {
		t.Errorf("missing token file: err = %v", err)
	}
	ok.Credential = Credential{File: p.write("token", []byte("t\n")), Type: "bearer"}
	if err := ok.ValidateBootstrap("x"); err == nil || !strings.Contains(err.Error(), "--ca-bootstrap-token-type") {
		t.Errorf("bad token type: err = %v", err)
	}
	noOwn := Config{Addr: DefaultAddr, TrustFile: root}
	if _, err := noOwn.Dial(nil); err == nil || !strings.Contains(err.Error(), "--ca-client-cert-file") {
		t.Errorf("Dial with neither a file nor an own certificate: err = %v", err)
	}
}

// TestDialPresentsTheClientCertFile dials a real mTLS gRPC server: the CA
// is verified against --ca-trust-file and --ca-server-name, and the server
// sees the certificate of --ca-client-cert-file.
func TestDialPresentsTheClientCertFile(t *testing.T) {
	p := newTestPKI(t)
	srvCert, srvKey := p.leaf("server", "osm-cert-authority.osm-system.svc", "")
	pair, err := tls.LoadX509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(p.cert)
	seen := make(chan string, 4)
	stc := &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.VerifyClientCertIfGiven,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) > 0 && len(cs.PeerCertificates[0].URIs) > 0 {
				seen <- cs.PeerCertificates[0].URIs[0].String()
			} else {
				seen <- "none"
			}
			return nil
		}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.Creds(credentials.NewTLS(stc)))
	healthpb.RegisterHealthServer(s, health.NewServer())
	go func() { _ = s.Serve(lis) }()
	defer s.Stop()

	cert, key := p.leaf("client", "", "spiffe://cluster.local/osm/xds-edge")
	c := Config{Addr: lis.Addr().String(), ServerName: "osm-cert-authority.osm-system.svc", TrustFile: filepath.Join(p.dir, "root.pem"), CertFile: cert, KeyFile: key}
	check := func(conn *grpc.ClientConn, want string) {
		t.Helper()
		defer conn.Close()
		if _, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
		if got := <-seen; got != want {
			t.Errorf("the server saw %s, want %s", got, want)
		}
	}
	conn, err := c.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	check(conn, "spiffe://cluster.local/osm/xds-edge")
	conn, err = c.DialBootstrap()
	if err != nil {
		t.Fatal(err)
	}
	check(conn, "none")
}
