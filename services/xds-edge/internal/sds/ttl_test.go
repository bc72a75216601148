package sds

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"net/url"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/xdstest"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
)

// recorder passes Sign calls on and keeps the requests; with max set it
// plays a CA older than clamp_ttl: a ttl over max is refused with
// ttl_too_long whatever clamp_ttl says.
type recorder struct {
	next Signer
	max  time.Duration
	mu   sync.Mutex
	reqs []*cav1.SignRequest
}

func (r *recorder) Sign(ctx context.Context, in *cav1.SignRequest, opts ...grpc.CallOption) (*cav1.SignResponse, error) {
	r.mu.Lock()
	r.reqs = append(r.reqs, in)
	r.mu.Unlock()
	if r.max > 0 && in.GetTtl().AsDuration() > r.max {
		st, _ := status.New(codes.InvalidArgument, "ttl_too_long: ttl exceeds the maximum").
			WithDetails(&errdetails.ErrorInfo{Reason: caclient.ReasonTTLTooLong, Domain: caclient.ErrorDomain})
		return nil, st.Err()
	}
	return r.next.Sign(ctx, in, opts...)
}

func (r *recorder) requests() []*cav1.SignRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*cav1.SignRequest(nil), r.reqs...)
}

// lifetimeOf is the validity of the certificate the sink holds for idA.
func lifetimeOf(t *testing.T, s *sink) time.Duration {
	t.Helper()
	s.mu.Lock()
	chain := s.chains[idA]
	s.mu.Unlock()
	block, _ := pem.Decode(chain)
	if block == nil {
		t.Fatal("no certificate")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c.NotAfter.Sub(c.NotBefore)
}

// TestAsksTheLifetimeInOrder: the MeshConfig's lifetime (SetLifetime) is
// asked with clamp_ttl; without it, Options.TTL (--cert-ttl); without
// either, no ttl (the CA's --default-ttl). A change applies at the next
// issue, and setting none falls back.
func TestAsksTheLifetimeInOrder(t *testing.T) {
	_, client := startCA(t)
	for _, c := range []struct {
		name      string
		flag      time.Duration
		mesh      time.Duration
		wantTTL   time.Duration // 0: none asked
		wantClamp bool
		wantLife  time.Duration
	}{
		{"nothing set: the CA's default", 0, 0, 0, false, 24 * time.Hour},
		{"--cert-ttl", time.Hour, 0, time.Hour, false, time.Hour},
		{"the MeshConfig's", 0, 2 * time.Hour, 2 * time.Hour, true, 2 * time.Hour},
		{"the MeshConfig's over --cert-ttl", time.Hour, 3 * time.Hour, 3 * time.Hour, true, 3 * time.Hour},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := &recorder{next: client}
			s := newSink()
			i := newIssuer(t, r, s, Options{TTL: c.flag, Linger: time.Hour})
			if c.mesh > 0 {
				i.SetLifetime(c.mesh)
			}
			i.Acquire(idA)
			xdstest.WaitFor(t, "a certificate", func() bool { return len(s.serials(idA)) == 1 })
			req := r.requests()[0]
			if got := req.GetTtl(); (got == nil) != (c.wantTTL == 0) || got.AsDuration() != c.wantTTL || req.GetClampTtl() != c.wantClamp {
				t.Errorf("asked ttl %v clamp %v, want %s clamp %v", got, req.GetClampTtl(), c.wantTTL, c.wantClamp)
			}
			if got := lifetimeOf(t, s); got != c.wantLife {
				t.Errorf("certificate lifetime %s, want %s", got, c.wantLife)
			}
		})
	}
}

// TestRenewalFollowsANewLifetime: a lifetime set while a certificate is
// held applies at its renewal, and the renewal after that comes at half of
// the new lifetime.
func TestRenewalFollowsANewLifetime(t *testing.T) {
	_, client := startCA(t)
	r := &recorder{next: client}
	s := newSink()
	i := newIssuer(t, r, s, Options{TTL: time.Hour, Linger: time.Hour})
	i.SetLifetime(2 * time.Second)
	i.Acquire(idA)
	xdstest.WaitFor(t, "the first certificate", func() bool { return len(s.serials(idA)) == 1 })
	if got := lifetimeOf(t, s); got != 2*time.Second {
		t.Fatalf("first certificate lifetime %s, want 2s", got)
	}
	i.SetLifetime(6 * time.Second)
	xdstest.WaitFor(t, "the renewal", func() bool { return len(s.serials(idA)) == 2 })
	renewed := time.Now()
	if got := lifetimeOf(t, s); got != 6*time.Second {
		t.Fatalf("renewed certificate lifetime %s, want the new 6s", got)
	}
	xdstest.WaitFor(t, "the second renewal", func() bool { return len(s.serials(idA)) == 3 })
	// Half of 6s, with x509's whole seconds: between 2s and 4s; at half of
	// the old 2s lifetime it would come after about 1s.
	if d := time.Since(renewed); d < 2*time.Second || d > 4500*time.Millisecond {
		t.Errorf("second renewal %s after the first, want about 3s (half of 6s)", d)
	}
	for n, req := range r.requests() {
		if !req.GetClampTtl() {
			t.Errorf("request %d without clamp_ttl", n)
		}
	}
}

