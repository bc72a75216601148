package xdstest

import (
	"context"
	"crypto/x509"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
)

// FakeCA is a unit-test fake of the cert-authority's Sign RPC, and nothing
// more: the real CA is internal to services/cert-authority, and the
// end-to-end test against it belongs to the tests/ module. It signs the
// CSR's public key for the requested identity with its root, honouring the
// requested TTL. Tests can make it fail or certify the wrong identity.
type FakeCA struct {
	cav1.UnimplementedCertificateAuthorityServiceServer
	// Root signs the certificates.
	Root *CA

	mu        sync.Mutex
	calls     int
	failNext  int
	wrongName bool
}

// FailNext makes the next n calls fail with UNAVAILABLE.
func (f *FakeCA) FailNext(n int) {
	f.mu.Lock()
	f.failNext = n
	f.mu.Unlock()
}

// CertifyWrongIdentity makes every later certificate name another identity.
func (f *FakeCA) CertifyWrongIdentity() {
	f.mu.Lock()
	f.wrongName = true
	f.mu.Unlock()
}

// Calls is the number of Sign calls so far.
func (f *FakeCA) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// Sign implements cav1.CertificateAuthorityServiceServer.
func (f *FakeCA) Sign(_ context.Context, req *cav1.SignRequest) (*cav1.SignResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.failNext > 0 {
		f.failNext--
		return nil, status.Error(codes.Unavailable, "the signing backend is unavailable")
	}
	csr, err := x509.ParseCertificateRequest(req.GetCsr())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr signature: %v", err)
	}
	uri := req.GetIdentity()
	if f.wrongName {
		uri = "spiffe://cluster.local/ns/evil/sa/evil"
	}
	chain, _, err := f.Root.SignPublic(csr.PublicKey, uri, nil, nil, req.GetTtl().AsDuration())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	return &cav1.SignResponse{CertificateChainPem: chain}, nil
}
