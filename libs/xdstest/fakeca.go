package xdstest

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
)

// FakeCA is a unit-test fake of the cert-authority's Sign and Bootstrap
// RPCs, and nothing more: the real CA is internal to
// services/cert-authority, and the end-to-end test against it belongs to
// the tests/ module. It signs the CSR's public key for the requested
// identity with its root, honouring the requested TTL (none: 24h, the
// cert-authority's default). Tests can make Sign
// fail or certify the wrong identity.
type FakeCA struct {
	cav1.UnimplementedCertificateAuthorityServiceServer
	// Root signs the certificates.
	Root *CA
	// BootstrapToken is the only token Bootstrap accepts (pre-shared);
	// empty refuses every Bootstrap.
	BootstrapToken string
	// BootstrapTTL is the lifetime of bootstrapped certificates when the
	// request asks for none; default one hour.
	BootstrapTTL time.Duration
	// SignCaller, when set, is the only client-certificate URI SAN Sign
	// accepts (the server must ask for client certificates).
	SignCaller string

	mu        sync.Mutex
	calls     int
	boots     int
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
func (f *FakeCA) Sign(ctx context.Context, req *cav1.SignRequest) (*cav1.SignResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.SignCaller != "" {
		if got := callerURI(ctx); got != f.SignCaller {
			return nil, status.Errorf(codes.PermissionDenied, "caller %q may not sign, only %s", got, f.SignCaller)
		}
	}
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
	ttl := req.GetTtl().AsDuration()
	if req.GetTtl() == nil {
		ttl = 24 * time.Hour // the cert-authority's --default-ttl
	}
	chain, _, err := f.Root.SignPublic(csr.PublicKey, uri, nil, nil, ttl)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	return &cav1.SignResponse{CertificateChainPem: chain}, nil
}

// Bootstraps is the number of successful Bootstrap calls so far.
func (f *FakeCA) Bootstraps() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.boots
}

// Bootstrap implements cav1.CertificateAuthorityServiceServer: a
// control-plane certificate spiffe://cluster.local/osm/xds-edge for the
// pre-shared BootstrapToken and the xds-edge role only.
func (f *FakeCA) Bootstrap(_ context.Context, req *cav1.BootstrapRequest) (*cav1.BootstrapResponse, error) {
	if f.BootstrapToken == "" || req.GetToken() != f.BootstrapToken || req.GetTokenType() != cav1.TokenType_TOKEN_TYPE_PRE_SHARED {
		return nil, status.Error(codes.Unauthenticated, "the pre-shared bootstrap token is wrong")
	}
	if req.GetRole() != cav1.ComponentRole_COMPONENT_ROLE_XDS_EDGE {
		return nil, status.Errorf(codes.PermissionDenied, "role %s is not served by this fake", req.GetRole())
	}
	block, _ := pem.Decode(req.GetCsr())
	if block == nil {
		return nil, status.Error(codes.InvalidArgument, "csr: no PEM block")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr signature: %v", err)
	}
	ttl := req.GetTtl().AsDuration()
	if ttl <= 0 {
		ttl = f.BootstrapTTL
	}
	if ttl <= 0 {
		ttl = time.Hour
	}
	const uri = "spiffe://cluster.local/osm/xds-edge"
	f.mu.Lock()
	defer f.mu.Unlock()
	chain, leaf, err := f.Root.SignPublic(csr.PublicKey, uri, nil, nil, ttl)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	f.boots++
	return &cav1.BootstrapResponse{CertificateChainPem: chain, Identity: uri, NotAfter: timestamppb.New(leaf.NotAfter), TrustBundle: f.Root.Bundle()}, nil
}

// callerURI is the URI SAN of the caller's verified client certificate.
func callerURI(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return ""
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0][0].URIs) != 1 {
		return ""
	}
	return ti.State.VerifiedChains[0][0].URIs[0].String()
}
