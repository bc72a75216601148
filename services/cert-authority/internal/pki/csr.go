package pki

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/url"
)

// maxCSRSize bounds the CSR accepted before parsing.
const maxCSRSize = 16 << 10

// ParseCSR decodes a PEM or DER PKCS#10 request and checks that it is signed
// by its own key and that the key is ECDSA P-256.
func ParseCSR(data []byte) (*x509.CertificateRequest, error) {
	if len(data) == 0 {
		return nil, Errorf(ReasonMalformedCSR, "the CSR is empty")
	}
	if len(data) > maxCSRSize {
		return nil, Errorf(ReasonMalformedCSR, "the CSR is %d bytes, more than %d", len(data), maxCSRSize)
	}
	der := data
	if b, _ := pem.Decode(data); b != nil {
		if b.Type != "CERTIFICATE REQUEST" && b.Type != "NEW CERTIFICATE REQUEST" {
			return nil, Errorf(ReasonMalformedCSR, "PEM block is %q, want CERTIFICATE REQUEST", b.Type)
		}
		der = b.Bytes
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, Wrap(ReasonMalformedCSR, err, "parse CSR")
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, Errorf(ReasonUnsupportedKey, "the CSR key is %s, want ECDSA P-256", keyName(csr.PublicKey))
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, Wrap(ReasonBadSignature, err, "the CSR is not signed by its own key")
	}
	return csr, nil
}

// CheckSANs refuses a CSR that names anything but want: the CSR may carry no
// SAN at all (the CA sets it) or exactly the URI SAN want, and nothing else.
func CheckSANs(csr *x509.CertificateRequest, want *url.URL) error {
	if len(csr.DNSNames)+len(csr.EmailAddresses)+len(csr.IPAddresses) > 0 {
		return Errorf(ReasonSANMismatch, "the CSR carries DNS, email or IP SANs; only the URI SAN %s is allowed", want)
	}
	switch len(csr.URIs) {
	case 0:
		return nil
	case 1:
		if csr.URIs[0].String() == want.String() {
			return nil
		}
		return Errorf(ReasonSANMismatch, "the CSR names %s, but %s was requested", csr.URIs[0], want)
	default:
		return Errorf(ReasonSANMismatch, "the CSR carries %d URI SANs; only %s is allowed", len(csr.URIs), want)
	}
}

func keyName(k any) string {
	switch k := k.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA-%d", k.N.BitLen())
	case ed25519.PublicKey:
		return "Ed25519"
	default:
		return fmt.Sprintf("%T", k)
	}
}
