package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/logging"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/cert-authority/internal/builtin"
	"github.com/openservicemesh/osm/services/cert-authority/internal/csrtest"
	"github.com/openservicemesh/osm/services/cert-authority/internal/pki"
	"github.com/openservicemesh/osm/services/cert-authority/internal/trust"
)

func TestMain(m *testing.M) {
	if os.Getenv(benchServerEnv) != "" {
		os.Exit(runBenchServer())
	}
	goleak.VerifyTestMain(m)
}

const (
	td       = "cluster.local"
	devToken = "dev-secret-token"
	caName   = "osm-cert-authority.osm-system.svc"
)

// testCA is a CA served over mTLS on loopback with the built-in provider.
type testCA struct {
	addr   string
	hub    *trust.Hub
	server *Server
	roots  []*pki.Issuer
	logs   *logging.Buffer
}

func newRoot(t testing.TB) *pki.Issuer {
	t.Helper()
	c, k, err := pki.GenerateRoot(pki.RootOptions{TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	iss, err := pki.ParseIssuer(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

type caOptions struct {
	reviewer TokenReviewer
	accounts map[identity.Role]ServiceAccount
	devToken string
	dns      DNSPolicy
	meter    metric.Meter
	limits   Limits
	// grpcOpts are more options of the gRPC server.
	grpcOpts []grpc.ServerOption
}

// startCA serves a CA on loopback until the test ends.
func startCA(t testing.TB, o caOptions) *testCA {
	t.Helper()
	ca, _ := serveCA(t, o)
	return ca
}

// serveCA serves a CA on loopback until the test ends and returns its gRPC
// server too, for tests that stop it themselves.
func serveCA(t testing.TB, o caOptions) (*testCA, *grpc.Server) {
	t.Helper()
	ca, gs, err := newTestCA(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(lis) }()
	t.Cleanup(func() { gs.Stop(); <-done })
	ca.addr = lis.Addr().String()
	return ca, gs
}

// newTestCA builds the CA and its gRPC server, not yet serving. It returns
// errors rather than failing a test so that the benchmark's server process
// (see bench_test.go) can use it too.
func newTestCA(ctx context.Context, o caOptions) (*testCA, *grpc.Server, error) {
	c, k, err := pki.GenerateRoot(pki.RootOptions{TrustDomain: td})
	if err != nil {
		return nil, nil, err
	}
	root, err := pki.ParseIssuer(c, k)
	if err != nil {
		return nil, nil, err
	}
	prov := builtin.NewProvider(pki.NewRootSet(root))
	hub := trust.NewHub()
	b, _ := prov.TrustBundle(ctx)
	hub.Set(b)
	logs := &logging.Buffer{}
	l := logrus.New()
	l.SetOutput(logs)
	l.SetLevel(logrus.DebugLevel)
	log := logrus.NewEntry(l)
	srv, err := New(Options{
		Signer:       prov,
		Hub:          hub,
		Workload:     pki.Policy{TrustDomain: td, DefaultTTL: 24 * time.Hour, MaxTTL: 48 * time.Hour},
		ControlPlane: pki.Policy{TrustDomain: td, DefaultTTL: 12 * time.Hour, MaxTTL: 24 * time.Hour},
		Bootstrap:    BootstrapOptions{Reviewer: o.reviewer, Accounts: o.accounts, DevToken: o.devToken, DNS: o.dns},
		Log:          log,
		Meter:        o.meter,
		Limits:       o.limits,
	})
	if err != nil {
		return nil, nil, err
	}
	cert := NewServingCert(ServingCertOptions{Signer: prov, TrustDomain: td, DNSNames: []string{caName}, Log: log})
	if err := cert.Renew(ctx); err != nil {
		return nil, nil, err
	}
	gs := NewGRPCServer(TLSConfig(cert, hub), NewAuthorizer(td), o.grpcOpts...)
	srv.Register(gs)
	return &testCA{hub: hub, server: srv, roots: []*pki.Issuer{root}, logs: logs}, gs, nil
}

func (ca *testCA) bundle() *meshv1.TrustBundle {
	b, _ := ca.hub.Current()
	return b
}

// dial connects with cert as the client certificate (nil for none).
func (ca *testCA) dial(t testing.TB, cert *tls.Certificate) cav1.CertificateAuthorityServiceClient {
	t.Helper()
	cc, err := caclient.Dial(ca.addr, ca.bundle(), caName, cert)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cav1.NewCertificateAuthorityServiceClient(cc)
}

// bootstrap obtains a control-plane certificate for role with the dev token.
func (ca *testCA) bootstrap(t testing.TB, role cav1.ComponentRole) *tls.Certificate {
	t.Helper()
	k := csrtest.Key(t)
	resp, err := ca.dial(t, nil).Bootstrap(t.Context(), &cav1.BootstrapRequest{
		Token: devToken, TokenType: cav1.TokenType_TOKEN_TYPE_PRE_SHARED, Role: role, Csr: csrtest.PEM(t, k, nil)})
	if err != nil {
		t.Fatalf("bootstrap %s: %v", role, err)
	}
	c, err := tls.X509KeyPair(resp.CertificateChainPem, keyPEM(t, k))
	if err != nil {
		t.Fatal(err)
	}
	return &c
}

func parseLeaf(t testing.TB, chain []byte) *x509.Certificate {
	t.Helper()
	c, err := pki.ParseCertificatePEM(chain)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSignOverMTLS(t *testing.T) {
	ca := startCA(t, caOptions{devToken: devToken})
	edge := ca.dial(t, ca.bootstrap(t, cav1.ComponentRole_COMPONENT_ROLE_XDS_EDGE))
	k := csrtest.Key(t)
	id := "spiffe://cluster.local/ns/bookstore/sa/bookbuyer"
	resp, err := edge.Sign(t.Context(), &cav1.SignRequest{Csr: csrtest.PEM(t, k, nil), Identity: id, Ttl: durationpb.New(time.Hour), Usage: cav1.CertificateUsage_CERTIFICATE_USAGE_SERVICE})
	if err != nil {
		t.Fatal(err)
	}
	leaf := parseLeaf(t, resp.CertificateChainPem)
	pool, _ := pki.BundlePool(ca.bundle())
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("leaf does not verify against the bundle: %v", err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id {
		t.Errorf("leaf URIs %v, want %s", leaf.URIs, id)
	}
	if resp.IssuerId != ca.roots[0].ID() || resp.SerialNumber != leaf.SerialNumber.Text(16) || !resp.NotAfter.AsTime().Equal(leaf.NotAfter) {
		t.Errorf("response metadata %v does not match the leaf", resp)
	}
	if d := time.Until(leaf.NotAfter); d > time.Hour || d < 59*time.Minute {
		t.Errorf("leaf lifetime %s, want 1h", d)
	}
	// The injector may sign too: xDS client certificates.
	inj := ca.dial(t, ca.bootstrap(t, cav1.ComponentRole_COMPONENT_ROLE_INJECTOR_WEBHOOK))
	resp, err = inj.Sign(t.Context(), &cav1.SignRequest{Csr: csrtest.PEM(t, k, nil), Identity: id, Usage: cav1.CertificateUsage_CERTIFICATE_USAGE_XDS_CLIENT})
	if err != nil {
		t.Fatalf("injector sign: %v", err)
	}
	if leaf := parseLeaf(t, resp.CertificateChainPem); len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://cluster.local/osm/xds-client/ns/bookstore/sa/bookbuyer" {
		t.Errorf("xDS client leaf URIs %v", leaf.URIs)
	}
}

// TestSignIsNarrowedByRole (issue 15, item 6): each role signs only the
// usage it needs, and a request must say which; the CSR's URI SAN must be
// the identity's for that usage.
func TestSignIsNarrowedByRole(t *testing.T) {
	ca := startCA(t, caOptions{devToken: devToken})
	edge := ca.dial(t, ca.bootstrap(t, cav1.ComponentRole_COMPONENT_ROLE_XDS_EDGE))
	inj := ca.dial(t, ca.bootstrap(t, cav1.ComponentRole_COMPONENT_ROLE_INJECTOR_WEBHOOK))
	k := csrtest.Key(t)
	id := "spiffe://cluster.local/ns/bookstore/sa/bookbuyer"
	xdsURI, _ := url.Parse("spiffe://cluster.local/osm/xds-client/ns/bookstore/sa/bookbuyer")
	svcURI, _ := url.Parse(id)
	req := func(u cav1.CertificateUsage, san *url.URL) *cav1.SignRequest {
		tmpl := &x509.CertificateRequest{}
		if san != nil {
			tmpl.URIs = []*url.URL{san}
		}
		return &cav1.SignRequest{Csr: csrtest.PEM(t, k, tmpl), Identity: id, Usage: u}
	}
	cases := []struct {
		name   string
		cl     cav1.CertificateAuthorityServiceClient
		req    *cav1.SignRequest
		code   codes.Code
		reason pki.Reason
	}{
		{"edge, no usage", edge, req(cav1.CertificateUsage_CERTIFICATE_USAGE_UNSPECIFIED, nil), codes.InvalidArgument, pki.ReasonInvalidUsage},
		{"edge, unknown usage", edge, req(7, nil), codes.InvalidArgument, pki.ReasonInvalidUsage},
		{"edge asks for an xDS client certificate", edge, req(cav1.CertificateUsage_CERTIFICATE_USAGE_XDS_CLIENT, xdsURI), codes.PermissionDenied, pki.ReasonUsageNotAllowed},
		{"injector, service (a proxyless gRPC pod's files)", inj, req(cav1.CertificateUsage_CERTIFICATE_USAGE_SERVICE, svcURI), codes.OK, ""},
		{"injector, service, CSR names the xDS client form", inj, req(cav1.CertificateUsage_CERTIFICATE_USAGE_SERVICE, xdsURI), codes.InvalidArgument, pki.ReasonSANMismatch},
		{"injector, CSR names the service form", inj, req(cav1.CertificateUsage_CERTIFICATE_USAGE_XDS_CLIENT, svcURI), codes.InvalidArgument, pki.ReasonSANMismatch},
		{"edge, CSR names the xDS client form", edge, req(cav1.CertificateUsage_CERTIFICATE_USAGE_SERVICE, xdsURI), codes.InvalidArgument, pki.ReasonSANMismatch},
		{"edge, service", edge, req(cav1.CertificateUsage_CERTIFICATE_USAGE_SERVICE, svcURI), codes.OK, ""},
		{"injector, xDS client", inj, req(cav1.CertificateUsage_CERTIFICATE_USAGE_XDS_CLIENT, xdsURI), codes.OK, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.cl.Sign(t.Context(), c.req)
			if status.Code(err) != c.code || ReasonFromStatus(err) != c.reason {
				t.Errorf("got %v (reason %q), want %s %s", err, ReasonFromStatus(err), c.code, c.reason)
			}
			if c.code != codes.OK && !strings.Contains(status.Convert(err).Message(), "usage") && c.reason != pki.ReasonSANMismatch {
				t.Errorf("message %q does not name the field usage", status.Convert(err).Message())
			}
		})
	}
}

func TestBootstrapIssuesRoleIdentity(t *testing.T) {
	ca := startCA(t, caOptions{devToken: devToken})
	k := csrtest.Key(t)
	resp, err := ca.dial(t, nil).Bootstrap(t.Context(), &cav1.BootstrapRequest{
		Token: devToken, TokenType: cav1.TokenType_TOKEN_TYPE_PRE_SHARED,
		Role: cav1.ComponentRole_COMPONENT_ROLE_POLICY_COMPILER, Csr: csrtest.PEM(t, k, nil)})
	if err != nil {
		t.Fatal(err)
	}
	leaf := parseLeaf(t, resp.CertificateChainPem)
	if want := "spiffe://cluster.local/osm/policy-compiler"; resp.Identity != want || len(leaf.URIs) != 1 || leaf.URIs[0].String() != want {
		t.Errorf("identity %s, URIs %v, want %s", resp.Identity, leaf.URIs, want)
	}
	if d := time.Until(leaf.NotAfter); d > 12*time.Hour || d < 11*time.Hour {
		t.Errorf("control-plane leaf lifetime %s, want the 12h default", d)
	}
	if resp.TrustBundle.GetVersion() != ca.bundle().Version {
		t.Error("bootstrap response lacks the trust bundle")
	}
	if strings.Contains(ca.logs.String(), devToken) {
		t.Error("the logs contain the bootstrap token")
	}
}

// TestAuthorization checks who may call what.
func TestAuthorization(t *testing.T) {
	ca := startCA(t, caOptions{devToken: devToken})
	k := csrtest.Key(t)
	req := &cav1.SignRequest{Csr: csrtest.PEM(t, k, nil), Identity: "spiffe://cluster.local/ns/a/sa/b", Usage: cav1.CertificateUsage_CERTIFICATE_USAGE_SERVICE}

	// A workload certificate from the same root carries no role.
	prov := builtin.NewProvider(pki.NewRootSet(ca.roots[0]))
	wl, err := prov.Sign(t.Context(), pki.SignRequest{CSR: csrtest.Parsed(t, k), URI: &url.URL{Scheme: "spiffe", Host: td, Path: "/ns/a/sa/b"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	wlCert, err := tls.X509KeyPair(wl.ChainPEM, keyPEM(t, k))
	if err != nil {
		t.Fatal(err)
	}
	// A certificate from a foreign CA is rejected in the handshake.
	foreign := newRoot(t)
	fl, err := builtin.NewProvider(pki.NewRootSet(foreign)).Sign(t.Context(), pki.SignRequest{CSR: csrtest.Parsed(t, k), URI: identity.ControlPlaneURI(td, identity.RoleXDSEdge), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	foreignCert, _ := tls.X509KeyPair(fl.ChainPEM, keyPEM(t, k))

	cases := []struct {
		name string
		cert *tls.Certificate
		sign codes.Code
		get  codes.Code
	}{
		{"no client certificate", nil, codes.Unauthenticated, codes.Unauthenticated},
		{"workload certificate", &wlCert, codes.PermissionDenied, codes.PermissionDenied},
		{"policy-compiler", ca.bootstrap(t, cav1.ComponentRole_COMPONENT_ROLE_POLICY_COMPILER), codes.PermissionDenied, codes.OK},
		{"smi-watcher", ca.bootstrap(t, cav1.ComponentRole_COMPONENT_ROLE_SMI_WATCHER), codes.PermissionDenied, codes.OK},
		{"operator", ca.bootstrap(t, cav1.ComponentRole_COMPONENT_ROLE_OPERATOR), codes.PermissionDenied, codes.OK},
		{"xds-edge", ca.bootstrap(t, cav1.ComponentRole_COMPONENT_ROLE_XDS_EDGE), codes.OK, codes.OK},
		{"foreign CA", &foreignCert, codes.Unavailable, codes.Unavailable},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cl := ca.dial(t, c.cert)
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			_, err := cl.Sign(ctx, req)
			if got := status.Code(err); got != c.sign {
				t.Errorf("Sign: %v, want %s", err, c.sign)
			}
			_, err = cl.GetTrustBundle(ctx, &cav1.GetTrustBundleRequest{})
			if got := status.Code(err); got != c.get {
				t.Errorf("GetTrustBundle: %v, want %s", err, c.get)
			}
		})
	}
}

// TestSignRefusals sends each bad input over gRPC and checks the status
// code and the reason it names.
func TestSignRefusals(t *testing.T) {
	ca := startCA(t, caOptions{devToken: devToken})
	edge := ca.dial(t, ca.bootstrap(t, cav1.ComponentRole_COMPONENT_ROLE_XDS_EDGE))
	k := csrtest.Key(t)
	other, _ := url.Parse("spiffe://cluster.local/ns/a/sa/other")
	rsaCSR := rsaCSRPEM(t)
	id := "spiffe://cluster.local/ns/a/sa/b"
	cases := []struct {
		name   string
		req    *cav1.SignRequest
		code   codes.Code
		reason pki.Reason
	}{
		{"malformed CSR", &cav1.SignRequest{Csr: []byte("garbage"), Identity: id, Usage: cav1.CertificateUsage_CERTIFICATE_USAGE_SERVICE}, codes.InvalidArgument, pki.ReasonMalformedCSR},
		{"key is not P-256", &cav1.SignRequest{Csr: rsaCSR, Identity: id, Usage: cav1.CertificateUsage_CERTIFICATE_USAGE_SERVICE}, codes.InvalidArgument, pki.ReasonUnsupportedKey},
		{"SAN does not match", &cav1.SignRequest{Csr: csrtest.PEM(t, k, &x509.CertificateRequest{URIs: []*url.URL{other}}), Identity: id, Usage: cav1.CertificateUsage_CERTIFICATE_USAGE_SERVICE}, codes.InvalidArgument, pki.ReasonSANMismatch},
		{"outside the trust domain", &cav1.SignRequest{Csr: csrtest.PEM(t, k, nil), Identity: "spiffe://evil.example/ns/a/sa/b", Usage: cav1.CertificateUsage_CERTIFICATE_USAGE_SERVICE}, codes.PermissionDenied, pki.ReasonForeignTrustDomain},
		{"not a workload identity", &cav1.SignRequest{Csr: csrtest.PEM(t, k, nil), Identity: "spiffe://cluster.local/osm/xds-edge", Usage: cav1.CertificateUsage_CERTIFICATE_USAGE_SERVICE}, codes.InvalidArgument, pki.ReasonInvalidIdentity},
		{"TTL over the maximum", &cav1.SignRequest{Csr: csrtest.PEM(t, k, nil), Identity: id, Ttl: durationpb.New(72 * time.Hour), Usage: cav1.CertificateUsage_CERTIFICATE_USAGE_SERVICE}, codes.InvalidArgument, pki.ReasonTTLTooLong},
		{"zero TTL", &cav1.SignRequest{Csr: csrtest.PEM(t, k, nil), Identity: id, Ttl: durationpb.New(0), Usage: cav1.CertificateUsage_CERTIFICATE_USAGE_SERVICE}, codes.InvalidArgument, pki.ReasonInvalidTTL},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := edge.Sign(t.Context(), c.req)
			st, _ := status.FromError(err)
			if st.Code() != c.code || ReasonFromStatus(err) != c.reason || !strings.Contains(st.Message(), string(c.reason)) {
				t.Errorf("got %v (reason %q), want %s naming %s", err, ReasonFromStatus(err), c.code, c.reason)
			}
		})
	}
}

// rsaCSRPEM makes a CSR with an RSA key, which the CA refuses.
func rsaCSRPEM(t testing.TB) []byte {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return csrtest.PEM(t, k, nil)
}

func TestBootstrapRefusals(t *testing.T) {
	rev := fakeReviewer{"good-edge-token": "system:serviceaccount:osm-system:osm-xds-edge"}
	accounts := map[identity.Role]ServiceAccount{identity.RoleXDSEdge: {"osm-system", "osm-xds-edge"}}
	withDev := startCA(t, caOptions{devToken: devToken, reviewer: rev, accounts: accounts})
	noDev := startCA(t, caOptions{reviewer: rev, accounts: accounts})
	k := csrtest.Key(t)
	csr := csrtest.PEM(t, k, nil)
	edge := cav1.ComponentRole_COMPONENT_ROLE_XDS_EDGE
	sa, psk := cav1.TokenType_TOKEN_TYPE_SERVICE_ACCOUNT, cav1.TokenType_TOKEN_TYPE_PRE_SHARED
	wrongSAN, _ := url.Parse("spiffe://cluster.local/osm/operator")
	cases := []struct {
		name string
		ca   *testCA
		req  *cav1.BootstrapRequest
		code codes.Code
		msg  string
	}{
		{"dev mode off", noDev, &cav1.BootstrapRequest{Token: devToken, TokenType: psk, Role: edge, Csr: csr}, codes.Unauthenticated, "disabled"},
		{"wrong pre-shared token", withDev, &cav1.BootstrapRequest{Token: "nope", TokenType: psk, Role: edge, Csr: csr}, codes.Unauthenticated, "wrong"},
		{"empty token", withDev, &cav1.BootstrapRequest{TokenType: psk, Role: edge, Csr: csr}, codes.Unauthenticated, "empty"},
		{"no role", withDev, &cav1.BootstrapRequest{Token: devToken, TokenType: psk, Csr: csr}, codes.InvalidArgument, "role"},
		{"rejected SA token", noDev, &cav1.BootstrapRequest{Token: "forged", TokenType: sa, Role: edge, Csr: csr}, codes.Unauthenticated, "not authenticated"},
		{"SA token of another role", noDev, &cav1.BootstrapRequest{Token: "good-edge-token", TokenType: sa, Role: cav1.ComponentRole_COMPONENT_ROLE_POLICY_COMPILER, Csr: csr}, codes.PermissionDenied, "policy-compiler"},
		{"malformed CSR", noDev, &cav1.BootstrapRequest{Token: "good-edge-token", TokenType: sa, Role: edge, Csr: []byte("x")}, codes.InvalidArgument, string(pki.ReasonMalformedCSR)},
		{"CSR names another identity", noDev, &cav1.BootstrapRequest{Token: "good-edge-token", TokenType: sa, Role: edge, Csr: csrtest.PEM(t, k, &x509.CertificateRequest{URIs: []*url.URL{wrongSAN}})}, codes.InvalidArgument, string(pki.ReasonSANMismatch)},
		{"TTL over the maximum", noDev, &cav1.BootstrapRequest{Token: "good-edge-token", TokenType: sa, Role: edge, Csr: csr, Ttl: durationpb.New(25 * time.Hour)}, codes.InvalidArgument, string(pki.ReasonTTLTooLong)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.ca.dial(t, nil).Bootstrap(t.Context(), c.req)
			if st, _ := status.FromError(err); st.Code() != c.code || !strings.Contains(st.Message(), c.msg) {
				t.Errorf("got %v, want %s mentioning %q", err, c.code, c.msg)
			}
		})
	}
	// The good SA token works.
	resp, err := noDev.dial(t, nil).Bootstrap(t.Context(), &cav1.BootstrapRequest{Token: "good-edge-token", TokenType: sa, Role: edge, Csr: csr})
	if err != nil || resp.Identity != "spiffe://cluster.local/osm/xds-edge" {
		t.Fatalf("SA bootstrap: %v, %v", resp, err)
	}
	for _, ca := range []*testCA{withDev, noDev} {
		if l := ca.logs.String(); strings.Contains(l, devToken) || strings.Contains(l, "good-edge-token") || strings.Contains(l, "PRIVATE KEY") {
			t.Errorf("logs leak a credential:\n%s", l)
		}
	}
}

// fakeReviewer maps tokens to user names, as a TokenReview would.
type fakeReviewer map[string]string

func (f fakeReviewer) Review(_ context.Context, token string) (string, error) {
	if u, ok := f[token]; ok {
		return u, nil
	}
	return "", status.Error(codes.Unauthenticated, "the ServiceAccount token was not authenticated")
}

// TestWatchTrustBundleFollowsRotation streams the bundle across the three
// rotation steps.
func TestWatchTrustBundleFollowsRotation(t *testing.T) {
	ca := startCA(t, caOptions{devToken: devToken})
	cl := ca.dial(t, ca.bootstrap(t, cav1.ComponentRole_COMPONENT_ROLE_XDS_EDGE))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	stream, err := cl.WatchTrustBundle(ctx, &cav1.WatchTrustBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	recv := func() *meshv1.TrustBundle {
		t.Helper()
		m, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return m.TrustBundle
	}
	first := recv()
	if first.Version != ca.bundle().Version || len(first.Roots) != 1 {
		t.Fatalf("first message: %v", first)
	}
	oldRoot, newRoot := ca.roots[0], newRoot(t)
	steps := []*pki.RootSet{
		pki.NewRootSet(oldRoot, newRoot.Certificate()),
		pki.NewRootSet(newRoot, oldRoot.Certificate()),
		pki.NewRootSet(newRoot),
	}
	wantRoots := []int{2, 2, 1}
	for i, rs := range steps {
		ca.hub.Set(rs.Bundle())
		got := recv()
		if got.Version != rs.Bundle().Version || len(got.Roots) != wantRoots[i] {
			t.Fatalf("step %d: version %s with %d roots, want %s with %d", i+1, got.Version, len(got.Roots), rs.Bundle().Version, wantRoots[i])
		}
	}
	// A watcher that already knows the current version waits for the next.
	s2, err := cl.WatchTrustBundle(ctx, &cav1.WatchTrustBundleRequest{KnownVersion: steps[2].Bundle().Version})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		m, err := s2.Recv()
		if err == nil {
			got <- m.TrustBundle.Version
		}
		close(got)
	}()
	select {
	case v := <-got:
		t.Fatalf("known version was resent: %s", v)
	case <-time.After(200 * time.Millisecond):
	}
	final := pki.NewRootSet(oldRoot).Bundle()
	ca.hub.Set(final)
	if v := <-got; v != final.Version {
		t.Fatalf("second watcher got %q, want %s", v, final.Version)
	}
	if v := recv().Version; v != final.Version {
		t.Fatalf("first watcher got %s, want %s", v, final.Version)
	}
	cancel()
	if _, err := stream.Recv(); status.Code(err) != codes.Canceled {
		t.Errorf("stream after cancel: %v, want Canceled", err)
	}
}

// TestServingCertRenewsAtHalfLife gives the serving certificate a 4s
// lifetime and checks that it is replaced at about half of it, before it
// ends, with the same SANs.
func TestServingCertRenewsAtHalfLife(t *testing.T) {
	prov := builtin.NewProvider(pki.NewRootSet(newRoot(t)))
	sc := NewServingCert(ServingCertOptions{Signer: prov, TrustDomain: td, DNSNames: []string{caName}, TTL: 4 * time.Second})
	if err := sc.Check(t.Context()); err == nil {
		t.Fatal("ready without a certificate")
	}
	if err := sc.Renew(t.Context()); err != nil {
		t.Fatal(err)
	}
	issued := time.Now()
	first, _ := sc.getCertificate(nil)
	if err := sc.Check(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); _ = sc.Start(ctx) }()
	defer func() { cancel(); <-done }()
	for time.Since(issued) < 3900*time.Millisecond {
		if c, _ := sc.getCertificate(nil); c != first {
			if after := time.Since(issued); after < 1500*time.Millisecond {
				t.Errorf("renewed after %s, want about half of the 4s lifetime", after)
			}
			leaf, _ := x509.ParseCertificate(c.Certificate[0])
			if leaf.URIs[0].String() != "spiffe://cluster.local/osm/cert-authority" || leaf.DNSNames[0] != caName {
				t.Errorf("renewed certificate SANs %v %v", leaf.URIs, leaf.DNSNames)
			}
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("the serving certificate was not renewed before it expired")
}

func keyPEM(t testing.TB, k *ecdsa.PrivateKey) []byte {
	t.Helper()
	p, err := pkcs8PEM(k)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
