// Package xdstest is test support for the xds-edge, as net/http/httptest
// is for net/http: a throw-away PKI that issues SPIFFE client and server
// certificates, mesh-compiled records built from go-control-plane types
// exactly as the policy-compiler writes them, a fake of the cert-authority's
// Sign and Bootstrap RPCs, and a simulated proxy (an xDS client, state of
// the world or delta, that ACKs or NACKs on demand).
//
// It is the one xDS test client of the repository's Go code: the edge's
// tests and the scale harness in tests/xdsload both use it. Like
// libs/bus/bustest, only tests and test tooling import it; no service binary
// links it (tests/stack's TestServiceBinariesCarryNoTestTooling checks).
package xdstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/openservicemesh/osm/libs/identity"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// CA is a throw-away certificate authority.
type CA struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte
	serial  int64
}

// NewCA makes a self-signed root.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), serial: 1}, nil
}

// ProxyURI is the URI SAN of the xDS client certificate that a proxy of the
// workload identity workload holds (the one the injector writes into its
// bootstrap, identity.UsageXDSClient); the xds-edge opens streams for no
// other. A string that is no workload identity is returned unchanged, for
// tests of what the edge refuses.
func ProxyURI(workload string) string {
	id, err := identity.Parse(workload)
	if err != nil {
		return workload
	}
	return id.URLFor(identity.UsageXDSClient).String()
}

// Pool is a cert pool holding the root.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// SignPublic issues a leaf for pub with the given URI SAN (may be empty),
// DNS names and IPs, valid for ttl.
func (ca *CA) SignPublic(pub any, uri string, dns []string, ips []net.IP, ttl time.Duration) ([]byte, *x509.Certificate, error) {
	ca.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial), Subject: pkix.Name{CommonName: "osm-test"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(ttl),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		DNSNames:    dns, IPAddresses: ips,
	}
	if uri != "" {
		u, err := url.Parse(uri)
		if err != nil {
			return nil, nil, err
		}
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), cert, nil
}

// Leaf issues a key pair and certificate with the URI SAN uri (and
// 127.0.0.1 / localhost), as a tls.Certificate plus its PEM files.
func (ca *CA) Leaf(uri string) (tls.Certificate, []byte, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, nil, err
	}
	certPEM, _, err := ca.SignPublic(&key.PublicKey, uri, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
	if err != nil {
		return tls.Certificate{}, nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return tls.Certificate{}, nil, nil, err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	return pair, certPEM, keyPEM, err
}

// Files are the PEM files WriteFiles wrote: the root, and a leaf's
// certificate and key.
type Files struct {
	Root, Cert, Key string
}

// WriteFiles writes, in dir, the root as root.pem and a fresh leaf with the
// URI SAN uri (see Leaf) as <name>.pem and <name>-key.pem.
func (ca *CA) WriteFiles(dir, name, uri string) (Files, error) {
	_, certPEM, keyPEM, err := ca.Leaf(uri)
	if err != nil {
		return Files{}, err
	}
	f := Files{Root: filepath.Join(dir, "root.pem"), Cert: filepath.Join(dir, name+".pem"), Key: filepath.Join(dir, name+"-key.pem")}
	for p, b := range map[string][]byte{f.Root: ca.CertPEM, f.Cert: certPEM, f.Key: keyPEM} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			return Files{}, err
		}
	}
	return f, nil
}

// ServerTLS is an mTLS server configuration: a serving leaf with URI SAN
// uri, requiring client certificates from ca.
func (ca *CA) ServerTLS(uri string) (*tls.Config, error) {
	pair, _, _, err := ca.Leaf(uri)
	if err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}, ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert}, nil
}

// ClientTLS is an mTLS client configuration presenting a leaf with URI SAN
// uri (empty: no client certificate) and trusting ca.
func (ca *CA) ClientTLS(uri string) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: ca.Pool(), ServerName: "localhost"}
	if uri == "" {
		return c, nil
	}
	pair, _, _, err := ca.Leaf(uri)
	if err != nil {
		return nil, err
	}
	c.Certificates = []tls.Certificate{pair}
	return c, nil
}

// Bundle is a mesh-trust bundle holding the root.
func (ca *CA) Bundle() *meshv1.TrustBundle {
	sum := sha256.Sum256(ca.Cert.Raw)
	id := hex.EncodeToString(sum[:])
	return &meshv1.TrustBundle{
		Roots:      []*meshv1.TrustRoot{{Id: id, CertificatePem: ca.CertPEM, Signing: true, NotBefore: timestamppb.New(ca.Cert.NotBefore), NotAfter: timestamppb.New(ca.Cert.NotAfter)}},
		Version:    id[:16],
		UpdateTime: timestamppb.Now(),
	}
}
