package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net/url"
	"reflect"
	"testing"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/services/cert-authority/internal/csrtest"
)

// TestParseCSRForFastPathMatchesStdlib: for the CSRs mesh clients send, the
// fast parser takes them and returns what crypto/x509 would.
func TestParseCSRForFastPathMatchesStdlib(t *testing.T) {
	k := csrtest.Key(t)
	want, _ := url.Parse("spiffe://cluster.local/ns/ns1/sa/sa1")
	// What the mesh's clients send: libs/identity builds its CSR itself.
	meshKey, err := identity.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	meshCSR, err := meshKey.CSR(identity.New("cluster.local", "ns1", "sa1"))
	if err != nil {
		t.Fatal(err)
	}
	for name, pemCSR := range map[string][]byte{
		"no SAN":           csrtest.PEM(t, k, nil),
		"the wanted SAN":   csrtest.PEM(t, k, &x509.CertificateRequest{URIs: []*url.URL{want}}),
		"identity.Key.CSR": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: meshCSR}),
	} {
		for form, data := range map[string][]byte{"PEM": pemCSR, "DER": mustDER(pemCSR)} {
			t.Run(name+"/"+form, func(t *testing.T) {
				fast, ok, err := parseCSRFast(data, want)
				if !ok || err != nil {
					t.Fatalf("fast path ok=%v err=%v, want it taken", ok, err)
				}
				ref, err := x509.ParseCertificateRequest(mustDER(pemCSR))
				if err != nil {
					t.Fatal(err)
				}
				if !fast.PublicKey.(*ecdsa.PublicKey).Equal(ref.PublicKey) {
					t.Error("public keys differ")
				}
				// Compare everything else but the deprecated Attributes.
				fc, rc := *fast, *ref
				fc.PublicKey, rc.PublicKey = nil, nil
				rc.Attributes = nil
				if !reflect.DeepEqual(fc, rc) {
					t.Errorf("fast parse differs from crypto/x509:\n fast %+v\n  ref %+v", fc, rc)
				}
				if err := CheckSANs(fast, want); err != nil {
					t.Error(err)
				}
			})
		}
	}
}

// TestParseCSRForFallsBack: every other shape takes the generic path and is
// judged as ParseCSR and CheckSANs judge it.
func TestParseCSRForFallsBack(t *testing.T) {
	k := csrtest.Key(t)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	want, _ := url.Parse("spiffe://cluster.local/ns/ns1/sa/sa1")
	other, _ := url.Parse("spiffe://cluster.local/ns/ns1/sa/other")
	withTrailing := append(mustDER(csrtest.PEM(t, k, nil)), 0)
	offCurve := mustDER(csrtest.PEM(t, k, nil))
	if i := bytes.Index(offCurve, p256SPKIPrefix); i < 0 {
		t.Fatal("no P-256 SubjectPublicKeyInfo in the CSR")
	} else {
		offCurve[i+len(p256SPKIPrefix)+64] ^= 1 // the point's last byte: no longer on the curve
	}
	cases := map[string][]byte{
		"subject":             csrtest.PEM(t, k, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}),
		"other URI":           csrtest.PEM(t, k, &x509.CertificateRequest{URIs: []*url.URL{other}}),
		"two URIs":            csrtest.PEM(t, k, &x509.CertificateRequest{URIs: []*url.URL{want, other}}),
		"DNS SAN":             csrtest.PEM(t, k, &x509.CertificateRequest{DNSNames: []string{"a.example"}}),
		"critical SAN":        csrtest.PEM(t, k, &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{{Id: oidExtSubjectAltName, Critical: true, Value: uriSANValue(want)}}}),
		"P-384":               csrtest.PEM(t, p384, nil),
		"trailing data":       withTrailing,
		"SHA-384 signature":   csrtest.PEM(t, k, &x509.CertificateRequest{SignatureAlgorithm: x509.ECDSAWithSHA384}),
		"PEM with extra text": append(csrtest.PEM(t, k, nil), []byte("junk")...),
		"point off the curve": offCurve,
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			if _, ok, _ := parseCSRFast(data, want); ok {
				t.Fatal("the fast path took it")
			}
			_, got := ParseCSRFor(data, want)
			csr, wantErr := ParseCSR(data)
			if wantErr == nil {
				wantErr = CheckSANs(csr, want)
			}
			if ReasonOf(got) != ReasonOf(wantErr) || (got == nil) != (wantErr == nil) {
				t.Errorf("ParseCSRFor: %v; ParseCSR+CheckSANs: %v", got, wantErr)
			}
		})
	}
}

// TestParseCSRForChecksSignature: a CSR of the fast path's shape whose
// signature is another key's is refused.
func TestParseCSRForChecksSignature(t *testing.T) {
	k, other := csrtest.Key(t), csrtest.Key(t)
	want, _ := url.Parse("spiffe://cluster.local/ns/ns1/sa/sa1")
	in := cryptobyte.String(mustDER(csrtest.PEM(t, k, &x509.CertificateRequest{URIs: []*url.URL{want}})))
	var outer, tbs, algo cryptobyte.String
	if !in.ReadASN1(&outer, cbasn1.SEQUENCE) || !outer.ReadASN1Element(&tbs, cbasn1.SEQUENCE) || !outer.ReadASN1Element(&algo, cbasn1.SEQUENCE) {
		t.Fatal("cannot split the CSR")
	}
	digest := sha256.Sum256(tbs)
	sig, err := ecdsa.SignASN1(rand.Reader, other, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		b.AddBytes(algo)
		b.AddASN1BitString(sig)
	})
	forged := b.BytesOrPanic()
	if _, ok, err := parseCSRFast(forged, want); !ok || ReasonOf(err) != ReasonBadSignature {
		t.Fatalf("fast path ok=%v err=%v, want %s", ok, err, ReasonBadSignature)
	}
	if _, err := ParseCSR(forged); ReasonOf(err) != ReasonBadSignature {
		t.Fatalf("generic path: %v", err)
	}
	if _, err := policy().ValidateWorkload(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: forged}), want.String(), identity.UsageService, 0); ReasonOf(err) != ReasonBadSignature {
		t.Fatalf("ValidateWorkload: %v", err)
	}
}
