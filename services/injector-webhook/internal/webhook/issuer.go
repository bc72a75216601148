package webhook

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

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
	key, err := identity.NewKey()
	if err != nil {
		return nil, err
	}
	csr, err := key.CSR(id)
	if err != nil {
		return nil, err
	}
	req := &cav1.SignRequest{Csr: csr, Identity: id.String()}
	if c.TTL > 0 {
		req.Ttl = durationpb.New(c.TTL)
	}
	signed, err := c.Client.Sign(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	tb, err := c.Client.GetTrustBundle(ctx, &cav1.GetTrustBundleRequest{})
	if err != nil {
		return nil, fmt.Errorf("get trust bundle: %w", err)
	}
	var roots bytes.Buffer
	for _, r := range tb.GetTrustBundle().GetRoots() {
		roots.Write(r.GetCertificatePem())
	}
	if roots.Len() == 0 {
		return nil, fmt.Errorf("the CA returned an empty trust bundle")
	}
	keyPEM, err := key.PEM()
	if err != nil {
		return nil, err
	}
	return &Certificate{ChainPEM: signed.GetCertificateChainPem(), KeyPEM: keyPEM, TrustPEM: roots.Bytes()}, nil
}
