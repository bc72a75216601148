package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"sync"
	"time"

	"github.com/openservicemesh/osm/libs/identity"
)

// Issuer signs leaves with a CA certificate and its key.
type Issuer struct {
	cert  *x509.Certificate
	key   crypto.Signer
	id    string
	chain []byte // PEM of the issuer's chain up to, but not including, the root

	tmplOnce sync.Once
	tmpl     *leafTemplate
}

// template returns the issuer's leaf template, built on first use.
func (iss *Issuer) template() *leafTemplate {
	iss.tmplOnce.Do(func() { iss.tmpl = newLeafTemplate(iss) })
	return iss.tmpl
}

// NewIssuer pairs a CA certificate with its private key, checking that the
// key matches and that the certificate may sign certificates.
func NewIssuer(cert *x509.Certificate, key crypto.Signer) (*Issuer, error) {
	if !cert.IsCA || !cert.BasicConstraintsValid || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("the certificate is not a CA that may sign certificates")
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, errors.New("the private key does not match the certificate")
	}
	iss := &Issuer{cert: cert, key: key, id: RootID(cert)}
	if !isSelfSigned(cert) {
		iss.chain = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	}
	return iss, nil
}

// Certificate is the issuer's certificate.
func (iss *Issuer) Certificate() *x509.Certificate { return iss.cert }

// ID identifies the issuer: the hex SHA-256 of its DER certificate.
func (iss *Issuer) ID() string { return iss.id }

// NotAfter is the end of the issuer's validity.
func (iss *Issuer) NotAfter() time.Time { return iss.cert.NotAfter }

// RootID is the identifier of a root in the trust bundle: the lowercase hex
// SHA-256 of its DER certificate.
func RootID(c *x509.Certificate) string {
	s := sha256.Sum256(c.Raw)
	return hex.EncodeToString(s[:])
}

func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
}

// Leaf is an issued certificate.
type Leaf struct {
	// ChainPEM is the leaf then any intermediates, PEM encoded, without the
	// root.
	ChainPEM []byte
	// DER is the leaf certificate.
	DER []byte
	// SerialNumber, NotBefore and NotAfter are the leaf's.
	SerialNumber        *big.Int
	NotBefore, NotAfter time.Time
	// IssuerID identifies the signing root.
	IssuerID string

	parsed *x509.Certificate
}

// NewLeaf describes an already parsed certificate.
func NewLeaf(c *x509.Certificate, chainPEM []byte, issuerID string) *Leaf {
	return &Leaf{ChainPEM: chainPEM, DER: c.Raw, SerialNumber: c.SerialNumber, NotBefore: c.NotBefore, NotAfter: c.NotAfter, IssuerID: issuerID, parsed: c}
}

// Certificate parses the leaf. The hot signing path never needs to; callers
// that inspect the certificate do.
func (l *Leaf) Certificate() (*x509.Certificate, error) {
	if l.parsed != nil {
		return l.parsed, nil
	}
	return x509.ParseCertificate(l.DER)
}

// LeafRequest is what Issue needs: a validated CSR's key and the identity.
type LeafRequest struct {
	// PublicKey is the subject's key (from a CSR that passed ParseCSR).
	PublicKey crypto.PublicKey
	// SPKI is PublicKey's DER SubjectPublicKeyInfo when known (a CSR's
	// RawSubjectPublicKeyInfo); it saves re-encoding the key.
	SPKI []byte
	// URI is the identity written as the only URI SAN.
	URI *url.URL
	// DNSNames are extra SANs; only the CA's own serving certificate has them.
	DNSNames []string
	// TTL is the wanted lifetime; Issue shortens it so that the leaf never
	// outlives the issuer.
	TTL time.Duration
	// Now is the issuance time; zero means time.Now().
	Now time.Time
}

// backdate absorbs clock skew between the CA and verifiers.
const backdate = time.Minute

