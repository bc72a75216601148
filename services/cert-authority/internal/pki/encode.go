package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"math/big"
	"net/url"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Object identifiers of the leaf's fields.
var (
	oidECDSAWithSHA256    = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidExtKeyUsage        = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtExtKeyUsage     = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidExtBasicConstraint = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidExtAuthorityKeyID  = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidExtSubjectAltName  = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidServerAuth         = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 1}
	oidClientAuth         = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}
)

// leafFields are what varies between leaves.
type leafFields struct {
	serial              *big.Int
	notBefore, notAfter time.Time
	spki                []byte // DER SubjectPublicKeyInfo, from the CSR
	uri                 *url.URL
	dnsNames            []string
}

// canEncodeLeaf reports whether the fast path can sign for this issuer: an
// in-memory ECDSA P-256 key.
func canEncodeLeaf(iss *Issuer) (*ecdsa.PrivateKey, bool) {
	k, ok := iss.key.(*ecdsa.PrivateKey)
	return k, ok && k.Curve == elliptic.P256()
}

// encodeLeaf builds and signs the leaf DER directly. It produces the
// TBSCertificate x509.CreateCertificate would for the same template (an
// empty subject, a critical SAN, digitalSignature, serverAuth and
// clientAuth, cA false and the issuer's key id), byte for byte (see
// TestEncodedLeafMatchesStdlib), and signs it once. CreateCertificate would
// also re-parse the issuer and verify the signature it just made, doubling
// the ECDSA work of every issuance; that check guards against faulty
// hardware signers, and this path only runs with an in-memory key.
//
// The parts that never change for an issuer (its name, the algorithm, the
// key usage, extended key usage, basic constraints and authority key id
// extensions) are encoded once, in iss.leafTemplate; each leaf only appends
// its serial, validity, key and SANs.
func encodeLeaf(iss *Issuer, key *ecdsa.PrivateKey, f leafFields) ([]byte, error) {
	t := iss.template()
	var validity [2 + 2*17]byte
	v := appendTime(appendTime(validity[:0], f.notBefore), f.notAfter)
	var san []byte
	if f.uri != nil || len(f.dnsNames) > 0 {
		san = sanExtension(f.dnsNames, f.uri)
	}
	serial := serialContent(f.serial)
	extsLen := len(t.exts) + len(san)
	extsSeqLen := tlvLen(extsLen)
	tbsLen := len(t.version) + tlvLen(len(serial)) + len(t.algorithm) + len(iss.cert.RawSubject) +
		tlvLen(len(v)) + len(emptySequence) + len(f.spki) + tlvLen(extsSeqLen)
	out := make([]byte, 0, tlvLen(tbsLen))
	out = appendHeader(out, 0x30, tbsLen)
	out = append(out, t.version...)
	out = appendHeader(out, 0x02, len(serial))
	out = append(out, serial...)
	out = append(out, t.algorithm...)
	out = append(out, iss.cert.RawSubject...)
	out = appendHeader(out, 0x30, len(v))
	out = append(out, v...)
	out = append(out, emptySequence...)
	out = append(out, f.spki...)
	out = appendHeader(out, 0xa3, extsSeqLen)
	out = appendHeader(out, 0x30, extsLen)
	out = append(out, t.exts...)
	out = append(out, san...)
	tbs := out
	digest := sha256.Sum256(tbs)
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		return nil, err
	}
	certLen := len(tbs) + len(t.algorithm) + tlvLen(1+len(sig))
	cert := make([]byte, 0, tlvLen(certLen))
	cert = appendHeader(cert, 0x30, certLen)
	cert = append(cert, tbs...)
	cert = append(cert, t.algorithm...)
	cert = appendHeader(cert, 0x03, 1+len(sig))
	cert = append(cert, 0)
	cert = append(cert, sig...)
	return cert, nil
}

// leafTemplate holds the encoded parts of a leaf that only depend on the
// issuer.
type leafTemplate struct {
	version   []byte // [0] EXPLICIT INTEGER 2
	algorithm []byte // AlgorithmIdentifier ecdsa-with-SHA256
	exts      []byte // key usage, extended key usage, basic constraints, authority key id
}

