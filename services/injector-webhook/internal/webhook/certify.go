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
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/bootstrap"
)

// Issuer issues a certificate for a workload identity, for usage u.
type Issuer interface {
	Issue(ctx context.Context, id identity.ID, u identity.Usage) (*Certificate, error)
}

// Certifier issues the certificates of bootstrap Secrets: the pod's xDS
// client certificate, for its namespace and service account, with the
// roots that verify the edges; and for a proxyless gRPC pod's Secret
// (Proxyless) also the workload's service certificate, which gRPC presents
// to its peers.
type Certifier struct {
	Issuer      Issuer
	TrustDomain string
	// Observe, when set, is told how long each issuance took.
	Observe func(d time.Duration, err error)
}

// issue issues a certificate for usage u to the identity of service
// account sa in namespace ns.
func (c *Certifier) issue(ctx context.Context, ns, sa string, u identity.Usage) (*Certificate, error) {
	id := identity.New(c.TrustDomain, ns, serviceAccount(sa))
	start := time.Now()
	cert, err := c.Issuer.Issue(ctx, id, u)
	if c.Observe != nil {
		c.Observe(time.Since(start), err)
	}
	if err != nil {
		return nil, fmt.Errorf("issue the bootstrap %s certificate for %s: %w", u, id, err)
	}
	return cert, nil
}

// Certify issues the certificates of the bootstrap Secret s, for service
// account sa of the Secret's namespace, and puts them into s: the xDS
// client certificate, and for a proxyless Secret the service certificate.
func (c *Certifier) Certify(ctx context.Context, s *corev1.Secret, sa string) error {
	cert, err := c.issue(ctx, s.Namespace, sa, identity.UsageXDSClient)
	if err != nil {
		return err
	}
	if !Proxyless(s) {
		return SetCertificate(s, cert)
	}
	svc, err := c.issue(ctx, s.Namespace, sa, identity.UsageService)
	if err != nil {
		return err
	}
	if err := setData(s, bootstrap.FileServiceCert, bootstrap.FileServiceKey, svc); err != nil {
		return err
	}
	return SetCertificate(s, cert)
}

// LabelProxyless marks the bootstrap Secret of a proxyless gRPC pod, with
// the value layout.ProxylessGRPC.
const LabelProxyless = layout.NodeMetadataProxyless

// Proxyless reports whether s is the bootstrap Secret of a proxyless gRPC
// pod: it holds gRPC's bootstrap, and the service certificate besides the
// xDS client certificate.
func Proxyless(s *corev1.Secret) bool { return s.Labels[LabelProxyless] == layout.ProxylessGRPC }

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

// SetCertificate puts cert, the xDS client certificate, into the
// bootstrap Secret s: the chain, the key and the roots, and the
// annotations that mirror the certificate due first (of a proxyless
// Secret, the service certificate may be) and the roots.
func SetCertificate(s *corev1.Secret, cert *Certificate) error {
	if err := setData(s, bootstrap.FileCert, bootstrap.FileKey, cert); err != nil {
		return err
	}
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	if first, err := FirstDue(s); err == nil {
		s.Annotations[AnnotationCertNotBefore] = first.Leaf.NotBefore.UTC().Format(time.RFC3339)
		s.Annotations[AnnotationCertNotAfter] = first.Leaf.NotAfter.UTC().Format(time.RFC3339)
	}
	SetTrust(s, cert.TrustPEM)
	return nil
}

// setData puts cert's chain and key into s as chainFile and keyFile.
func setData(s *corev1.Secret, chainFile, keyFile string, cert *Certificate) error {
	if _, err := Leaf(cert.ChainPEM); err != nil {
		return fmt.Errorf("bootstrap secret %s/%s: %s: %w", s.Namespace, s.Name, chainFile, err)
	}
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	s.Data[chainFile] = cert.ChainPEM
	s.Data[keyFile] = cert.KeyPEM
	return nil
}

// SetTrust puts roots into the bootstrap Secret s as ca.crt, and into a
// proxyless Secret also as the SPIFFE bundle map of the trust domain of
// its xDS client certificate (bootstrap.FileSPIFFEBundle; left as it is
// when the certificate or the roots do not parse).
func SetTrust(s *corev1.Secret, roots []byte) {
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Data[bootstrap.FileCA] = roots
	s.Annotations[AnnotationTrust] = TrustHash(roots)
	if !Proxyless(s) {
		return
	}
	if leaf, err := Leaf(s.Data[bootstrap.FileCert]); err == nil && len(leaf.URIs) == 1 {
		if b, err := bootstrap.SPIFFEBundle(leaf.URIs[0].Host, roots); err == nil {
			s.Data[bootstrap.FileSPIFFEBundle] = b
		}
	}
}

// Cert is one certificate of a bootstrap Secret.
type Cert struct {
	// File is its name in the Secret.
	File     string
	ChainPEM []byte
	Leaf     *x509.Certificate
}

// Certs returns the certificates the bootstrap Secret s must hold: the
// xDS client certificate, and of a proxyless Secret the service
// certificate; an error names the one missing or unreadable.
func Certs(s *corev1.Secret) ([]Cert, error) {
	files := []string{bootstrap.FileCert}
	if Proxyless(s) {
		files = append(files, bootstrap.FileServiceCert)
	}
	out := make([]Cert, 0, len(files))
	for _, f := range files {
		leaf, err := Leaf(s.Data[f])
		if err != nil {
			return nil, fmt.Errorf("bootstrap secret %s/%s: %s: %w", s.Namespace, s.Name, f, err)
		}
		out = append(out, Cert{File: f, ChainPEM: s.Data[f], Leaf: leaf})
	}
	return out, nil
}

// FirstDue is the certificate of s (Certs) renewed first.
func FirstDue(s *corev1.Secret) (Cert, error) {
	certs, err := Certs(s)
	if err != nil {
		return Cert{}, err
	}
	first := certs[0]
	for _, c := range certs[1:] {
		if RenewAt(c.Leaf.NotBefore, c.Leaf.NotAfter).Before(RenewAt(first.Leaf.NotBefore, first.Leaf.NotAfter)) {
			first = c
		}
	}
	return first, nil
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
