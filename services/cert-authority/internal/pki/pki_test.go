package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/services/cert-authority/internal/csrtest"
)

const td = "cluster.local"

func mustRoot(t testing.TB, now time.Time, validity time.Duration) *Issuer {
	t.Helper()
	c, k, err := GenerateRoot(RootOptions{TrustDomain: td, Validity: validity, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	iss, err := ParseIssuer(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

func policy() Policy {
	return Policy{TrustDomain: td, DefaultTTL: 24 * time.Hour, MaxTTL: 48 * time.Hour}
}

func TestParseIdentity(t *testing.T) {
	good := "spiffe://cluster.local/ns/bookstore/sa/bookbuyer"
	id, err := ParseIdentity(good, td)
	if err != nil || id.Namespace != "bookstore" || id.ServiceAccount != "bookbuyer" || id.String() != good || id.URL().String() != good {
		t.Fatalf("ParseIdentity(%q) = %+v, %v", good, id, err)
	}
	for _, c := range []struct{ in, reason string }{
		{"spiffe://other.domain/ns/a/sa/b", string(ReasonForeignTrustDomain)},
		{"https://cluster.local/ns/a/sa/b", string(ReasonInvalidIdentity)},
		{"spiffe://cluster.local/osm/xds-edge", string(ReasonInvalidIdentity)},
		{"spiffe://cluster.local/ns/a/sa", string(ReasonInvalidIdentity)},
		{"spiffe://cluster.local/ns/A/sa/b", string(ReasonInvalidIdentity)},
		{"spiffe://cluster.local/ns/a/sa/b/extra", string(ReasonInvalidIdentity)},
		{"spiffe://cluster.local/ns/a/sa/b?x=1", string(ReasonInvalidIdentity)},
		{"spiffe://cluster.local:8443/ns/a/sa/b", string(ReasonInvalidIdentity)},
		{"spiffe://cluster.local/ns/a%2Fb/sa/b", string(ReasonInvalidIdentity)},
		{"", string(ReasonInvalidIdentity)},
	} {
		_, err := ParseIdentity(c.in, td)
		if got := string(ReasonOf(err)); got != c.reason {
			t.Errorf("ParseIdentity(%q): reason %q (%v), want %q", c.in, got, err, c.reason)
		}
	}
}

func TestRoleFromURI(t *testing.T) {
	u := identity.ControlPlaneURI(td, identity.RoleXDSEdge)
	if u.String() != "spiffe://cluster.local/osm/xds-edge" {
		t.Fatalf("identity.ControlPlaneURI = %s", u)
	}
	if r, ok := identity.RoleFromURI(u, td); !ok || r != identity.RoleXDSEdge {
		t.Fatalf("identity.RoleFromURI(%s) = %q, %v", u, r, ok)
	}
	for _, s := range []string{"spiffe://other/osm/xds-edge", "spiffe://cluster.local/osm/root", "spiffe://cluster.local/ns/osm/sa/xds-edge"} {
		u, _ := url.Parse(s)
		if r, ok := identity.RoleFromURI(u, td); ok {
			t.Errorf("identity.RoleFromURI(%s) = %q, want no role", s, r)
		}
	}
}

// TestValidateWorkloadRefusals has one case per bad input the CA refuses.
func TestValidateWorkloadRefusals(t *testing.T) {
	id := "spiffe://cluster.local/ns/ns1/sa/sa1"
	k := csrtest.Key(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	other, _ := url.Parse("spiffe://cluster.local/ns/ns1/sa/other")
	same, _ := url.Parse(id)
	good := csrtest.PEM(t, k, nil)
	tampered := func() []byte {
		b, _ := pem.Decode(csrtest.PEM(t, k, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "aaaa"}}))
		i := strings.Index(string(b.Bytes), "aaaa")
		b.Bytes[i] = 'b' // change the signed content, keep the signature
		return pem.EncodeToMemory(b)
	}()
	cases := []struct {
		name     string
		csr      []byte
		identity string
		ttl      time.Duration
		want     Reason
	}{
		{"malformed CSR", []byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"), id, 0, ReasonMalformedCSR},
		{"garbage", []byte("not a csr"), id, 0, ReasonMalformedCSR},
		{"empty CSR", nil, id, 0, ReasonMalformedCSR},
		{"wrong PEM type", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), id, 0, ReasonMalformedCSR},
		{"RSA key", csrtest.PEM(t, rsaKey, nil), id, 0, ReasonUnsupportedKey},
		{"P-384 key", csrtest.PEM(t, p384, nil), id, 0, ReasonUnsupportedKey},
		{"Ed25519 key", csrtest.PEM(t, edKey, nil), id, 0, ReasonUnsupportedKey},
		{"signature does not match key", tampered, id, 0, ReasonBadSignature},
		{"SAN names another identity", csrtest.PEM(t, k, &x509.CertificateRequest{URIs: []*url.URL{other}}), id, 0, ReasonSANMismatch},
		{"two URI SANs", csrtest.PEM(t, k, &x509.CertificateRequest{URIs: []*url.URL{same, other}}), id, 0, ReasonSANMismatch},
		{"DNS SAN", csrtest.PEM(t, k, &x509.CertificateRequest{DNSNames: []string{"evil.example"}}), id, 0, ReasonSANMismatch},
		{"IP SAN", csrtest.PEM(t, k, &x509.CertificateRequest{IPAddresses: []net.IP{net.IPv4(10, 0, 0, 1)}}), id, 0, ReasonSANMismatch},
		{"foreign trust domain", good, "spiffe://evil.example/ns/ns1/sa/sa1", 0, ReasonForeignTrustDomain},
		{"not a workload identity", good, "spiffe://cluster.local/osm/xds-edge", 0, ReasonInvalidIdentity},
		{"TTL over maximum", good, id, 49 * time.Hour, ReasonTTLTooLong},
		{"negative TTL", good, id, -time.Hour, ReasonInvalidTTL},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := policy().ValidateWorkload(c.csr, c.identity, identity.UsageService, c.ttl)
			if got := ReasonOf(err); got != c.want {
				t.Fatalf("reason %q (err %v), want %q", got, err, c.want)
			}
			if !strings.Contains(err.Error(), string(c.want)) {
				t.Errorf("error %q does not name the reason", err)
			}
		})
	}
	// The accepted forms: no SAN, or exactly the requested one; DER too.
	for _, csr := range [][]byte{good, csrtest.PEM(t, k, &x509.CertificateRequest{URIs: []*url.URL{same}}), mustDER(good)} {
		r, err := policy().ValidateWorkload(csr, id, identity.UsageService, 0)
		if err != nil || r.TTL != 24*time.Hour || r.Identity.String() != id {
			t.Errorf("valid CSR refused: %+v, %v", r, err)
		}
	}
}

func mustDER(p []byte) []byte {
	b, _ := pem.Decode(p)
	return b.Bytes
}

func verify(t *testing.T, chainPEM []byte, roots ...*x509.Certificate) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(chainPEM)
	leaf, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatalf("verify leaf: %v", err)
	}
	return leaf
}

