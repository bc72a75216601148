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
	"errors"
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

// Usage is what a workload certificate is for. Each usage has its own URI
// SAN form, so that a certificate issued for one cannot serve as the
// other: a service certificate, which every workload's sidecar holds and
// presents to its peers, cannot open an xDS stream, and a proxy's xDS
// client certificate is no service identity to its peers.
type Usage int

const (
	// UsageService is a workload's mTLS certificate towards other
	// workloads: spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>.
	UsageService Usage = iota + 1
	// UsageXDSClient is a proxy's client certificate towards the xds-edge,
	// written into its bootstrap by the injector-webhook:
	// spiffe://<trust-domain>/osm/xds-client/ns/<namespace>/sa/<serviceaccount>.
	UsageXDSClient
)

// xdsClientPrefix starts the path of an xDS client certificate's URI SAN.
// It is under /osm/, which no workload identity can start with, and is no
// control-plane role (RoleFromURI wants one segment after /osm/).
const xdsClientPrefix = "/osm/xds-client"

// String names the usage as errors and logs show it.
func (u Usage) String() string {
	switch u {
	case UsageService:
		return "service"
	case UsageXDSClient:
		return "xds-client"
	}
	return fmt.Sprintf("Usage(%d)", int(u))
}

// URLFor is the URI SAN of id's certificate for usage u (URL for
// UsageService and any unknown usage).
func (id ID) URLFor(u Usage) *url.URL {
	v := id.URL()
	if u == UsageXDSClient {
		v.Path = xdsClientPrefix + v.Path
	}
	return v
}

// ParseFor parses the URI SAN of a certificate for usage u: a workload id
// for UsageService (as Parse), its xds-client form for UsageXDSClient. An
// id of the other usage is an error naming both.
func ParseFor(s string, u Usage) (ID, error) {
	if u != UsageXDSClient {
		return Parse(s)
	}
	v, err := url.Parse(s)
	if err != nil {
		return ID{}, fmt.Errorf("identity %q: not a URI", s)
	}
	rest, ok := strings.CutPrefix(v.Path, xdsClientPrefix)
	if !ok || !strings.HasPrefix(rest, "/ns/") {
		return ID{}, fmt.Errorf("identity %q is not an xDS client identity: want spiffe://<trust-domain>%s/ns/<namespace>/sa/<serviceaccount> (a service certificate cannot open an xDS stream)", s, xdsClientPrefix)
	}
	v.Path = rest
	id, err := Parse(v.String())
	if err != nil {
		return ID{}, fmt.Errorf("xDS client %w", err)
	}
	return id, nil
}

// The name rules, checked by hand rather than with regular expressions,
// since Parse runs on every Sign (identity_test.go checks them against the
// equivalent expressions):
//   - trust domain (SPIFFE): 1-255 of lowercase letters, digits, '.', '-'
//     and '_';
//   - namespace: an RFC 1123 label, ^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$;
//   - ServiceAccount: an RFC 1123 subdomain, labels of the same form
//     (without the length bound) joined by dots.

