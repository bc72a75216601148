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
	"errors"
	"net/url"

	"github.com/openservicemesh/osm/libs/identity"
)

// Identity is a workload SPIFFE identity (libs/identity).
type Identity = identity.ID

// ValidateTrustDomain checks a SPIFFE trust domain name.
func ValidateTrustDomain(td string) error { return identity.ValidateTrustDomain(td) }

// ParseIdentity parses a workload SPIFFE identity and checks that it belongs
// to trustDomain. The error is a *Error with ReasonInvalidIdentity or
// ReasonForeignTrustDomain.
func ParseIdentity(s, trustDomain string) (Identity, error) {
	id, err := identity.ParseIn(s, trustDomain)
	switch {
	case errors.Is(err, identity.ErrForeignTrustDomain):
		return Identity{}, Errorf(ReasonForeignTrustDomain, "%v", err)
	case err != nil:
		return Identity{}, Errorf(ReasonInvalidIdentity, "%v", err)
	}
	return id, nil
}

// Role is a control-plane component role (libs/identity).
type Role = identity.Role

// The control-plane roles.
const (
	RoleSMIWatcher      = identity.RoleSMIWatcher
	RolePolicyCompiler  = identity.RolePolicyCompiler
	RoleInjectorWebhook = identity.RoleInjectorWebhook
	RoleXDSEdge         = identity.RoleXDSEdge
	RoleOperator        = identity.RoleOperator
	RoleCertAuthority   = identity.RoleCertAuthority
)

// Roles lists the roles a caller may bootstrap.
func Roles() []Role { return identity.Roles() }

// ControlPlaneURI is the identity of a control-plane role:
// spiffe://<trust-domain>/osm/<role>.
func ControlPlaneURI(trustDomain string, r Role) *url.URL {
	return identity.ControlPlaneURI(trustDomain, r)
}

// RoleFromURI returns the control-plane role of a certificate URI SAN, or
// false when u is not a control-plane identity of trustDomain.
func RoleFromURI(u *url.URL, trustDomain string) (Role, bool) {
	return identity.RoleFromURI(u, trustDomain)
}
