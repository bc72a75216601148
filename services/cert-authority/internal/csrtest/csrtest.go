// Package csrtest makes the keys and certificate signing requests the
// cert-authority's tests send: ECDSA P-256 keys, as mesh clients use, and
// PKCS#10 requests from any key and template. It is for tests only.
package csrtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"testing"
)

// Key returns a fresh ECDSA P-256 key.
func Key(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// DER returns a request signed by k, from tmpl (nil for one without
// subject or SANs), in DER form.
func DER(t testing.TB, k crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	if tmpl == nil {
		tmpl = &x509.CertificateRequest{}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// PEM returns the request DER makes, PEM encoded.
func PEM(t testing.TB, k crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: DER(t, k, tmpl)})
}

// Parsed returns a request of k without subject or SANs, parsed.
func Parsed(t testing.TB, k crypto.Signer) *x509.CertificateRequest {
	t.Helper()
	c, err := x509.ParseCertificateRequest(DER(t, k, nil))
	if err != nil {
		t.Fatal(err)
	}
	return c
}
