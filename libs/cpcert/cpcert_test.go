package cpcert

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeCA is a gRPC CertificateAuthorityService on loopback that signs
// Bootstrap CSRs with an in-memory root for a fixed lifetime and streams the
// bundles it is given. It stands in for the cert-authority, which lives in
// another module; the e2e tests run the real one.
type fakeCA struct {
	cav1.UnimplementedCertificateAuthorityServiceServer
	root    *x509.Certificate
	rootKey *ecdsa.PrivateKey
	ttl     time.Duration

	mu       sync.Mutex
	failNext int
	requests []*cav1.BootstrapRequest
	bundles  chan *meshv1.TrustBundle
}

func (f *fakeCA) Bootstrap(_ context.Context, req *cav1.BootstrapRequest) (*cav1.BootstrapResponse, error) {
	f.mu.Lock()
	f.requests = append(f.requests, req)
	fail := f.failNext > 0
	if fail {
		f.failNext--
	}
	root, rootKey := f.root, f.rootKey
	f.mu.Unlock()
	if fail {
		return nil, status.Error(codes.Unavailable, "the CA is down")
	}
	b, _ := pem.Decode(req.Csr)
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: serial, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(f.ttl),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, DNSNames: req.DnsNames}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root, csr.PublicKey, rootKey)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &cav1.BootstrapResponse{CertificateChainPem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

func (f *fakeCA) WatchTrustBundle(_ *cav1.WatchTrustBundleRequest, s grpc.ServerStreamingServer[cav1.WatchTrustBundleResponse]) error {
	for {
		select {
		case <-s.Context().Done():
			return nil
		case b := <-f.bundles:
			if err := s.Send(&cav1.WatchTrustBundleResponse{TrustBundle: b}); err != nil {
				return err
			}
		}
	}
}

// signWith makes root the CA's signing root.
func (f *fakeCA) signWith(root *x509.Certificate, key *ecdsa.PrivateKey) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.root, f.rootKey = root, key
}

func (f *fakeCA) bootstraps() []*cav1.BootstrapRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests)
}

func newRoot(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, k
}

func startFakeCA(t *testing.T, ttl time.Duration) (*fakeCA, cav1.CertificateAuthorityServiceClient) {
	t.Helper()
	root, key := newRoot(t)
	f := &fakeCA{root: root, rootKey: key, ttl: ttl, bundles: make(chan *meshv1.TrustBundle, 4)}
	gs := grpc.NewServer()
	cav1.RegisterCertificateAuthorityServiceServer(gs, f)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close(); gs.Stop() })
	return f, cav1.NewCertificateAuthorityServiceClient(cc)
}

var names = []string{"osm-injector.osm-system", "osm-injector.osm-system.svc", "osm-injector.osm-system.svc.cluster.local"}

// serve runs a TLS listener with cfg and returns a function that dials it
// and returns the leaf the server presented, verified against root as
// osm-injector.osm-system.svc.
func serve(t *testing.T, cfg *tls.Config, root *x509.Certificate) func() (*x509.Certificate, error) {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	t.Cleanup(func() { lis.Close(); wg.Wait() })
	pool := x509.NewCertPool()
	pool.AddCert(root)
	return func() (*x509.Certificate, error) {
		c, err := tls.Dial("tcp", lis.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "osm-injector.osm-system.svc"})
		if err != nil {
			return nil, err
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0], nil
	}
}

