package identity

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"net/url"
	"testing"
)

// TestCSRMatchesCryptoX509: the hand-built CSR carries the same signed
// bytes as crypto/x509's for the same key and request (the signatures
// differ, ECDSA being randomized), and verifies.
func TestCSRMatchesCryptoX509(t *testing.T) {
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	id := New("cluster.local", "bookstore", "bookstore-v1")
	for _, tc := range []struct {
		name     string
		ours     func() ([]byte, error)
		template *x509.CertificateRequest
	}{
		{"with the identity", func() ([]byte, error) { return k.CSR(id) }, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}},
		{"without a SAN", k.CSRDER, &x509.CertificateRequest{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			der, err := tc.ours()
			if err != nil {
				t.Fatal(err)
			}
			ref, err := x509.CreateCertificateRequest(rand.Reader, tc.template, k.Private())
			if err != nil {
				t.Fatal(err)
			}
			got, err := x509.ParseCertificateRequest(der)
			if err != nil {
				t.Fatal(err)
			}
			want, err := x509.ParseCertificateRequest(ref)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.RawTBSCertificateRequest, want.RawTBSCertificateRequest) {
				t.Fatalf("signed bytes differ:\n ours %x\n x509 %x", got.RawTBSCertificateRequest, want.RawTBSCertificateRequest)
			}
			if got.SignatureAlgorithm != x509.ECDSAWithSHA256 {
				t.Fatalf("signature algorithm %v", got.SignatureAlgorithm)
			}
			if err := got.CheckSignature(); err != nil {
				t.Fatal(err)
			}
			// The outer structure matches too: the same length apart from
			// the signature, and the same algorithm identifier bytes.
			tail := func(d []byte, r *x509.CertificateRequest) []byte {
				i := bytes.Index(d, r.RawTBSCertificateRequest) + len(r.RawTBSCertificateRequest)
				return d[i : i+12]
			}
			if !bytes.Equal(tail(der, got), tail(ref, want)) {
				t.Fatalf("algorithm identifier %x, x509 writes %x", tail(der, got), tail(ref, want))
			}
			if len(got.URIs) != len(tc.template.URIs) || (len(got.URIs) == 1 && got.URIs[0].String() != id.URL().String()) {
				t.Fatalf("URIs %v", got.URIs)
			}
		})
	}
}

func BenchmarkCSR(b *testing.B) {
	k, err := NewKey()
	if err != nil {
		b.Fatal(err)
	}
	id := New("cluster.local", "bookstore", "bookstore-v1")
	b.Run("ours", func(b *testing.B) {
		for b.Loop() {
			if _, err := k.CSR(id); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("crypto-x509", func(b *testing.B) {
		tmpl := &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}
		for b.Loop() {
			if _, err := x509.CreateCertificateRequest(rand.Reader, tmpl, k.Private()); err != nil {
				b.Fatal(err)
			}
		}
	})
}
