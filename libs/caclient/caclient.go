// Package caclient is the client side of the cert-authority for every
// component: dialing it over TLS with the trust bundle, obtaining a
// control-plane certificate with Bootstrap (a ServiceAccount token, or the
// dev pre-shared token), and issuing workload certificates with Sign. The
// private key is always generated here and never leaves the process.
package caclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/openservicemesh/osm/libs/identity"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// RootPool returns the pool of the bundle's roots.
func RootPool(b *meshv1.TrustBundle) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	n := 0
	for _, r := range b.GetRoots() {
		if pool.AppendCertsFromPEM(r.GetCertificatePem()) {
			n++
		}
	}
	if n == 0 {
		return nil, errors.New("the trust bundle holds no root certificate")
	}
	return pool, nil
}

// RootsPEM concatenates the bundle's roots.
func RootsPEM(b *meshv1.TrustBundle) []byte {
	var out []byte
	for _, r := range b.GetRoots() {
		out = append(out, r.GetCertificatePem()...)
	}
	return out
}

// SigningRootPEM is the PEM of the bundle's root that signs now, nil when
// none is marked signing.
func SigningRootPEM(b *meshv1.TrustBundle) []byte {
	for _, r := range b.GetRoots() {
		if r.GetSigning() {
			return r.GetCertificatePem()
		}
	}
	return nil
}

// Dial connects to the CA at addr, verifying it against the bundle's roots
// and serverName, presenting cert when it is not nil.
func Dial(addr string, b *meshv1.TrustBundle, serverName string, cert *tls.Certificate) (*grpc.ClientConn, error) {
	pool, err := RootPool(b)
	if err != nil {
		return nil, err
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: serverName}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		return nil, fmt.Errorf("dial cert-authority %s: %w", addr, err)
	}
	return conn, nil
}

// Issued is a certificate with its key, as PEM, and the parsed pair.
type Issued struct {
	ChainPEM, KeyPEM []byte
	Pair             tls.Certificate
	NotAfter         time.Time
	// Bundle is the trust bundle the CA returned with a Bootstrap, or nil.
	Bundle *meshv1.TrustBundle
}

// issued pairs the chain the CA returned with key. It checks what
// tls.X509KeyPair would (a chain of certificates whose leaf holds key's
// public key) but parses the leaf once and the key not at all.
func issued(chain []byte, key *identity.Key) (*Issued, error) {
	keyPEM, err := key.PEM()
	if err != nil {
		return nil, err
	}
	var ders [][]byte
	for rest := chain; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			ders = append(ders, b.Bytes)
		}
	}
	if len(ders) == 0 {
		return nil, errors.New("the CA returned an unusable certificate: no PEM certificate in the chain")
	}
	leaf, err := x509.ParseCertificate(ders[0])
	if err != nil {
		return nil, fmt.Errorf("the CA returned an unusable certificate: %w", err)
	}
	if !key.Private().PublicKey.Equal(leaf.PublicKey) {
		return nil, errors.New("the CA returned an unusable certificate: it does not hold the requested key")
	}
	pair := tls.Certificate{Certificate: ders, PrivateKey: key.Private(), Leaf: leaf}
	return &Issued{ChainPEM: chain, KeyPEM: keyPEM, Pair: pair, NotAfter: leaf.NotAfter}, nil
}

// BootstrapRequest is what Bootstrap needs.
type BootstrapRequest struct {
	Token     string
	TokenType cav1.TokenType
	Role      cav1.ComponentRole
	TTL       time.Duration
	// DNSNames are added to the certificate as DNS SANs. The CA allows them
	// only to roles that serve HTTPS by host name (the injector-webhook) and
	// only for Services of the control-plane namespace: <svc>.<ns>,
	// <svc>.<ns>.svc, <svc>.<ns>.svc.cluster.local. See ServiceDNSNames.
	DNSNames []string
}

// ServiceDNSNames are the names a Service is reached at inside the cluster,
// most specific last: <svc>.<ns>, <svc>.<ns>.svc and
// <svc>.<ns>.svc.<clusterDomain> (clusterDomain empty means cluster.local).
// The kube-apiserver verifies a webhook Service's certificate against
// <svc>.<ns>.svc.
func ServiceDNSNames(service, namespace, clusterDomain string) []string {
	if clusterDomain == "" {
		clusterDomain = "cluster.local"
	}
	base := service + "." + namespace
	return []string{base, base + ".svc", base + ".svc." + clusterDomain}
}

// Bootstrap obtains a control-plane certificate for role.
func Bootstrap(ctx context.Context, c cav1.CertificateAuthorityServiceClient, r BootstrapRequest) (*Issued, error) {
	key, err := identity.NewKey()
	if err != nil {
		return nil, err
	}
	csr, err := key.CSRDER()
	if err != nil {
		return nil, err
	}
	req := &cav1.BootstrapRequest{Token: r.Token, TokenType: r.TokenType, Role: r.Role,
		Csr: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}), DnsNames: r.DNSNames}
	if r.TTL > 0 {
		req.Ttl = durationpb.New(r.TTL)
	}
	resp, err := c.Bootstrap(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("bootstrap as %s: %w", r.Role, err)
	}
	out, err := issued(resp.GetCertificateChainPem(), key)
	if err != nil {
		return nil, err
	}
	out.Bundle = resp.GetTrustBundle()
	return out, nil
}

// Usages maps a certificate usage to its name in the CA's API.
var Usages = map[identity.Usage]cav1.CertificateUsage{
	identity.UsageService:   cav1.CertificateUsage_CERTIFICATE_USAGE_SERVICE,
	identity.UsageXDSClient: cav1.CertificateUsage_CERTIFICATE_USAGE_XDS_CLIENT,
}

// Sign issues a workload certificate for id, for usage u (the CA lets each
// caller role sign one usage only).
func Sign(ctx context.Context, c cav1.CertificateAuthorityServiceClient, id identity.ID, u identity.Usage, ttl time.Duration) (*Issued, error) {
	return SignWith(ctx, c, id, u, SignOptions{TTL: ttl})
}

// PoolFromFile reads the PEM certificates in path into a pool; a file with
// none is an error.
func PoolFromFile(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return p, nil
}