func TestServesBootstrappedCertAndRenewsAtHalfLife(t *testing.T) {
	ca, client := startFakeCA(t, 4*time.Second)
	c, err := New(Options{Client: client, Role: cav1.ComponentRole_COMPONENT_ROLE_INJECTOR_WEBHOOK, Token: func() (string, error) { return "tok", nil },
		TokenType: cav1.TokenType_TOKEN_TYPE_PRE_SHARED, DNSNames: names})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Check(t.Context()); err == nil {
		t.Fatal("ready without a certificate")
	}
	if err := c.RenewUntilDone(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := c.Check(t.Context()); err != nil {
		t.Fatal(err)
	}
	req := ca.bootstraps()[0]
	if req.Role != cav1.ComponentRole_COMPONENT_ROLE_INJECTOR_WEBHOOK || req.Token != "tok" || !slices.Equal(req.DnsNames, names) {
		t.Fatalf("bootstrap request: role %s token %q names %v", req.Role, req.Token, req.DnsNames)
	}
	dial := serve(t, c.TLSConfig(), ca.root)
	first, err := dial()
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if !slices.Equal(first.DNSNames, names) {
		t.Fatalf("served DNS names %v", first.DNSNames)
	}

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Start(ctx) }()
	defer func() { cancel(); <-done }()
	// Renewal is due at half of the 4s lifetime; the listener keeps running
	// and serves the new certificate from the next handshake.
	deadline := time.Now().Add(3500 * time.Millisecond)
	for {
		cur, err := dial()
		if err != nil {
			t.Fatal(err)
		}
		if cur.SerialNumber.Cmp(first.SerialNumber) != 0 {
			if since := time.Since(first.NotBefore.Add(time.Minute)); since < 1400*time.Millisecond {
				t.Errorf("renewed after %s, before half of the lifetime", since)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the certificate was not renewed by 3.5s of a 4s lifetime")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRenewRetriesWithBackoff(t *testing.T) {
	ca, client := startFakeCA(t, time.Hour)
	ca.failNext = 3
	c, _ := New(Options{Client: client, Role: cav1.ComponentRole_COMPONENT_ROLE_INJECTOR_WEBHOOK, Token: func() (string, error) { return "tok", nil }, DNSNames: names,
		MinRetry: 20 * time.Millisecond, MaxRetry: 80 * time.Millisecond})
	start := time.Now()
	if err := c.RenewUntilDone(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := len(ca.bootstraps()); n != 4 {
		t.Fatalf("%d Bootstrap calls, want 4 (3 failures, then success)", n)
	}
	// Waits are drawn from [d/2, d) for d = 20, 40, 80ms: at least 70ms.
	if el := time.Since(start); el < 70*time.Millisecond {
		t.Errorf("retried after %s in all, faster than the backoff allows", el)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := c.RenewUntilDone(ctx); !errors.Is(err, context.Canceled) && err != nil {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestTokenReadErrorFails(t *testing.T) {
	_, client := startFakeCA(t, time.Hour)
	c, _ := New(Options{Client: client, Role: cav1.ComponentRole_COMPONENT_ROLE_INJECTOR_WEBHOOK, Token: func() (string, error) { return "", errors.New("no such file") }})
	if err := c.Renew(t.Context()); err == nil {
		t.Fatal("renewed without a token")
	}
}

func TestBackoffStaysInBounds(t *testing.T) {
	b := &backoff{min: 10 * time.Millisecond, max: 100 * time.Millisecond}
	for i, d := range []time.Duration{10, 20, 40, 80, 100, 100} {
		d *= time.Millisecond
		if got := b.next(); got < d/2 || got > d {
			t.Errorf("wait %d: %s, want in [%s, %s]", i, got, d/2, d)
		}
	}
	b.reset()
	if got := b.next(); got > 10*time.Millisecond {
		t.Errorf("after reset: %s", got)
	}
}

func TestBundleFollowsTheCA(t *testing.T) {
	ca, client := startFakeCA(t, time.Hour)
	b := NewBundle(client, nil, 10*time.Millisecond, 50*time.Millisecond)
	if err := b.Check(t.Context()); err == nil {
		t.Fatal("ready without a bundle")
	}
	changed := b.Subscribe()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- b.Start(ctx) }()
	defer func() { cancel(); <-done }()

	r1 := []byte("-----BEGIN CERTIFICATE-----\nAQ==\n-----END CERTIFICATE-----\n")
	r2 := []byte("-----BEGIN CERTIFICATE-----\nAg==\n-----END CERTIFICATE-----\n")
	for _, step := range []struct {
		version string
		roots   [][]byte
	}{{"v1", [][]byte{r1}}, {"v2", [][]byte{r1, r2}}, {"v3", [][]byte{r2}}} {
		tb := &meshv1.TrustBundle{Version: step.version}
		var want []byte
		for i, r := range step.roots {
			tb.Roots = append(tb.Roots, &meshv1.TrustRoot{Id: string(rune('a' + i)), CertificatePem: r})
			want = append(want, r...)
		}
		ca.bundles <- tb
		select {
		case <-changed:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no change notification", step.version)
		}
		got, err := b.RootsPEM()
		if err != nil || string(got) != string(want) {
			t.Fatalf("%s: roots %q, %v; want %q", step.version, got, err, want)
		}
	}
}

// TestRenewsWhenTheBundleDropsItsRoot: when a new bundle no longer holds the
// root that issued the serving certificate (the end of a root rotation),
// the certificate is renewed at once, not at half of its lifetime.
func TestRenewsWhenTheBundleDropsItsRoot(t *testing.T) {
	ca, client := startFakeCA(t, time.Hour)
	b := NewBundle(client, nil, 10*time.Millisecond, 50*time.Millisecond)
	c, _ := New(Options{Client: client, Role: cav1.ComponentRole_COMPONENT_ROLE_INJECTOR_WEBHOOK, Token: func() (string, error) { return "tok", nil }, DNSNames: names,
		Roots: b.RootsPEM, BundleChanged: b.Subscribe()})
	if err := c.RenewUntilDone(t.Context()); err != nil {
		t.Fatal(err)
	}
	first, _ := c.GetCertificate(nil)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = b.Start(ctx) }()
	go func() { defer wg.Done(); _ = c.Start(ctx) }()
	defer func() { cancel(); wg.Wait() }()

	rootPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.root.Raw})
	other, _ := newRoot(t)
	otherPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: other.Raw})
	// A bundle that still verifies it: no renewal.
	ca.bundles <- &meshv1.TrustBundle{Version: "v1", Roots: []*meshv1.TrustRoot{{Id: "a", CertificatePem: rootPEM}, {Id: "b", CertificatePem: otherPEM}}}
	time.Sleep(300 * time.Millisecond)
	if n := len(ca.bootstraps()); n != 1 {
		t.Fatalf("%d Bootstrap calls after a bundle that still verifies the certificate, want 1", n)
	}
	// A bundle without its root: renewed at once.
	ca.bundles <- &meshv1.TrustBundle{Version: "v2", Roots: []*meshv1.TrustRoot{{Id: "b", CertificatePem: otherPEM}}}
	// The fake CA records the Bootstrap call before it answers: wait for
	// the new certificate to be served, not only for the call.
	deadline := time.Now().Add(5 * time.Second)
	for {
		cur, _ := c.GetCertificate(nil)
		if len(ca.bootstraps()) >= 2 && cur != first {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not renewed after the bundle dropped its root: %d Bootstrap calls, serving the first certificate: %v", len(ca.bootstraps()), cur == first)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRenewsWhenANewRootSigns: at the switch step of a root rotation (the
// bundle holds both roots, the new one signing) the certificate is renewed
// at once, from the new root, so that the last step (the old root
// removed) finds it valid; a bundle change that keeps the signing root
// renews nothing.
func TestRenewsWhenANewRootSigns(t *testing.T) {
	ca, client := startFakeCA(t, time.Hour)
	b := NewBundle(client, nil, 10*time.Millisecond, 50*time.Millisecond)
	c, _ := New(Options{Client: client, Role: cav1.ComponentRole_COMPONENT_ROLE_XDS_EDGE, Token: func() (string, error) { return "tok", nil },
		Roots: b.RootsPEM, SigningRoot: b.SigningRootPEM, BundleChanged: b.Subscribe()})
	if err := c.RenewUntilDone(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = b.Start(ctx) }()
	go func() { defer wg.Done(); _ = c.Start(ctx) }()
	defer func() { cancel(); wg.Wait() }()

	oldPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.root.Raw})
	next, nextKey := newRoot(t)
	nextPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: next.Raw})
	// Step 1: the new root is added, the old one still signs: no renewal.
	ca.bundles <- &meshv1.TrustBundle{Version: "v1", Roots: []*meshv1.TrustRoot{{Id: "old", CertificatePem: oldPEM, Signing: true}, {Id: "new", CertificatePem: nextPEM}}}
	time.Sleep(300 * time.Millisecond)
	if n := len(ca.bootstraps()); n != 1 {
		t.Fatalf("%d Bootstrap calls after a bundle whose signing root issued the certificate, want 1", n)
	}
	// Step 2: the new root signs.
	ca.signWith(next, nextKey)
	ca.bundles <- &meshv1.TrustBundle{Version: "v2", Roots: []*meshv1.TrustRoot{{Id: "old", CertificatePem: oldPEM}, {Id: "new", CertificatePem: nextPEM, Signing: true}}}
	// Wait for the renewed certificate to be served, not only for the
	// Bootstrap call, which the fake CA records before it answers.
	deadline := time.Now().Add(5 * time.Second)
	for {
		cur, _ := c.GetCertificate(nil)
		err := cur.Leaf.CheckSignatureFrom(next)
		if len(ca.bootstraps()) >= 2 && err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not renewed from the new root when it began to sign: %d Bootstrap calls; served certificate: %v", len(ca.bootstraps()), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Step 3: the old root is removed; the certificate already verifies.
	ca.bundles <- &meshv1.TrustBundle{Version: "v3", Roots: []*meshv1.TrustRoot{{Id: "new", CertificatePem: nextPEM, Signing: true}}}
	time.Sleep(300 * time.Millisecond)
	if n := len(ca.bootstraps()); n != 2 {
		t.Errorf("%d Bootstrap calls after the old root was removed, want 2 (renewed at the switch only)", n)
	}
}
