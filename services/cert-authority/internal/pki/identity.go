// Package pki is the certificate core of the cert-authority: SPIFFE identity
// parsing, CSR validation, leaf issuance from an ECDSA P-256 issuer, root
// generation and the root rotation state (the signing root plus the roots
// kept trusted during an overlap). It does no I/O: providers store and fetch
// roots, the server speaks gRPC.
//
// Identities. A workload identity is
//
//	spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>
//
// A control-plane component's identity encodes its role in a path no
// workload identity can have:
//
//	spiffe://<trust-domain>/osm/<role>
//
// for example spiffe://cluster.local/osm/xds-edge. Sign only ever issues
// workload identities, so a caller of Sign can never obtain a control-plane
// identity; those come from Bootstrap alone.
package pki

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// Identity is a workload SPIFFE identity.
type Identity struct {
	// TrustDomain is the SPIFFE trust domain, e.g. cluster.local.
	TrustDomain string
	// Namespace is the workload's Kubernetes namespace.
	Namespace string
	// ServiceAccount is the workload's Kubernetes ServiceAccount.
	ServiceAccount string
}

// String is the identity's SPIFFE URI.
func (id Identity) String() string {
	return "spiffe://" + id.TrustDomain + "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount
}

// URI is the identity as the URI SAN written into certificates.
func (id Identity) URI() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: id.TrustDomain, Path: "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount}
}

var (
	// trustDomainRE follows the SPIFFE spec: lowercase letters, digits,
	// dots, dashes and underscores.
	trustDomainRE = regexp.MustCompile(`^[a-z0-9._-]{1,255}$`)
	// dnsLabelRE is a Kubernetes namespace name (RFC 1123 label).
	dnsLabelRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	// dnsSubdomainRE is a Kubernetes ServiceAccount name (RFC 1123 subdomain).
	dnsSubdomainRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// ValidateTrustDomain checks a SPIFFE trust domain name.
func ValidateTrustDomain(td string) error {
	if !trustDomainRE.MatchString(td) || strings.Trim(td, ".") != td || strings.Contains(td, "..") {
		return fmt.Errorf("invalid trust domain %q: want lowercase letters, digits, '.', '-' or '_'", td)
	}
	return nil
}

// ParseIdentity parses a workload SPIFFE identity and checks that it belongs
// to trustDomain. The error is a *Error with ReasonInvalidIdentity or
// ReasonForeignTrustDomain.
func ParseIdentity(s, trustDomain string) (Identity, error) {
	bad := func(format string, args ...any) (Identity, error) {
		return Identity{}, Errorf(ReasonInvalidIdentity, "identity %q: %s", s, fmt.Sprintf(format, args...))
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
	if u.Host != trustDomain {
		return Identity{}, Errorf(ReasonForeignTrustDomain, "identity %q is outside the trust domain %q", s, trustDomain)
	}
	parts := strings.Split(u.Path, "/")
	if len(parts) != 5 || parts[0] != "" || parts[1] != "ns" || parts[3] != "sa" {
		return bad("want spiffe://%s/ns/<namespace>/sa/<serviceaccount>", trustDomain)
	}
	id := Identity{TrustDomain: u.Host, Namespace: parts[2], ServiceAccount: parts[4]}
	if len(id.Namespace) > 63 || !dnsLabelRE.MatchString(id.Namespace) {
		return bad("namespace %q is not a valid Kubernetes namespace name", id.Namespace)
	}
	if len(id.ServiceAccount) > 253 || !dnsSubdomainRE.MatchString(id.ServiceAccount) {
		return bad("service account %q is not a valid Kubernetes name", id.ServiceAccount)
	}
	return id, nil
}

// Role is a control-plane component role, as written in its identity.
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
