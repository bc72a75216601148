package webhook

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/bootstrap"
)

// Issuer issues a certificate for a workload identity.
type Issuer interface {
	Issue(ctx context.Context, id identity.ID) (*Certificate, error)
}

// Certifier issues the certificates of bootstrap Secrets: the pod's xDS
// client certificate, for its namespace and service account, with the
// roots that verify the edges.
type Certifier struct {
	Issuer      Issuer
	TrustDomain string
	// Observe, when set, is told how long each issuance took.
	Observe func(d time.Duration, err error)
}

// Issue issues a certificate for the identity of service account sa in
// namespace ns.
func (c *Certifier) Issue(ctx context.Context, ns, sa string) (*Certificate, error) {
	id := identity.New(c.TrustDomain, ns, serviceAccount(sa))
	start := time.Now()
	cert, err := c.Issuer.Issue(ctx, id)
	if c.Observe != nil {
		c.Observe(time.Since(start), err)
	}
	if err != nil {
		return nil, fmt.Errorf("issue the bootstrap certificate for %s: %w", id, err)
	}
	return cert, nil
}

// Certify issues the certificate of the bootstrap Secret s, for service
// account sa of the Secret's namespace, and puts it into s.
func (c *Certifier) Certify(ctx context.Context, s *corev1.Secret, sa string) error {
	cert, err := c.Issue(ctx, s.Namespace, sa)
	if err != nil {
		return err
	}
	SetCertificate(s, cert)
	return nil
}

// SetCertificate puts cert into the bootstrap Secret s: the chain, the key
// and the roots.
func SetCertificate(s *corev1.Secret, cert *Certificate) {
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	s.Data[bootstrap.FileCert] = cert.ChainPEM
	s.Data[bootstrap.FileKey] = cert.KeyPEM
	s.Data[bootstrap.FileCA] = cert.TrustPEM
}