func newLeafTemplate(iss *Issuer) *leafTemplate {
	return &leafTemplate{
		version: derOf(func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddASN1Int64(2) })
		}),
		algorithm: ecdsaWithSHA256DER,
		exts: derOf(func(b *cryptobyte.Builder) {
			addExtension(b, oidExtKeyUsage, true, func(b *cryptobyte.Builder) {
				// digitalSignature (bit 0); DER marks the 7 trailing bits unused.
				b.AddASN1(cbasn1.BIT_STRING, func(b *cryptobyte.Builder) { b.AddBytes([]byte{0x07, 0x80}) })
			})
			addExtension(b, oidExtExtKeyUsage, false, func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(oidServerAuth)
					b.AddASN1ObjectIdentifier(oidClientAuth)
				})
			})
			addExtension(b, oidExtBasicConstraint, true, func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(*cryptobyte.Builder) {})
			})
			if len(iss.cert.SubjectKeyId) > 0 {
				addExtension(b, oidExtAuthorityKeyID, false, func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1(cbasn1.Tag(0).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(iss.cert.SubjectKeyId) })
					})
				})
			}
		}),
	}
}

// sanExtension is the SubjectAltName extension: the DNS names then the URI.
// It is critical because the subject is empty (RFC 5280 4.2.1.6).
func sanExtension(dnsNames []string, uri *url.URL) []byte {
	return derOf(func(b *cryptobyte.Builder) {
		addExtension(b, oidExtSubjectAltName, true, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				for _, d := range dnsNames {
					b.AddASN1(cbasn1.Tag(2).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte(d)) })
				}
				if uri != nil {
					b.AddASN1(cbasn1.Tag(6).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte(uri.String())) })
				}
			})
		})
	})
}

// serialContent is the content octets of a positive INTEGER.
func serialContent(n *big.Int) []byte {
	b := n.Bytes()
	if len(b) == 0 || b[0]&0x80 != 0 {
		return append([]byte{0}, b...)
	}
	return b
}

// tlvLen is the length of a DER element whose content is n bytes long.
func tlvLen(n int) int {
	switch {
	case n < 0x80:
		return 2 + n
	case n < 0x100:
		return 3 + n
	case n < 0x10000:
		return 4 + n
	default:
		return 5 + n
	}
}

// appendHeader appends a DER tag and definite length.
func appendHeader(b []byte, tag byte, n int) []byte {
	b = append(b, tag)
	switch {
	case n < 0x80:
		return append(b, byte(n))
	case n < 0x100:
		return append(b, 0x81, byte(n))
	case n < 0x10000:
		return append(b, 0x82, byte(n>>8), byte(n))
	default:
		return append(b, 0x83, byte(n>>16), byte(n>>8), byte(n))
	}
}

// appendTime appends a validity time as RFC 5280 requires: UTCTime through
// 2049, GeneralizedTime from 2050.
func appendTime(b []byte, t time.Time) []byte {
	t = t.UTC().Truncate(time.Second)
	if t.Year() >= 1950 && t.Year() < 2050 {
		b = append(b, 0x17, 13)
		return t.AppendFormat(b, "060102150405Z")
	}
	b = append(b, 0x18, 15)
	return t.AppendFormat(b, "20060102150405Z")
}

func addAlgorithm(b *cryptobyte.Builder) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oidECDSAWithSHA256) })
}

func addExtension(b *cryptobyte.Builder, oid asn1.ObjectIdentifier, critical bool, value func(*cryptobyte.Builder)) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		if critical {
			b.AddASN1Boolean(true)
		}
		b.AddASN1(cbasn1.OCTET_STRING, value)
	})
}

var errNoSPKI = errors.New("the public key has no DER encoding")

// spkiOf returns the DER SubjectPublicKeyInfo of a public key.
func spkiOf(pub any) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, errNoSPKI
	}
	return der, nil
}
