package webhook

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/openservicemesh/osm/libs/identity"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// fakeCA is a hand-written fake of the CA client's Sign and
// GetTrustBundle: it signs CSRs with a throwaway key and serves a bundle
// whose calls can be held.
type fakeCA struct {
	cav1.CertificateAuthorityServiceClient // other methods: not called

	key  *ecdsa.PrivateKey
	mu   sync.Mutex
	root string        // the PEM GetTrustBundle returns
	hold chan struct{} // when non-nil, GetTrustBundle waits for it to close
	gets int
}

func (f *fakeCA) Sign(_ context.Context, req *cav1.SignRequest, _ ...grpc.CallOption) (*cav1.SignResponse, error) {
	csr, err := x509.ParseCertificateRequest(req.GetCsr())
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), URIs: csr.URIs, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, csr.PublicKey, f.key)
	if err != nil {
		return nil, err
	}
	return &cav1.SignResponse{CertificateChainPem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

func (f *fakeCA) GetTrustBundle(ctx context.Context, _ *cav1.GetTrustBundleRequest, _ ...grpc.CallOption) (*cav1.GetTrustBundleResponse, error) {
	f.mu.Lock()
	hold, root := f.hold, f.root
	f.gets++
	f.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return &cav1.GetTrustBundleResponse{TrustBundle: &meshv1.TrustBundle{Roots: []*meshv1.TrustRoot{{CertificatePem: []byte(root)}}}}, nil
}

func (f *fakeCA) set(root string, hold chan struct{}) {
	f.mu.Lock()
	f.root, f.hold = root, hold
	f.mu.Unlock()
}

func TestCAIssuerRefreshesTheBundleInTheBackground(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &fakeCA{key: key, root: "root-1"}
	const maxAge = 50 * time.Millisecond
	iss := &CAIssuer{Client: ca, TTL: time.Hour, BundleMaxAge: maxAge}
	id := identity.New("cluster.local", "bookstore", "bookstore")
	issue := func() string {
		t.Helper()
		done := make(chan *Certificate, 1)
		go func() {
			c, err := iss.Issue(t.Context(), id, identity.UsageXDSClient)
			if err != nil {
				t.Error(err)
			}
			done <- c
		}()
		select {
		case c := <-done:
			if c == nil {
				t.FailNow()
			}
			return string(c.TrustPEM)
		case <-time.After(5 * time.Second):
			t.Fatal("Issue waited for the trust bundle")
			return ""
		}
	}
	if got := issue(); got != "root-1" {
		t.Fatalf("first issue: trust %q", got)
	}
	// The bundle is stale and the CA slow to serve the new one: Issue
	// returns the cached roots without waiting.
	hold := make(chan struct{})
	ca.set("root-2", hold)
	time.Sleep(maxAge)
	for range 3 {
		if got := issue(); got != "root-1" {
			t.Fatalf("stale issue: trust %q, want the cached root-1", got)
		}
	}
	close(hold)
	deadline := time.Now().Add(5 * time.Second)
	for issue() != "root-2" {
		if time.Now().After(deadline) {
			t.Fatal("the refreshed bundle never reached Issue")
		}
		time.Sleep(maxAge / 5)
	}
	ca.mu.Lock()
	gets := ca.gets
	ca.mu.Unlock()
	if gets > 3 {
		t.Fatalf("%d bundle fetches: refreshes are not deduplicated", gets)
	}
}
