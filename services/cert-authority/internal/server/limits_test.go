package server

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/openservicemesh/osm/libs/identity"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	"github.com/openservicemesh/osm/services/cert-authority/internal/csrtest"
)

// countingReviewer is fakeReviewer that counts the reviews it was asked for.
type countingReviewer struct {
	fakeReviewer
	n atomic.Int64
}

func (c *countingReviewer) Review(ctx context.Context, token string) (string, error) {
	c.n.Add(1)
	return c.fakeReviewer.Review(ctx, token)
}

// flood makes n calls of call from 8 goroutines and returns how many
// succeeded and how many were refused with ResourceExhausted; any other
// outcome fails the test.
func flood(t *testing.T, n int, call func() error) (ok, exhausted int) {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	calls := make(chan struct{}, n)
	for range n {
		calls <- struct{}{}
	}
	close(calls)
	for range 8 {
		wg.Go(func() {
			for range calls {
				err := call()
				mu.Lock()
				switch st, _ := status.FromError(err); {
				case err == nil:
					ok++
				case st.Code() == codes.ResourceExhausted && strings.Contains(st.Message(), "retry in"):
					exhausted++
				default:
					t.Errorf("unexpected result: %v", err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return ok, exhausted
}

// TestBootstrapFloodCostsNoTokenReview (issue 15, item 7): a flood of
// Bootstrap calls from one address is refused with ResourceExhausted before
// any token review, past the caller's burst.
func TestBootstrapFloodCostsNoTokenReview(t *testing.T) {
	rev := &countingReviewer{fakeReviewer: fakeReviewer{"good-edge-token": "system:serviceaccount:osm-system:osm-xds-edge"}}
	ca := startCA(t, caOptions{reviewer: rev, accounts: map[identity.Role]ServiceAccount{identity.RoleXDSEdge: {"osm-system", "osm-xds-edge"}},
		limits: Limits{Bootstrap: Limit{Rate: 1, Burst: 5}}})
	cl := ca.dial(t, nil)
	csr := csrtest.PEM(t, csrtest.Key(t), nil)
	start := time.Now()
	ok, exhausted := flood(t, 500, func() error {
		_, err := cl.Bootstrap(t.Context(), &cav1.BootstrapRequest{Token: "forged", TokenType: cav1.TokenType_TOKEN_TYPE_SERVICE_ACCOUNT,
			Role: cav1.ComponentRole_COMPONENT_ROLE_XDS_EDGE, Csr: csr})
		if st, _ := status.FromError(err); st.Code() == codes.Unauthenticated {
			return nil // reviewed and refused: the cost the limit bounds
		}
		return err
	})
	allowed := 5 + int(time.Since(start).Seconds()) + 1
	if ok > allowed || int(rev.n.Load()) != ok || ok+exhausted != 500 {
		t.Fatalf("%d of 500 calls reached a token review (%d reviews), %d refused as exhausted; want at most %d", ok, rev.n.Load(), exhausted, allowed)
	}
	t.Logf("flood of 500 Bootstrap calls: %d token reviews, %d ResourceExhausted in %s", ok, exhausted, time.Since(start).Round(time.Millisecond))
}

// TestSignIsPacedPerCertificate: one edge flooding Sign is paced, and
// another edge, with its own certificate, still signs.
func TestSignIsPacedPerCertificate(t *testing.T) {
	ca := startCA(t, caOptions{devToken: devToken, limits: Limits{Sign: Limit{Rate: 1, Burst: 5}}})
	noisy := ca.dial(t, ca.bootstrap(t, cav1.ComponentRole_COMPONENT_ROLE_XDS_EDGE))
	quiet := ca.dial(t, ca.bootstrap(t, cav1.ComponentRole_COMPONENT_ROLE_XDS_EDGE))
	req := &cav1.SignRequest{Csr: csrtest.PEM(t, csrtest.Key(t), nil), Identity: "spiffe://cluster.local/ns/bookstore/sa/bookbuyer", Usage: cav1.CertificateUsage_CERTIFICATE_USAGE_SERVICE}
	start := time.Now()
	ok, exhausted := flood(t, 300, func() error { _, err := noisy.Sign(t.Context(), req); return err })
	if allowed := 5 + int(time.Since(start).Seconds()) + 1; ok > allowed || ok < 5 || ok+exhausted != 300 {
		t.Fatalf("the flooding edge got %d signatures and %d ResourceExhausted of 300; want 5 to %d signed", ok, exhausted, allowed)
	}
	if _, err := quiet.Sign(t.Context(), req); err != nil {
		t.Fatalf("the other edge was refused: %v", err)
	}
}

// TestNoLimitsByDefault: the zero Limits limit nothing (the service sets
// DefaultLimits from its flags).
func TestNoLimitsByDefault(t *testing.T) {
	ca := startCA(t, caOptions{devToken: devToken})
	edge := ca.dial(t, ca.bootstrap(t, cav1.ComponentRole_COMPONENT_ROLE_XDS_EDGE))
	req := &cav1.SignRequest{Csr: csrtest.PEM(t, csrtest.Key(t), nil), Identity: "spiffe://cluster.local/ns/bookstore/sa/bookbuyer", Usage: cav1.CertificateUsage_CERTIFICATE_USAGE_SERVICE}
	if ok, _ := flood(t, 100, func() error { _, err := edge.Sign(t.Context(), req); return err }); ok != 100 {
		t.Fatalf("%d of 100 signed without limits", ok)
	}
}
