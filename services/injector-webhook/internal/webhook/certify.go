package webhook

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
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
	return SetCertificate(s, cert)
}

// Annotations of a bootstrap Secret that mirror its certificate and roots,
// so that the reconciler, which caches the Secrets' metadata only, knows
// when each certificate is due without reading the Secrets; when they are
// missing it reads the certificate itself.
const (
	// AnnotationCertNotBefore and AnnotationCertNotAfter are the
	// certificate's validity, RFC 3339.
	AnnotationCertNotBefore = "openservicemesh.io/bootstrap-cert-not-before"
	AnnotationCertNotAfter  = "openservicemesh.io/bootstrap-cert-not-after"
	// AnnotationTrust is the SHA-256 of ca.crt, hex.
	AnnotationTrust = "openservicemesh.io/bootstrap-trust-sha256"
)

// SetCertificate puts cert into the bootstrap Secret s: the chain, the key
// and the roots, and the annotations that mirror them.
func SetCertificate(s *corev1.Secret, cert *Certificate) error {
	leaf, err := Leaf(cert.ChainPEM)
	if err != nil {
		return fmt.Errorf("bootstrap secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Data[bootstrap.FileCert] = cert.ChainPEM
	s.Data[bootstrap.FileKey] = cert.KeyPEM
	s.Annotations[AnnotationCertNotBefore] = leaf.NotBefore.UTC().Format(time.RFC3339)
	s.Annotations[AnnotationCertNotAfter] = leaf.NotAfter.UTC().Format(time.RFC3339)
	SetTrust(s, cert.TrustPEM)
	return nil
}

// SetTrust puts roots into the bootstrap Secret s as ca.crt.
func SetTrust(s *corev1.Secret, roots []byte) {
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Data[bootstrap.FileCA] = roots
	s.Annotations[AnnotationTrust] = TrustHash(roots)
}

// TrustHash is the AnnotationTrust value of roots.
func TrustHash(roots []byte) string {
	sum := sha256.Sum256(roots)
	return hex.EncodeToString(sum[:])
}

// Leaf parses the first certificate of a PEM chain.
func Leaf(chainPEM []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(chainPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate in the chain")
	}
	return x509.ParseCertificate(block.Bytes)
}

// RenewAt is when a bootstrap certificate valid from notBefore to notAfter
// is renewed: at half of its lifetime, which leaves the kubelet time to
// swap the Secret volume's files (it syncs them about once a minute) well
// before two thirds of it.
func RenewAt(notBefore, notAfter time.Time) time.Time {
	return notBefore.Add(notAfter.Sub(notBefore) / 2)
}
