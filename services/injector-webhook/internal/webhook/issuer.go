package webhook

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/identity"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
)

// CAIssuer issues certificates through the cert-authority: it generates the
// key here, sends only a CSR, and returns the signed chain with the current
// trust bundle.
//
// The bundle is cached. Once it is BundleMaxAge old, the next Issue starts
// one refresh in the background and returns the cached roots meanwhile, so
// no admission waits for a second RPC; only when the cache is ten times
// BundleMaxAge old (the CA kept failing to answer) does Issue fetch it
// itself, and fail with it.
type CAIssuer struct {
	Client cav1.CertificateAuthorityServiceClient
	// TTL is the lifetime asked for (of service certificates, while
	// SetServiceLifetime has set none); the CA may shorten it.
	TTL time.Duration
	// BundleMaxAge is how long a fetched trust bundle is used before it is
	// refreshed; 0 means 5 seconds. A root rotation reaches new pods within
	// it plus one call to the CA.
	BundleMaxAge time.Duration
	// Roots, when set, is the current trust bundle as the injector's
	// bundle watch holds it, so that the roots a certificate is issued
	// with are those the renewal compares with; while it returns an error,
	// Issue fetches the bundle as above.
	Roots func() ([]byte, error)

	// serviceTTL is SetServiceLifetime's (lifetime.go).
	serviceTTL atomic.Int64

	mu         sync.Mutex
	roots      []byte
	fetchedAt  time.Time
	refreshing bool
}

var _ Issuer = (*CAIssuer)(nil)

// Issue implements Issuer.
func (c *CAIssuer) Issue(ctx context.Context, id identity.ID, u identity.Usage) (*Certificate, error) {
	signed, err := caclient.SignWith(ctx, c.Client, id, u, c.signOptions(u))
	if err != nil {
		return nil, err
	}
	var roots []byte
	if c.Roots != nil {
		roots, err = c.Roots()
	}
	if c.Roots == nil || err != nil {
		if roots, err = c.trust(ctx); err != nil {
			return nil, err
		}
	}
	return &Certificate{ChainPEM: signed.ChainPEM, KeyPEM: signed.KeyPEM, TrustPEM: roots}, nil
}

func (c *CAIssuer) maxAge() time.Duration {
	if c.BundleMaxAge <= 0 {
		return 5 * time.Second
	}
	return c.BundleMaxAge
}

// trust returns the current roots; see the type's doc.
func (c *CAIssuer) trust(ctx context.Context) ([]byte, error) {
	maxAge := c.maxAge()
	c.mu.Lock()
	roots, age := c.roots, time.Since(c.fetchedAt)
	if roots != nil && age < 10*maxAge {
		if age >= maxAge && !c.refreshing {
			c.refreshing = true
			go c.refresh()
		}
		c.mu.Unlock()
		return roots, nil
	}
	c.mu.Unlock()
	return c.fetch(ctx)
}

// refresh fetches the bundle in the background.
func (c *CAIssuer) refresh() {
	ctx, cancel := context.WithTimeout(context.Background(), c.maxAge())
	defer cancel()
	_, _ = c.fetch(ctx) // on failure the cache ages towards a synchronous fetch
	c.mu.Lock()
	c.refreshing = false
	c.mu.Unlock()
}

// fetch asks the CA for the bundle and caches its roots.
func (c *CAIssuer) fetch(ctx context.Context) ([]byte, error) {
	tb, err := c.Client.GetTrustBundle(ctx, &cav1.GetTrustBundleRequest{})
	if err != nil {
		return nil, fmt.Errorf("get trust bundle: %w", err)
	}
	roots := caclient.RootsPEM(tb.GetTrustBundle())
	if len(roots) == 0 {
		return nil, fmt.Errorf("the CA returned an empty trust bundle")
	}
	c.mu.Lock()
	c.roots, c.fetchedAt = roots, time.Now()
	c.mu.Unlock()
	return roots, nil
}
