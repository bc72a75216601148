package webhook

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/identity"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
)

// CAIssuer issues certificates through the cert-authority: it generates the
// key here, sends only a CSR, and returns the signed chain with the current
// trust bundle.
type CAIssuer struct {
	Client cav1.CertificateAuthorityServiceClient
	// TTL is the lifetime asked for; the CA may shorten it.
	TTL time.Duration
	// BundleMaxAge is how long a fetched trust bundle is reused; 0 means
	// 5 seconds. A root rotation reaches new pods within it.
	BundleMaxAge time.Duration

	mu        sync.Mutex
	roots     []byte
	fetchedAt time.Time
}

var _ Issuer = (*CAIssuer)(nil)

// Issue implements Issuer.
func (c *CAIssuer) Issue(ctx context.Context, id identity.ID) (*Certificate, error) {
	signed, err := caclient.Sign(ctx, c.Client, id, c.TTL)
	if err != nil {
		return nil, err
	}
	roots, err := c.trust(ctx)
	if err != nil {
		return nil, err
	}
	return &Certificate{ChainPEM: signed.ChainPEM, KeyPEM: signed.KeyPEM, TrustPEM: roots}, nil
}

// trust returns the current roots, fetching them at most every
// BundleMaxAge.
func (c *CAIssuer) trust(ctx context.Context) ([]byte, error) {
	maxAge := c.BundleMaxAge
	if maxAge <= 0 {
		maxAge = 5 * time.Second
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.roots != nil && time.Since(c.fetchedAt) < maxAge {
		return c.roots, nil
	}
	tb, err := c.Client.GetTrustBundle(ctx, &cav1.GetTrustBundleRequest{})
	if err != nil {
		return nil, fmt.Errorf("get trust bundle: %w", err)
	}
	roots := caclient.RootsPEM(tb.GetTrustBundle())
	if len(roots) == 0 {
		return nil, fmt.Errorf("the CA returned an empty trust bundle")
	}
	c.roots, c.fetchedAt = roots, time.Now()
	return roots, nil
}
