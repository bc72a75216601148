// Package identity is the mesh's workload identity: the SPIFFE id
// spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>, and the
// client side of certificate issuance (an ECDSA P-256 key generated where
// it is used, and a CSR carrying the identity as its URI SAN), so that no
// private key ever travels.
package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/url"
	"strings"
)

// ID is a workload identity.
type ID struct {
	TrustDomain, Namespace, ServiceAccount string
}

// New returns the identity of serviceAccount in namespace.
func New(trustDomain, namespace, serviceAccount string) ID {
	return ID{TrustDomain: trustDomain, Namespace: namespace, ServiceAccount: serviceAccount}
}

// String is the SPIFFE id.
func (id ID) String() string {
	return "spiffe://" + id.TrustDomain + "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount
}

// URL is the SPIFFE id as a URL, for a certificate's URI SAN.
func (id ID) URL() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: id.TrustDomain, Path: "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount}
}

// Parse parses a SPIFFE workload id of the mesh's form.
func Parse(s string) (ID, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "spiffe" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil || u.Port() != "" {
		return ID{}, fmt.Errorf("%q is not a SPIFFE id (spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>)", s)
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if len(parts) != 4 || parts[0] != "ns" || parts[2] != "sa" || parts[1] == "" || parts[3] == "" {
		return ID{}, fmt.Errorf("%q is not a workload id: the path must be /ns/<namespace>/sa/<serviceaccount>", s)
	}
	return ID{TrustDomain: u.Host, Namespace: parts[1], ServiceAccount: parts[3]}, nil
}

// Key is a private key generated for one certificate.
type Key struct {
	priv *ecdsa.PrivateKey
}

// NewKey generates an ECDSA P-256 key.
func NewKey() (*Key, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return &Key{priv: k}, nil
}

// Private returns the key.
func (k *Key) Private() *ecdsa.PrivateKey { return k.priv }

// PEM encodes the key as PKCS#8 PEM.
func (k *Key) PEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.priv)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// CSR returns a DER certificate signing request for id, signed by k, with
// id as its only URI SAN.
func (k *Key) CSR(id ID) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		URIs: []*url.URL{id.URL()},
	}, k.priv)
	if err != nil {
		return nil, fmt.Errorf("create csr for %s: %w", id, err)
	}
	return der, nil
}

// CSRDER returns a DER certificate signing request without any SAN, for a
// CA that sets the identity itself (Bootstrap does, from the verified token).
func (k *Key) CSRDER() ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k.priv)
	if err != nil {
		return nil, fmt.Errorf("create csr: %w", err)
	}
	return der, nil
}