func isTrustDomainChars(s string) bool {
	if len(s) == 0 || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isLowerAlnum(c) && c != '.' && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

func isLowerAlnum(c byte) bool { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') }

// isLabel reports whether s is [a-z0-9]([-a-z0-9]*[a-z0-9])?, of any length.
func isLabel(s string) bool {
	if len(s) == 0 || !isLowerAlnum(s[0]) || !isLowerAlnum(s[len(s)-1]) {
		return false
	}
	for i := 1; i < len(s)-1; i++ {
		if c := s[i]; !isLowerAlnum(c) && c != '-' {
			return false
		}
	}
	return true
}

// isDNSLabel is a Kubernetes namespace name: an RFC 1123 label of at most
// 63 characters.
func isDNSLabel(s string) bool { return len(s) <= 63 && isLabel(s) }

// isDNSSubdomain is labels joined by dots (the caller bounds the length).
func isDNSSubdomain(s string) bool {
	for {
		label, rest, more := strings.Cut(s, ".")
		if !isLabel(label) {
			return false
		}
		if !more {
			return true
		}
		s = rest
	}
}

// ErrForeignTrustDomain is wrapped by ParseIn for a well-formed identity of
// another trust domain.
var ErrForeignTrustDomain = errors.New("identity outside the trust domain")

// ValidateTrustDomain checks a SPIFFE trust domain name.
func ValidateTrustDomain(td string) error {
	if !isTrustDomainChars(td) || strings.Trim(td, ".") != td || strings.Contains(td, "..") {
		return fmt.Errorf("invalid trust domain %q: want lowercase letters, digits, '.', '-' or '_'", td)
	}
	return nil
}

// Parse parses a workload SPIFFE id,
// spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>, checking that
// each part is well formed.
func Parse(s string) (ID, error) {
	bad := func(format string, args ...any) (ID, error) {
		return ID{}, fmt.Errorf("identity %q: %s", s, fmt.Sprintf(format, args...))
	}
	u, err := url.Parse(s)
	if err != nil {
		return bad("not a URI")
	}
	if u.Scheme != "spiffe" {
		return bad("scheme must be spiffe")
	}
	if u.User != nil || u.Port() != "" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" || u.RawPath != "" {
		return bad("a SPIFFE ID has no user, port, query, fragment or escaped path")
	}
	if ValidateTrustDomain(u.Host) != nil {
		return bad("malformed trust domain")
	}
	parts := strings.Split(u.Path, "/")
	if len(parts) != 5 || parts[0] != "" || parts[1] != "ns" || parts[3] != "sa" {
		return bad("want spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>")
	}
	id := ID{TrustDomain: u.Host, Namespace: parts[2], ServiceAccount: parts[4]}
	if len(id.Namespace) > 63 || !isDNSLabel(id.Namespace) {
		return bad("namespace %q is not a valid Kubernetes namespace name", id.Namespace)
	}
	if len(id.ServiceAccount) > 253 || !isDNSSubdomain(id.ServiceAccount) {
		return bad("service account %q is not a valid Kubernetes name", id.ServiceAccount)
	}
	return id, nil
}

// ParseIn parses a workload id that must belong to trustDomain; a
// well-formed id of another domain gives an error wrapping
// ErrForeignTrustDomain.
func ParseIn(s, trustDomain string) (ID, error) {
	id, err := Parse(s)
	if err != nil {
		return ID{}, err
	}
	if id.TrustDomain != trustDomain {
		return ID{}, fmt.Errorf("identity %q is outside the trust domain %q: %w", s, trustDomain, ErrForeignTrustDomain)
	}
	return id, nil
}

// FromURI returns the workload identity of a certificate URI SAN in
// trustDomain, or false when u is not one (a control-plane identity, or
// another domain's).
func FromURI(u *url.URL, trustDomain string) (ID, bool) {
	if u == nil {
		return ID{}, false
	}
	id, err := ParseIn(u.String(), trustDomain)
	return id, err == nil
}

// Role is a control-plane component role, as written in its identity
// spiffe://<trust-domain>/osm/<role>, a path no workload identity can have.
type Role string

// The control-plane roles. The names match the deployables.
const (
	RoleSMIWatcher      Role = "smi-watcher"
	RolePolicyCompiler  Role = "policy-compiler"
	RoleInjectorWebhook Role = "injector-webhook"
	RoleXDSEdge         Role = "xds-edge"
	RoleOperator        Role = "operator"
	// RoleCertAuthority is the CA's own serving identity; no caller can
	// bootstrap it.
	RoleCertAuthority Role = "cert-authority"
)

// Roles lists the roles a caller may bootstrap.
func Roles() []Role {
	return []Role{RoleSMIWatcher, RolePolicyCompiler, RoleInjectorWebhook, RoleXDSEdge, RoleOperator}
}

// ControlPlaneURI is the identity of a control-plane role:
// spiffe://<trust-domain>/osm/<role>.
func ControlPlaneURI(trustDomain string, r Role) *url.URL {
	return &url.URL{Scheme: "spiffe", Host: trustDomain, Path: "/osm/" + string(r)}
}

// RoleFromURI returns the control-plane role of a certificate URI SAN, or
// false when u is not a control-plane identity of trustDomain.
func RoleFromURI(u *url.URL, trustDomain string) (Role, bool) {
	if u == nil || u.Scheme != "spiffe" || u.Host != trustDomain || u.RawQuery != "" || u.Fragment != "" {
		return "", false
	}
	rest, ok := strings.CutPrefix(u.Path, "/osm/")
	if !ok {
		return "", false
	}
	r := Role(rest)
	if r == RoleCertAuthority {
		return r, true
	}
	for _, k := range Roles() {
		if k == r {
			return r, true
		}
	}
	return "", false
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

// CSRDER returns a DER certificate signing request without any SAN, for a
// CA that sets the identity itself (Bootstrap does, from the verified token).
func (k *Key) CSRDER() ([]byte, error) {
	der, err := csrDER(k.priv, "")
	if err != nil {
		return nil, fmt.Errorf("create csr: %w", err)
	}
	return der, nil
}
