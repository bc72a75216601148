package webhook

import (
	"context"
	"fmt"
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
}

var _ Issuer = (*CAIssuer)(nil)

// Issue implements Issuer.
func (c *CAIssuer) Issue(ctx context.Context, id identity.ID) (*Certificate, error) {
	signed, err := caclient.Sign(ctx, c.Client, id, c.TTL)
	if err != nil {
		return nil, err
	}
	tb, err := c.Client.GetTrustBundle(ctx, &cav1.GetTrustBundleRequest{})
	if err != nil {
		return nil, fmt.Errorf("get trust bundle: %w", err)
	}
	roots := caclient.RootsPEM(tb.GetTrustBundle())
	if len(roots) == 0 {
		return nil, fmt.Errorf("the CA returned an empty trust bundle")
	}
	return &Certificate{ChainPEM: signed.ChainPEM, KeyPEM: signed.KeyPEM, TrustPEM: roots}, nil
}
