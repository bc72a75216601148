package identity

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Object identifiers of the one CSR shape the mesh sends.
var (
	oidExtensionRequest = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 14}
	oidSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidECDSAWithSHA256  = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
)

// CSR returns a DER certificate signing request for id, signed by k, with
// id as its only URI SAN and an empty subject.
//
// The bytes are those crypto/x509.CreateCertificateRequest writes for the
// same request (the cert-authority's fast parser expects exactly them; a
// test compares the two), but built directly: x509 checks each signature
// it makes by verifying it again, which costs more than the signing, and
// every injected pod and every identity an edge serves needs one CSR.
func (k *Key) CSR(id ID) ([]byte, error) { return k.CSRFor(id, UsageService) }

// CSRFor is CSR with the URI SAN of id's certificate for usage u.
func (k *Key) CSRFor(id ID, u Usage) ([]byte, error) {
	der, err := csrDER(k.priv, id.URLFor(u).String())
	if err != nil {
		return nil, fmt.Errorf("create %s csr for %s: %w", u, id, err)
	}
	return der, nil
}

// csrDER encodes and signs the request; uri empty means no SAN.
func csrDER(priv *ecdsa.PrivateKey, uri string) ([]byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		return nil, err
	}
	var info cryptobyte.Builder
	info.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1Int64(0)                                        // version
		b.AddASN1(cbasn1.SEQUENCE, func(*cryptobyte.Builder) {}) // empty subject
		b.AddBytes(spki)
		b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			if uri == "" {
				return
			}
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(oidExtensionRequest)
				b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // Extensions
						b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // Extension
							b.AddASN1ObjectIdentifier(oidSubjectAltName)
							b.AddASN1(cbasn1.OCTET_STRING, func(b *cryptobyte.Builder) {
								b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // GeneralNames
									b.AddASN1(cbasn1.Tag(6).ContextSpecific(), func(b *cryptobyte.Builder) {
										b.AddBytes([]byte(uri)) // uniformResourceIdentifier
									})
								})
							})
						})
					})
				})
			})
		})
	})
	tbs, err := info.Bytes()
	if err != nil {
		return nil, err
	}
	digest := sha256.Sum256(tbs)
	sig, err := ecdsa.SignASN1(rand.Reader, priv, digest[:])
	if err != nil {
		return nil, err
	}
	var out cryptobyte.Builder
	out.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oidECDSAWithSHA256)
		})
		b.AddASN1BitString(sig)
	})
	return out.Bytes()
}
