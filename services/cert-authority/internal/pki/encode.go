package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
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
	// One buffer for the whole certificate: room for the outer header (at
	// most 5 bytes; its length depends on the signature's), the TBS, the
	// algorithm and the signature (at most 72 bytes for P-256, plus its
	// BIT STRING header and pad byte).
	const outerRoom = 5
	buf := make([]byte, outerRoom, outerRoom+tlvLen(tbsLen)+len(t.algorithm)+tlvLen(1+72))
	buf = appendHeader(buf, 0x30, tbsLen)
	buf = append(buf, t.version...)
	buf = appendHeader(buf, 0x02, len(serial))
	buf = append(buf, serial...)
	buf = append(buf, t.algorithm...)
	buf = append(buf, iss.cert.RawSubject...)
	buf = appendHeader(buf, 0x30, len(v))
	buf = append(buf, v...)
	buf = append(buf, emptySequence...)
	buf = append(buf, f.spki...)
	buf = appendHeader(buf, 0xa3, extsSeqLen)
	buf = appendHeader(buf, 0x30, extsLen)
	buf = append(buf, t.exts...)
	buf = append(buf, san...)
	tbs := buf[outerRoom:]
	digest := sha256.Sum256(tbs)
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		return nil, err
	}
	buf = append(buf, t.algorithm...)
	buf = appendHeader(buf, 0x03, 1+len(sig))
	buf = append(buf, 0)
	buf = append(buf, sig...)
	// The outer header goes right before the TBS.
	var hdr [outerRoom]byte
	h := appendHeader(hdr[:0], 0x30, len(buf)-outerRoom)
	start := outerRoom - len(h)
	copy(buf[start:], h)
	return buf[start:], nil
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
	var u string
	if uri != nil {
		u = uri.String()
	}
	names := 0
	for _, d := range dnsNames {
		names += tlvLen(len(d))
	}
	if uri != nil {
		names += tlvLen(len(u))
	}
	value := tlvLen(names)                                    // SEQUENCE OF GeneralName
	ext := len(oidSANDER) + len(criticalTrue) + tlvLen(value) // OID, critical, OCTET STRING
	b := make([]byte, 0, tlvLen(ext))
	b = appendHeader(b, 0x30, ext)
	b = append(b, oidSANDER...)
	b = append(b, criticalTrue...)
	b = appendHeader(b, 0x04, value)
	b = appendHeader(b, 0x30, names)
	for _, d := range dnsNames {
		b = appendHeader(b, 0x82, len(d)) // [2] dNSName
		b = append(b, d...)
	}
	if uri != nil {
		b = appendHeader(b, 0x86, len(u)) // [6] uniformResourceIdentifier
		b = append(b, u...)
	}
	return b
}

// criticalTrue is the DER BOOLEAN TRUE of a critical extension.
var criticalTrue = []byte{0x01, 0x01, 0xff}

// pemLen is the length of the PEM encoding of n bytes of type typ, as
// pem.EncodeToMemory writes it.
func pemLen(typ string, n int) int {
	b64 := base64.StdEncoding.EncodedLen(n)
	lines := (b64 + pemLineLength - 1) / pemLineLength
	return len("-----BEGIN -----\n") + len(typ) + b64 + lines + len("-----END -----\n") + len(typ)
}

const pemLineLength = 64

// appendPEM appends what pem.EncodeToMemory returns for a block without
// headers, without its intermediate buffers.
func appendPEM(dst []byte, typ string, der []byte) []byte {
	dst = append(dst, "-----BEGIN "...)
	dst = append(dst, typ...)
	dst = append(dst, "-----\n"...)
	start := len(dst)
	dst = base64.StdEncoding.AppendEncode(dst, der)
	// Break the base64 into lines of 64 characters, moving them right.
	b64 := len(dst) - start
	lines := (b64 + pemLineLength - 1) / pemLineLength
	dst = append(dst, make([]byte, lines)...)
	for i := lines - 1; i >= 0; i-- {
		from := start + i*pemLineLength
		to := min(from+pemLineLength, start+b64)
		shift := i // newlines inserted before this line
		copy(dst[from+shift:], dst[from:to])
		dst[to+shift] = '\n'
	}
	dst = append(dst, "-----END "...)
	dst = append(dst, typ...)
	return append(dst, "-----\n"...)
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
