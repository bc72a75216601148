package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"net/url"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

var oidExtensionRequest = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 14}

// errECDSAVerify is what crypto/x509 reports for a bad ECDSA signature.
var errECDSAVerify = errors.New("x509: ECDSA verification failure")

// ParseCSRFor parses a CSR and checks it against want exactly as ParseCSR
// followed by CheckSANs(csr, want) do, but handles the request every mesh
// client sends (caclient, the injector, the edges) without the generic
// parser: a DER or PEM CSR with an empty subject, an ECDSA P-256 key, a
// signature with ecdsa-with-SHA256, and either no attributes or the one
// extension request, byte for byte as crypto/x509 encodes it, naming want
// as the only (URI) SAN. Anything else goes through ParseCSR and CheckSANs,
// so the result, and the reason of any refusal, never depends on which path
// was taken. The CSR's signature is always checked.
//
// On the fast path the returned request has every field ParseCSR would set
// except the deprecated Attributes.
func ParseCSRFor(data []byte, want *url.URL) (*x509.CertificateRequest, error) {
	if csr, ok, err := parseCSRFast(data, want); ok {
		return csr, err
	}
	csr, err := ParseCSR(data)
	if err != nil {
		return nil, err
	}
	if err := CheckSANs(csr, want); err != nil {
		return nil, err
	}
	return csr, nil
}

// parseCSRFast returns ok false when data is not of the one shape it
// handles; it then has checked nothing.
func parseCSRFast(data []byte, want *url.URL) (csr *x509.CertificateRequest, ok bool, err error) {
	if len(data) == 0 || len(data) > maxCSRSize {
		return nil, false, nil
	}
	der := data
	if data[0] != 0x30 { // not DER: maybe PEM
		b, rest := pem.Decode(data)
		if b == nil || b.Type != "CERTIFICATE REQUEST" || len(bytes.TrimSpace(rest)) > 0 {
			return nil, false, nil
		}
		der = b.Bytes
	}
	var (
		in                               = cryptobyte.String(der)
		outer, tbs, tbsBody, algo, attrs cryptobyte.String
		subject, spki                    cryptobyte.String
		sig                              asn1.BitString
		version                          int
	)
	if !in.ReadASN1(&outer, cbasn1.SEQUENCE) || !in.Empty() ||
		!outer.ReadASN1Element(&tbs, cbasn1.SEQUENCE) ||
		!outer.ReadASN1Element(&algo, cbasn1.SEQUENCE) ||
		!outer.ReadASN1BitString(&sig) || !outer.Empty() {
		return nil, false, nil
	}
	if !bytes.Equal(algo, ecdsaWithSHA256DER) || sig.BitLength%8 != 0 {
		return nil, false, nil
	}
	body := tbs
	if !body.ReadASN1(&tbsBody, cbasn1.SEQUENCE) ||
		!tbsBody.ReadASN1Integer(&version) || version != 0 ||
		!tbsBody.ReadASN1Element(&subject, cbasn1.SEQUENCE) ||
		!tbsBody.ReadASN1Element(&spki, cbasn1.SEQUENCE) ||
		!tbsBody.ReadASN1(&attrs, cbasn1.Tag(0).Constructed().ContextSpecific()) || !tbsBody.Empty() {
		return nil, false, nil
	}
	if !bytes.Equal(subject, emptySequence) {
		return nil, false, nil
	}
	var uris []*url.URL
	var exts []pkix.Extension
	switch {
	case len(attrs) == 0:
	default:
		wantAttrs, sanValue := uriSANRequestFor(want.String())
		if !bytes.Equal(attrs, wantAttrs) {
			return nil, false, nil
		}
		uris = []*url.URL{want}
		exts = []pkix.Extension{{Id: oidExtSubjectAltName, Value: sanValue}}
	}
	// The SubjectPublicKeyInfo of a P-256 key is a fixed prefix and the
	// 65-byte uncompressed point; the point is checked to be on the curve.
	if len(spki) != len(p256SPKIPrefix)+65 || !bytes.Equal(spki[:len(p256SPKIPrefix)], p256SPKIPrefix) {
		return nil, false, nil
	}
	key, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), spki[len(p256SPKIPrefix):])
	if err != nil {
		return nil, false, nil
	}
	digest := sha256.Sum256(tbs)
	if !ecdsa.VerifyASN1(key, digest[:], sig.Bytes) {
		return nil, true, Wrap(ReasonBadSignature, errECDSAVerify, "the CSR is not signed by its own key")
	}
	return &x509.CertificateRequest{
		Raw:                      der,
		RawTBSCertificateRequest: tbs,
		RawSubjectPublicKeyInfo:  spki,
		RawSubject:               subject,
		Version:                  0,
		Signature:                sig.Bytes,
		SignatureAlgorithm:       x509.ECDSAWithSHA256,
		PublicKeyAlgorithm:       x509.ECDSA,
		PublicKey:                key,
		Subject:                  pkix.Name{},
		Extensions:               exts,
		URIs:                     uris,
	}, true, nil
}

// p256SPKIPrefix is the DER of a P-256 SubjectPublicKeyInfo up to its
// point: SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING
// (65 bytes, no unused bits) }.
var p256SPKIPrefix = []byte{
	0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
	0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
}

var (
	ecdsaWithSHA256DER = derOf(func(b *cryptobyte.Builder) { addAlgorithm(b) })
	emptySequence      = []byte{0x30, 0x00}
)

func derOf(f func(*cryptobyte.Builder)) []byte {
	var b cryptobyte.Builder
	f(&b)
	return b.BytesOrPanic()
}

// uriSANValue is the SubjectAltName extension value naming only u.
func uriSANValue(u *url.URL) []byte {
	_, v := uriSANRequestFor(u.String())
	return v
}

// uriSANRequestFor returns the content of a CSR's attributes ([0]) as
// x509.CreateCertificateRequest writes them for a template whose only SAN is
// the URI u (one extensionRequest holding one non-critical SubjectAltName)
// and, within them, the SAN extension's value.
func uriSANRequestFor(u string) (attrs, sanValue []byte) {
	gn := tlvLen(len(u))   // [6] IA5String
	names := tlvLen(gn)    // SEQUENCE OF GeneralName: the extension value
	value := tlvLen(names) // OCTET STRING
	ext := tlvLen(len(oidSANDER) + value)
	exts := tlvLen(ext)
	set := tlvLen(exts)
	b := make([]byte, 0, tlvLen(len(oidExtensionRequestDER)+set))
	b = appendHeader(b, 0x30, len(oidExtensionRequestDER)+set)
	b = append(b, oidExtensionRequestDER...)
	b = appendHeader(b, 0x31, exts)
	b = appendHeader(b, 0x30, ext)
	b = appendHeader(b, 0x30, len(oidSANDER)+value)
	b = append(b, oidSANDER...)
	b = appendHeader(b, 0x04, names)
	start := len(b)
	b = appendHeader(b, 0x30, gn)
	b = appendHeader(b, 0x86, len(u))
	b = append(b, u...)
	return b, b[start:]
}

var (
	oidExtensionRequestDER = derOf(func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oidExtensionRequest) })
	oidSANDER              = derOf(func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oidExtSubjectAltName) })
)