// Issue signs a leaf for r. The leaf is valid from a minute before now (but
// not before the issuer) until now+TTL, capped at the issuer's NotAfter.
func (iss *Issuer) Issue(r LeafRequest) (*Leaf, error) {
	now := r.Now
	if now.IsZero() {
		now = time.Now()
	}
	if r.TTL <= 0 {
		return nil, Errorf(ReasonInvalidTTL, "ttl %s is not positive", r.TTL)
	}
	notBefore := now.Add(-backdate)
	if notBefore.Before(iss.cert.NotBefore) {
		notBefore = iss.cert.NotBefore
	}
	notAfter := now.Add(r.TTL)
	if notAfter.After(iss.cert.NotAfter) {
		notAfter = iss.cert.NotAfter
	}
	if !notAfter.After(now) {
		return nil, Errorf(ReasonIssuerExpired, "issuer %s expired at %s", shortID(iss.id), iss.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	der, err := iss.sign(r, serial, notBefore, notAfter)
	if err != nil {
		return nil, err
	}
	chain := make([]byte, 0, pemLen("CERTIFICATE", len(der))+len(iss.chain))
	chain = appendPEM(chain, "CERTIFICATE", der)
	chain = append(chain, iss.chain...)
	// The encoded times are whole seconds.
	return &Leaf{ChainPEM: chain, DER: der, SerialNumber: serial, NotBefore: notBefore.Truncate(time.Second), NotAfter: notAfter.Truncate(time.Second), IssuerID: iss.id}, nil
}

// sign encodes and signs the leaf: directly for an in-memory P-256 key,
// else through x509.CreateCertificate.
func (iss *Issuer) sign(r LeafRequest, serial *big.Int, notBefore, notAfter time.Time) ([]byte, error) {
	if key, ok := canEncodeLeaf(iss); ok {
		spki := r.SPKI
		if spki == nil {
			var err error
			if spki, err = spkiOf(r.PublicKey); err != nil {
				return nil, err
			}
		}
		der, err := encodeLeaf(iss, key, leafFields{serial: serial, notBefore: notBefore, notAfter: notAfter, spki: spki, uri: r.URI, dnsNames: r.DNSNames})
		if err != nil {
			return nil, fmt.Errorf("sign leaf: %w", err)
		}
		return der, nil
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		DNSNames:              r.DNSNames,
	}
	if r.URI != nil {
		tmpl.URIs = []*url.URL{r.URI}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, iss.cert, r.PublicKey, iss.key)
	if err != nil {
		return nil, fmt.Errorf("sign leaf: %w", err)
	}
	return der, nil
}

// RootOptions configures GenerateRoot.
type RootOptions struct {
	// TrustDomain goes into the root's subject and its URI SAN.
	TrustDomain string
	// Validity is the root's lifetime; default 10 years.
	Validity time.Duration
	// Now is the generation time; zero means time.Now().
	Now time.Time
}

// GenerateRoot creates a self-signed ECDSA P-256 root and returns its
// certificate and PKCS#8 private key, both PEM encoded.
func GenerateRoot(o RootOptions) (certPEM, keyPEM []byte, err error) {
	if err := identity.ValidateTrustDomain(o.TrustDomain); err != nil {
		return nil, nil, err
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	if o.Validity == 0 {
		o.Validity = 10 * 365 * 24 * time.Hour
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Organization: []string{"Open Service Mesh"},
			CommonName:   "osm root " + o.TrustDomain + " " + now.UTC().Format("20060102T150405Z"),
		},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(o.Validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: o.TrustDomain}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("self-sign root: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

// ParseIssuer builds an Issuer from a PEM certificate and PEM private key
// (PKCS#8 or SEC 1), as stored by GenerateRoot.
func ParseIssuer(certPEM, keyPEM []byte) (*Issuer, error) {
	cert, err := ParseCertificatePEM(certPEM)
	if err != nil {
		return nil, err
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, errors.New("no PEM block in the private key")
	}
	var key crypto.Signer
	switch kb.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse private key: %w", err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, errors.New("the private key cannot sign")
		}
		key = s
	case "EC PRIVATE KEY":
		k, err := x509.ParseECPrivateKey(kb.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse private key: %w", err)
		}
		key = k
	default:
		return nil, fmt.Errorf("private key PEM block is %q", kb.Type)
	}
	return NewIssuer(cert, key)
}

// ParseCertificatePEM parses the first certificate of a PEM block list.
func ParseCertificatePEM(data []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	return c, nil
}

func randomSerial() (*big.Int, error) {
	// 128 random bits, positive (RFC 5280 allows up to 20 octets).
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
