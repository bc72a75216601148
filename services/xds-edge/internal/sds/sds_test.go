package sds

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/xdstest"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sink records what the issuer hands the xDS server.
type sink struct {
	mu      sync.Mutex
	certs   map[identity.ID][]string // serials in order
	chains  map[identity.ID][]byte
	keys    map[identity.ID][]byte
	dropped map[identity.ID]bool
}

func newSink() *sink {
	return &sink{certs: map[identity.ID][]string{}, chains: map[identity.ID][]byte{}, keys: map[identity.ID][]byte{}, dropped: map[identity.ID]bool{}}
}

func (s *sink) SetCertificate(id identity.ID, chain, key []byte, serial string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.certs[id] = append(s.certs[id], serial)
	s.chains[id], s.keys[id] = chain, key
	return nil
}

func (s *sink) DropCertificate(id identity.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropped[id] = true
}

func (s *sink) serials(id identity.ID) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.certs[id]...)
}

// startCA serves the fake over mTLS on loopback and returns a client whose
// certificate carries the edge's control-plane identity.
func startCA(t *testing.T) (*xdstest.FakeCA, cav1.CertificateAuthorityServiceClient) {
	t.Helper()
	root, err := xdstest.NewCA("mesh-root")
	if err != nil {
		t.Fatal(err)
	}
	f := &xdstest.FakeCA{Root: root}
	stc, err := root.ServerTLS("spiffe://cluster.local/osm/cert-authority")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(stc)))
	cav1.RegisterCertificateAuthorityServiceServer(g, f)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	ctc, err := root.ClientTLS("spiffe://cluster.local/osm/xds-edge")
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(ctc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return f, cav1.NewCertificateAuthorityServiceClient(cc)
}

func newIssuer(t *testing.T, signer Signer, s Sink, o Options) *Issuer {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	log := logrus.New()
	log.SetOutput(io.Discard)
	o.Signer, o.Sink, o.Log = signer, s, logrus.NewEntry(log)
	i, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- i.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return i
}

var idA = identity.New("cluster.local", "ns-a", "sa-a")

func TestIssuesOncePerIdentityWithALocalKey(t *testing.T) {
	ca, client := startCA(t)
	s := newSink()
	i := newIssuer(t, client, s, Options{TTL: time.Hour, Linger: time.Hour})
	i.Acquire(idA)
	i.Acquire(idA) // a second proxy of the same identity
	xdstest.WaitFor(t, "a certificate", func() bool { return len(s.serials(idA)) == 1 })
	if n := ca.Calls(); n != 1 {
		t.Errorf("CA called %d times for one identity, want 1", n)
	}
	s.mu.Lock()
	pair, err := tls.X509KeyPair(s.chains[idA], s.keys[idA])
	s.mu.Unlock()
	if err != nil {
		t.Fatalf("the chain and key do not match: %v", err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != idA.String() {
		t.Errorf("certificate identity %v, want %s", leaf.URIs, idA)
	}
	if c := i.Current(idA); c == nil || c.Serial != s.serials(idA)[0] {
		t.Errorf("Current = %v", c)
	}
}

func TestRenewsAtHalfLife(t *testing.T) {
	_, client := startCA(t)
	s := newSink()
	i := newIssuer(t, client, s, Options{TTL: 2 * time.Second, Linger: time.Hour})
	start := time.Now()
	i.Acquire(idA)
	xdstest.WaitFor(t, "the first certificate", func() bool { return len(s.serials(idA)) >= 1 })
	first := time.Since(start)
	xdstest.WaitFor(t, "the renewal", func() bool { return len(s.serials(idA)) >= 2 })
	elapsed := time.Since(start) - first
	// Renewal is due at half of the 2s lifetime (x509 times have second
	// precision, so between 0.5s and 1.5s); never at its end.
	if elapsed < 400*time.Millisecond || elapsed > 1700*time.Millisecond {
		t.Errorf("renewed %s after issuance, want about 1s", elapsed)
	}
	if got := s.serials(idA); got[0] == got[1] {
		t.Errorf("renewal kept serial %s", got[0])
	}
}

func TestRetriesWhenTheCAFails(t *testing.T) {
	ca, client := startCA(t)
	ca.FailNext(2)
	s := newSink()
	i := newIssuer(t, client, s, Options{TTL: time.Hour, Linger: time.Hour, RetryMin: 10 * time.Millisecond, RetryMax: 20 * time.Millisecond})
	i.Acquire(idA)
	xdstest.WaitFor(t, "a certificate after two failures", func() bool { return len(s.serials(idA)) == 1 })
	if n := ca.Calls(); n != 3 {
		t.Errorf("CA called %d times, want 3", n)
	}
}

func TestRefusesACertificateForAnotherIdentity(t *testing.T) {
	ca, client := startCA(t)
	ca.CertifyWrongIdentity()
	s := newSink()
	i := newIssuer(t, client, s, Options{TTL: time.Hour, Linger: time.Hour, RetryMin: 10 * time.Millisecond, RetryMax: 10 * time.Millisecond})
	i.Acquire(idA)
	xdstest.WaitFor(t, "retries", func() bool { return ca.Calls() >= 3 })
	if got := s.serials(idA); len(got) != 0 {
		t.Errorf("a certificate for another identity was installed: %v", got)
	}
}

func TestDropsAfterTheLastProxyLeaves(t *testing.T) {
	ca, client := startCA(t)
	s := newSink()
	i := newIssuer(t, client, s, Options{TTL: time.Hour, Linger: 50 * time.Millisecond})
	i.Acquire(idA)
	xdstest.WaitFor(t, "a certificate", func() bool { return len(s.serials(idA)) == 1 })
	i.Release(idA)
	// Coming back within the linger reuses the certificate.
	i.Acquire(idA)
	time.Sleep(100 * time.Millisecond)
	if n := ca.Calls(); n != 1 {
		t.Errorf("CA called %d times after a quick reconnect, want 1", n)
	}
	i.Release(idA)
	xdstest.WaitFor(t, "the drop", func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.dropped[idA] })
	if i.Current(idA) != nil {
		t.Error("the certificate is still kept")
	}
}

func TestBadSignerResponses(t *testing.T) {
	for _, c := range []struct {
		name string
		resp *cav1.SignResponse
	}{
		{"no pem", &cav1.SignResponse{CertificateChainPem: []byte("garbage")}},
		{"not a certificate", &cav1.SignResponse{CertificateChainPem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2}})}},
	} {
		t.Run(c.name, func(t *testing.T) {
			i := newIssuer(t, signerFunc(func() (*cav1.SignResponse, error) { return c.resp, nil }), newSink(), Options{})
			if _, err := i.issue(t.Context(), idA); err == nil {
				t.Error("accepted")
			}
		})
	}
	i := newIssuer(t, signerFunc(func() (*cav1.SignResponse, error) { return nil, errors.New("down") }), newSink(), Options{})
	if _, err := i.issue(t.Context(), idA); err == nil {
		t.Error("a failed Sign was not reported")
	}
}

type signerFunc func() (*cav1.SignResponse, error)

func (f signerFunc) Sign(context.Context, *cav1.SignRequest, ...grpc.CallOption) (*cav1.SignResponse, error) {
	return f()
}

// Current returns the certificate kept for id, or nil.
func (i *Issuer) Current(id identity.ID) *Certificate {
	i.mu.Lock()
	defer i.mu.Unlock()
	if e := i.entries[id]; e != nil {
		return e.cert
	}
	return nil
}