// TestOldCARefusingTheLifetime: a CA without clamp_ttl refuses a lifetime
// over its maximum with ttl_too_long; the edge asks again without a ttl
// and serves the CA's default rather than nothing.
func TestOldCARefusingTheLifetime(t *testing.T) {
	_, client := startCA(t)
	r := &recorder{next: client, max: 48 * time.Hour}
	s := newSink()
	i := newIssuer(t, r, s, Options{Linger: time.Hour, RetryMin: time.Hour, RetryMax: time.Hour})
	i.SetLifetime(72 * time.Hour)
	i.Acquire(idA)
	xdstest.WaitFor(t, "a certificate", func() bool { return len(s.serials(idA)) == 1 })
	reqs := r.requests()
	if len(reqs) != 2 || reqs[0].GetTtl().AsDuration() != 72*time.Hour || reqs[1].GetTtl() != nil || reqs[1].GetClampTtl() {
		t.Fatalf("requests %v, want 72h then none", reqs)
	}
	if got := lifetimeOf(t, s); got != 24*time.Hour {
		t.Errorf("lifetime %s, want the CA's default 24h", got)
	}
}

// TestAwaitLifetimeHoldsTheFirstSignature: with AwaitLifetime the first
// certificate waits for the MeshConfig's lifetime rather than being
// issued with the default a moment before it is known.
func TestAwaitLifetimeHoldsTheFirstSignature(t *testing.T) {
	_, client := startCA(t)
	r := &recorder{next: client}
	s := newSink()
	i := newIssuer(t, r, s, Options{Linger: time.Hour, AwaitLifetime: time.Hour})
	i.Acquire(idA)
	time.Sleep(200 * time.Millisecond)
	if n := len(r.requests()); n != 0 {
		t.Fatalf("%d signatures before the lifetime was known", n)
	}
	i.SetLifetime(2 * time.Hour)
	xdstest.WaitFor(t, "a certificate", func() bool { return len(s.serials(idA)) == 1 })
	if got := lifetimeOf(t, s); got != 2*time.Hour {
		t.Errorf("lifetime %s, want 2h", got)
	}
	// Without a MeshConfig lifetime, AwaitLifetime lapses into the default.
	r2 := &recorder{next: client}
	s2 := newSink()
	i2 := newIssuer(t, r2, s2, Options{Linger: time.Hour, AwaitLifetime: 100 * time.Millisecond})
	i2.Acquire(idA)
	xdstest.WaitFor(t, "a certificate after AwaitLifetime", func() bool { return len(s2.serials(idA)) == 1 })
}

// backdatingSigner signs like the cert-authority: NotBefore a minute
// before issuance, NotAfter the asked lifetime after it.
type backdatingSigner struct{ key *ecdsa.PrivateKey }

func (b backdatingSigner) Sign(_ context.Context, in *cav1.SignRequest, _ ...grpc.CallOption) (*cav1.SignResponse, error) {
	csr, err := x509.ParseCertificateRequest(in.GetCsr())
	if err != nil {
		return nil, err
	}
	uri, err := url.Parse(in.GetIdentity())
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(now.UnixNano()), URIs: []*url.URL{uri}, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(in.GetTtl().AsDuration())}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, csr.PublicKey, b.key)
	if err != nil {
		return nil, err
	}
	return &cav1.SignResponse{CertificateChainPem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// TestRenewsAtHalfOfTheGrantedLifetimeDespiteTheBackdate: the CA's
// certificates start a minute before issuance; a 4s certificate is still
// renewed about 2s after it arrived, not at once (half of NotBefore to
// NotAfter would be in the past, and the edge would re-sign in a loop).
func TestRenewsAtHalfOfTheGrantedLifetimeDespiteTheBackdate(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s := newSink()
	i := newIssuer(t, backdatingSigner{key: key}, s, Options{Linger: time.Hour, RetryMin: 100 * time.Millisecond})
	i.SetLifetime(4 * time.Second)
	i.Acquire(idA)
	xdstest.WaitFor(t, "the first certificate", func() bool { return len(s.serials(idA)) >= 1 })
	first := time.Now()
	xdstest.WaitFor(t, "the renewal", func() bool { return len(s.serials(idA)) >= 2 })
	if d := time.Since(first); d < 1500*time.Millisecond || d > 3*time.Second {
		t.Errorf("renewed %s after the first certificate, want about 2s (half of the 4s granted)", d)
	}
}
