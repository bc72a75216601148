package pki

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/openservicemesh/osm/libs/identity"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// RootSet is the rotation state: the root that signs and the other roots
// that stay trusted. A rotation moves through three RootSets, each chosen by
// configuration:
//
//  1. {signing: old, trusted: [new]}: the bundle carries both roots, so every
//     proxy learns the new root before any leaf depends on it;
//  2. {signing: new, trusted: [old]}: new leaves come from the new root while
//     the old root stays trusted until the last old leaf expires;
//  3. {signing: new}: the old root is gone.
//
// A RootSet is a value computed from configuration, so each step is safe to
// repeat and a restarted CA lands in the same state.
type RootSet struct {
	signing *Issuer
	trusted []*x509.Certificate
}

// NewRootSet returns the set with signing as the issuing root and trusted as
// the additional roots kept in the bundle. Duplicates, including the signing
// root itself, are dropped.
func NewRootSet(signing *Issuer, trusted ...*x509.Certificate) *RootSet {
	rs := &RootSet{signing: signing}
	seen := map[string]bool{signing.ID(): true}
	for _, c := range trusted {
		if id := RootID(c); !seen[id] {
			seen[id] = true
			rs.trusted = append(rs.trusted, c)
		}
	}
	return rs
}

// Signing is the issuing root.
func (rs *RootSet) Signing() *Issuer { return rs.signing }

// Bundle is the trust bundle of the set: every root, the signing one marked.
func (rs *RootSet) Bundle() *meshv1.TrustBundle {
	roots := append([]*x509.Certificate{rs.signing.Certificate()}, rs.trusted...)
	return BuildBundle(roots, rs.signing.ID())
}

// BuildBundle makes a trust bundle of roots, marking the one whose RootID is
// signingID. Roots are sorted by id, and the version hashes the ids and the
// signing mark, so it changes whenever the set or the signing root changes
// and never otherwise. UpdateTime is left for the publisher to set.
func BuildBundle(roots []*x509.Certificate, signingID string) *meshv1.TrustBundle {
	b := &meshv1.TrustBundle{}
	seen := map[string]bool{}
	for _, c := range roots {
		id := RootID(c)
		if seen[id] {
			continue
		}
		seen[id] = true
		b.Roots = append(b.Roots, &meshv1.TrustRoot{
			Id:             id,
			CertificatePem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}),
			NotBefore:      timestamppb.New(c.NotBefore),
			NotAfter:       timestamppb.New(c.NotAfter),
			Signing:        id == signingID,
		})
	}
	sort.Slice(b.Roots, func(i, j int) bool { return b.Roots[i].Id < b.Roots[j].Id })
	h := sha256.New()
	for _, r := range b.Roots {
		fmt.Fprintf(h, "%s %t\n", r.Id, r.Signing)
	}
	b.Version = hex.EncodeToString(h.Sum(nil))[:16]
	return b
}

// BundlePool parses a bundle's roots into a pool for verification.
func BundlePool(b *meshv1.TrustBundle) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	for _, r := range b.GetRoots() {
		c, err := ParseCertificatePEM(r.CertificatePem)
		if err != nil {
			return nil, fmt.Errorf("bundle root %s: %w", r.Id, err)
		}
		pool.AddCert(c)
	}
	return pool, nil
}

// Policy is the issuance policy the CA applies to every request.
type Policy struct {
	// TrustDomain is the only trust domain the CA issues for.
	TrustDomain string
	// DefaultTTL is the lifetime of a leaf when the request names none.
	DefaultTTL time.Duration
	// MaxTTL is the longest lifetime a request may ask for.
	MaxTTL time.Duration
}

// TTL resolves a requested lifetime: zero means the default; negative or
// over the maximum is refused.
func (p Policy) TTL(requested time.Duration) (time.Duration, error) {
	switch {
	case requested == 0:
		return min(p.DefaultTTL, p.MaxTTL), nil
	case requested < 0:
		return 0, Errorf(ReasonInvalidTTL, "ttl %s is negative", requested)
	case requested > p.MaxTTL:
		return 0, Errorf(ReasonTTLTooLong, "ttl %s exceeds the maximum %s", requested, p.MaxTTL)
	}
	return requested, nil
}

// ParseIdentity parses a workload SPIFFE identity and checks that it belongs
// to trustDomain. The error is an *Error with ReasonInvalidIdentity or
// ReasonForeignTrustDomain.
func ParseIdentity(s, trustDomain string) (identity.ID, error) {
	id, err := identity.ParseIn(s, trustDomain)
	switch {
	case errors.Is(err, identity.ErrForeignTrustDomain):
		return identity.ID{}, Errorf(ReasonForeignTrustDomain, "%v", err)
	case err != nil:
		return identity.ID{}, Errorf(ReasonInvalidIdentity, "%v", err)
	}
	return id, nil
}

// WorkloadRequest is a validated request for a workload certificate.
type WorkloadRequest struct {
	// CSR is the parsed, signature-checked request.
	CSR *x509.CertificateRequest
	// CSRDER is the CSR in DER form, for providers that forward it.
	CSRDER []byte
	// Identity is the identity to certify.
	Identity identity.ID
	// URI is the certificate's URI SAN: Identity's for the usage asked.
	URI *url.URL
	// TTL is the lifetime, already resolved against the policy.
	TTL time.Duration
}

// ValidateWorkload checks a Sign request against the policy: the CSR parses
// and has an ECDSA P-256 key that signed it, the identity is a workload ID of
// the trust domain, the CSR names no other URI than the identity's for
// usage, and the TTL is allowed. Every refusal is an *Error naming its
// Reason.
func (p Policy) ValidateWorkload(csrData []byte, uri string, usage identity.Usage, ttl time.Duration) (*WorkloadRequest, error) {
	id, err := ParseIdentity(uri, p.TrustDomain)
	if err != nil {
		return nil, err
	}
	csr, err := ParseCSRFor(csrData, id.URLFor(usage))
	if err != nil {
		return nil, err
	}
	d, err := p.TTL(ttl)
	if err != nil {
		return nil, err
	}
	return &WorkloadRequest{CSR: csr, CSRDER: csr.Raw, Identity: id, URI: id.URLFor(usage), TTL: d}, nil
}

// SignRequest is what a provider signs: a validated CSR and the identity
// (and, for the CA's own serving certificate only, DNS names) to certify.
type SignRequest struct {
	// CSR passed ParseCSR; providers that forward CSRs send CSR.Raw.
	CSR *x509.CertificateRequest
	// URI is the identity, the certificate's only URI SAN.
	URI *url.URL
	// DNSNames are extra SANs.
	DNSNames []string
	// TTL is the resolved lifetime.
	TTL time.Duration
}
