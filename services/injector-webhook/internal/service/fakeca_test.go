package service

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// fakeCA is a cert-authority for the service's tests, served over TLS on
// loopback: it signs the CSRs it gets with its current root (for the TTL
// asked, or its own), counts the signatures, and serves and streams its
// trust bundle, whose roots a test can change.
type fakeCA struct {
	cav1.UnimplementedCertificateAuthorityServiceServer

	addr      string
	trustFile string // verifies the CA's serving certificate
	signs     atomic.Int64
	// maxTTL, when positive, shortens the lifetimes asked for, as a CA
	// may (the injector's --cert-ttl is at least a minute).
	maxTTL atomic.Int64

	mu      sync.Mutex
	signer  *root   // signs
	roots   []*root // the bundle
	version int
	changed chan struct{} // closed and replaced at each bundle change
}

// root is a CA certificate and its key.
type root struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newRoot(t testing.TB, name string) *root {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &root{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// startFakeCA serves a fake CA until the test ends.
func startFakeCA(t *testing.T) *fakeCA {
	t.Helper()
	r := newRoot(t, "fake-ca-root-1")
	ca := &fakeCA{signer: r, roots: []*root{r}, version: 1, changed: make(chan struct{})}
	srvCert, srvKey := selfSigned(t, time.Now().Add(time.Hour))
	pair, err := tls.X509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	ca.trustFile = filepath.Join(t.TempDir(), "ca-trust.pem")
	if err := os.WriteFile(ca.trustFile, srvCert, 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ca.addr = ln.Addr().String()
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}})))
	cav1.RegisterCertificateAuthorityServiceServer(srv, ca)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return ca
}

// args are the injector's flags that point it at the fake CA.
func (ca *fakeCA) args() []string {
	return []string{"--ca-addr", ca.addr, "--ca-trust-file", ca.trustFile}
}

// rotate makes next the signing root and the bundle roots.
func (ca *fakeCA) rotate(signer *root, bundle ...*root) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	ca.signer, ca.roots = signer, bundle
	ca.version++
	close(ca.changed)
	ca.changed = make(chan struct{})
}

func (ca *fakeCA) bundle() (*meshv1.TrustBundle, <-chan struct{}) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	tb := &meshv1.TrustBundle{Version: fmt.Sprint(ca.version)}
	for _, r := range ca.roots {
		tb.Roots = append(tb.Roots, &meshv1.TrustRoot{Id: r.cert.Subject.CommonName, CertificatePem: r.pem})
	}
	return tb, ca.changed
}

// Sign implements cav1.CertificateAuthorityServiceServer.
func (ca *fakeCA) Sign(_ context.Context, req *cav1.SignRequest) (*cav1.SignResponse, error) {
	ca.signs.Add(1)
	csr, err := x509.ParseCertificateRequest(req.GetCsr())
	if err != nil {
		return nil, err
	}
	ttl := time.Hour
	if req.GetTtl() != nil {
		ttl = req.GetTtl().AsDuration()
	}
	if m := time.Duration(ca.maxTTL.Load()); m > 0 {
		ttl = min(ttl, m)
	}
	ca.mu.Lock()
	signer := ca.signer
	ca.mu.Unlock()
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(now.UnixNano()), URIs: csr.URIs, NotBefore: now, NotAfter: now.Add(ttl),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer.cert, csr.PublicKey, signer.key)
	if err != nil {
		return nil, err
	}
	return &cav1.SignResponse{CertificateChainPem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// GetTrustBundle implements cav1.CertificateAuthorityServiceServer.
func (ca *fakeCA) GetTrustBundle(context.Context, *cav1.GetTrustBundleRequest) (*cav1.GetTrustBundleResponse, error) {
	tb, _ := ca.bundle()
	return &cav1.GetTrustBundleResponse{TrustBundle: tb}, nil
}

// WatchTrustBundle implements cav1.CertificateAuthorityServiceServer.
func (ca *fakeCA) WatchTrustBundle(_ *cav1.WatchTrustBundleRequest, stream grpc.ServerStreamingServer[cav1.WatchTrustBundleResponse]) error {
	for {
		tb, changed := ca.bundle()
		if err := stream.Send(&cav1.WatchTrustBundleResponse{TrustBundle: tb}); err != nil {
			return err
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return nil
		}
	}
}