func TestIssueChainAndSAN(t *testing.T) {
	root := mustRoot(t, time.Time{}, 0)
	k := csrtest.Key(t)
	req, err := policy().ValidateWorkload(csrtest.PEM(t, k, nil), "spiffe://cluster.local/ns/ns1/sa/sa1", identity.UsageService, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	l, err := root.Issue(LeafRequest{PublicKey: req.CSR.PublicKey, URI: req.Identity.URL(), TTL: req.TTL, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	leaf := verify(t, l.ChainPEM, root.Certificate())
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://cluster.local/ns/ns1/sa/sa1" {
		t.Errorf("leaf URIs = %v", leaf.URIs)
	}
	if !leaf.PublicKey.(*ecdsa.PublicKey).Equal(&k.PublicKey) {
		t.Error("leaf key is not the CSR's key")
	}
	if leaf.IsCA || leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("leaf IsCA=%v KeyUsage=%v", leaf.IsCA, leaf.KeyUsage)
	}
	if got := leaf.NotAfter.Sub(now); got < 2*time.Hour-time.Second || got > 2*time.Hour {
		t.Errorf("leaf lifetime %s, want 2h", got)
	}
	if !l.NotAfter.Equal(leaf.NotAfter) || !l.NotBefore.Equal(leaf.NotBefore) || l.SerialNumber.Cmp(leaf.SerialNumber) != 0 || !bytes.Equal(l.DER, leaf.Raw) {
		t.Errorf("Leaf fields %v %v %v do not match the certificate %v %v %v", l.NotBefore, l.NotAfter, l.SerialNumber, leaf.NotBefore, leaf.NotAfter, leaf.SerialNumber)
	}
	if l.IssuerID != root.ID() || len(root.ID()) != 64 {
		t.Errorf("issuer id %q, want %q", l.IssuerID, root.ID())
	}
}

func TestLeafNeverOutlivesIssuer(t *testing.T) {
	now := time.Now()
	root := mustRoot(t, now, 3*time.Hour) // expires at now+3h
	k := csrtest.Key(t)
	l, err := root.Issue(LeafRequest{PublicKey: &k.PublicKey, URI: identity.ControlPlaneURI(td, identity.RoleXDSEdge), TTL: 24 * time.Hour, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if !l.NotAfter.Equal(root.NotAfter()) {
		t.Errorf("leaf NotAfter %s, want the issuer's %s", l.NotAfter, root.NotAfter())
	}
	_, err = root.Issue(LeafRequest{PublicKey: &k.PublicKey, TTL: time.Hour, Now: now.Add(4 * time.Hour)})
	if ReasonOf(err) != ReasonIssuerExpired {
		t.Errorf("issue after the issuer expired: %v, want %s", err, ReasonIssuerExpired)
	}
}

func TestParseIssuerRejectsMismatchedKey(t *testing.T) {
	c1, _, _ := GenerateRoot(RootOptions{TrustDomain: td})
	_, k2, _ := GenerateRoot(RootOptions{TrustDomain: td})
	if _, err := ParseIssuer(c1, k2); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("ParseIssuer with another root's key: %v", err)
	}
	if _, err := ParseIssuer([]byte("x"), k2); err == nil {
		t.Fatal("ParseIssuer accepted garbage")
	}
}

// TestRotationOverlap walks the three rotation steps and checks that leaves
// of the old root stay valid against the bundle throughout the overlap.
func TestRotationOverlap(t *testing.T) {
	oldRoot, newRoot := mustRoot(t, time.Time{}, 0), mustRoot(t, time.Time{}, 0)
	k := csrtest.Key(t)
	issue := func(rs *RootSet) []byte {
		l, err := rs.Signing().Issue(LeafRequest{PublicKey: &k.PublicKey, URI: identity.ControlPlaneURI(td, identity.RoleXDSEdge), TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return l.ChainPEM
	}
	roots := func(rs *RootSet) []*x509.Certificate {
		if _, err := BundlePool(rs.Bundle()); err != nil {
			t.Fatal(err)
		}
		var out []*x509.Certificate
		for _, r := range rs.Bundle().Roots {
			c, _ := ParseCertificatePEM(r.CertificatePem)
			out = append(out, c)
		}
		return out
	}

	step0 := NewRootSet(oldRoot)
	oldLeaf := issue(step0)
	if n := len(step0.Bundle().Roots); n != 1 {
		t.Fatalf("before rotation the bundle has %d roots", n)
	}

	step1 := NewRootSet(oldRoot, newRoot.Certificate(), oldRoot.Certificate())
	b1 := step1.Bundle()
	if len(b1.Roots) != 2 || b1.Version == step0.Bundle().Version {
		t.Fatalf("step 1 bundle: %d roots, version %s (was %s)", len(b1.Roots), b1.Version, step0.Bundle().Version)
	}
	verify(t, oldLeaf, roots(step1)...)
	verify(t, issue(step1), oldRoot.Certificate()) // still issues from the old root

	step2 := NewRootSet(newRoot, oldRoot.Certificate())
	b2 := step2.Bundle()
	if len(b2.Roots) != 2 || b2.Version == b1.Version {
		t.Fatalf("step 2 bundle: %d roots, version %s", len(b2.Roots), b2.Version)
	}
	for _, r := range b2.Roots {
		if r.Signing != (r.Id == newRoot.ID()) {
			t.Errorf("step 2: root %s signing=%v", r.Id[:8], r.Signing)
		}
	}
	newLeaf := issue(step2)
	verify(t, newLeaf, newRoot.Certificate())
	verify(t, oldLeaf, roots(step2)...) // the overlap: old leaves still valid
	verify(t, newLeaf, roots(step2)...)

	step3 := NewRootSet(newRoot)
	if got := step3.Bundle(); len(got.Roots) != 1 || got.Roots[0].Id != newRoot.ID() {
		t.Fatalf("step 3 bundle: %+v", got.Roots)
	}
	verify(t, newLeaf, roots(step3)...)

	// Repeating a step gives the same bundle.
	if again := NewRootSet(newRoot, oldRoot.Certificate()).Bundle(); again.Version != b2.Version {
		t.Errorf("repeating step 2 changed the version: %s vs %s", again.Version, b2.Version)
	}
}

func BenchmarkIssue(b *testing.B) {
	root := mustRoot(b, time.Time{}, 0)
	k := csrtest.Key(b)
	csr := csrtest.PEM(b, k, nil)
	b.ReportAllocs()
	for b.Loop() {
		r, err := policy().ValidateWorkload(csr, "spiffe://cluster.local/ns/a/sa/b", identity.UsageService, 0)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := root.Issue(LeafRequest{PublicKey: r.CSR.PublicKey, SPKI: r.CSR.RawSubjectPublicKeyInfo, URI: r.Identity.URL(), TTL: r.TTL}); err != nil {
			b.Fatal(err)
		}
	}
}
