package webhook

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/openservicemesh/osm/libs/identity"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// ttlCA signs for the asked lifetime as the cert-authority does with
// --default-ttl 24h and --max-ttl 48h (clamp_ttl: cut to 48h; without
// it, over 48h is an error), and keeps the last request.
type ttlCA struct {
	cav1.CertificateAuthorityServiceClient // other methods: not called

	key  *ecdsa.PrivateKey
	last *cav1.SignRequest
}

func (f *ttlCA) Sign(_ context.Context, req *cav1.SignRequest, _ ...grpc.CallOption) (*cav1.SignResponse, error) {
	f.last = req
	csr, err := x509.ParseCertificateRequest(req.GetCsr())
	if err != nil {
		return nil, err
	}
	ttl := 24 * time.Hour
	if req.GetTtl() != nil {
		ttl = req.GetTtl().AsDuration()
	}
	if ttl > 48*time.Hour && req.GetClampTtl() {
		ttl = 48 * time.Hour
	}
	now := time.Now().Truncate(time.Second)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), URIs: csr.URIs, NotBefore: now, NotAfter: now.Add(ttl)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, csr.PublicKey, f.key)
	if err != nil {
		return nil, err
	}
	return &cav1.SignResponse{CertificateChainPem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

func (f *ttlCA) GetTrustBundle(context.Context, *cav1.GetTrustBundleRequest, ...grpc.CallOption) (*cav1.GetTrustBundleResponse, error) {
	return &cav1.GetTrustBundleResponse{TrustBundle: &meshv1.TrustBundle{Roots: []*meshv1.TrustRoot{{CertificatePem: []byte("root")}}}}, nil
}

// TestCAIssuerServiceLifetime: the service certificates of proxyless
// pods' bootstrap Secrets take the MeshConfig's lifetime
// (SetServiceLifetime), asked with clamp_ttl so that the CA cuts one over
// its maximum; the xDS client certificates keep --cert-ttl; 0 gives the
// service certificates --cert-ttl back.
func TestCAIssuerServiceLifetime(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &ttlCA{key: key}
	iss := &CAIssuer{Client: ca, TTL: time.Hour}
	id := identity.New("cluster.local", "grpc", "greeter")
	lifetime := func(u identity.Usage) time.Duration {
		t.Helper()
		c, err := iss.Issue(t.Context(), id, u)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := Leaf(c.ChainPEM)
		if err != nil {
			t.Fatal(err)
		}
		return leaf.NotAfter.Sub(leaf.NotBefore)
	}
	for _, c := range []struct {
		name         string
		set          time.Duration
		service, xds time.Duration
		clamp        bool
	}{
		{"none set: --cert-ttl", 0, time.Hour, time.Hour, false},
		{"2h", 2 * time.Hour, 2 * time.Hour, time.Hour, true},
		{"72h over the CA's maximum", 72 * time.Hour, 48 * time.Hour, time.Hour, true},
		{"back to none", 0, time.Hour, time.Hour, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			iss.SetServiceLifetime(c.set)
			if got := lifetime(identity.UsageService); got != c.service {
				t.Errorf("service certificate lifetime %s, want %s", got, c.service)
			}
			if ca.last.GetClampTtl() != c.clamp {
				t.Errorf("service certificate asked with clamp_ttl %v, want %v", ca.last.GetClampTtl(), c.clamp)
			}
			if got := lifetime(identity.UsageXDSClient); got != c.xds {
				t.Errorf("xDS client certificate lifetime %s, want --cert-ttl's %s", got, c.xds)
			}
			if ca.last.GetClampTtl() {
				t.Error("xDS client certificate asked with clamp_ttl")
			}
		})
	}
}
