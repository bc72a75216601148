package server

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/openservicemesh/osm/libs/identity"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
)

// access lists, per full method name, the roles allowed to call it. A nil
// list means anyone may call (Bootstrap); a method absent from the map is
// refused.
func access() map[string][]identity.Role {
	all := identity.Roles()
	return map[string][]identity.Role{
		cav1.CertificateAuthorityService_Sign_FullMethodName:             {identity.RoleXDSEdge, identity.RoleInjectorWebhook},
		cav1.CertificateAuthorityService_GetTrustBundle_FullMethodName:   all,
		cav1.CertificateAuthorityService_WatchTrustBundle_FullMethodName: all,
		cav1.CertificateAuthorityService_Bootstrap_FullMethodName:        nil,
	}
}

type roleKey struct{}

// callerRole is the authenticated role of the caller, "" if none.
func callerRole(ctx context.Context) identity.Role {
	r, _ := ctx.Value(roleKey{}).(identity.Role)
	return r
}

// Authorizer checks each call's client certificate against the method's
// allowed roles.
type Authorizer struct {
	trustDomain string
	rules       map[string][]identity.Role
}

// NewAuthorizer returns the authorizer for the mesh's trust domain.
func NewAuthorizer(trustDomain string) *Authorizer {
	return &Authorizer{trustDomain: trustDomain, rules: access()}
}

// authorize returns ctx carrying the caller's role, or a status error.
func (a *Authorizer) authorize(ctx context.Context, method string) (context.Context, error) {
	allowed, known := a.rules[method]
	if !known {
		return nil, status.Errorf(codes.PermissionDenied, "method %s is not served", method)
	}
	role, err := a.peerRole(ctx)
	if allowed == nil {
		if err == nil {
			ctx = context.WithValue(ctx, roleKey{}, role)
		}
		return ctx, nil
	}
	if err != nil {
		return nil, err
	}
	for _, r := range allowed {
		if r == role {
			return context.WithValue(ctx, roleKey{}, role), nil
		}
	}
	return nil, status.Errorf(codes.PermissionDenied, "role %s may not call %s", role, method)
}

// peerRole reads the role from the verified client certificate.
func (a *Authorizer) peerRole(ctx context.Context) (identity.Role, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", status.Error(codes.Unauthenticated, "no peer information")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return "", status.Error(codes.Unauthenticated, "a control-plane client certificate is required (get one with Bootstrap)")
	}
	leaf := ti.State.VerifiedChains[0][0]
	// TLS checks validity once, at the handshake; a connection outlives
	// it. A call on a connection whose certificate has since expired is
	// refused, so a renewed certificate must be presented (the server ends
	// each connection at 90% of its certificate's lifetime, certBoundCreds,
	// and at its maximum connection age, so clients reconnect before).
	if now := time.Now(); now.After(leaf.NotAfter) {
		return "", status.Errorf(codes.Unauthenticated, "the client certificate expired at %s; reconnect with the renewed one", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	for _, u := range leaf.URIs {
		if r, ok := identity.RoleFromURI(u, a.trustDomain); ok {
			return r, nil
		}
	}
	return "", status.Errorf(codes.PermissionDenied, "the client certificate carries no control-plane role of trust domain %s", a.trustDomain)
}

// Unary is the unary interceptor.
func (a *Authorizer) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	ctx, err := a.authorize(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return h(ctx, req)
}

// Stream is the stream interceptor.
func (a *Authorizer) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx, err := a.authorize(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return h(srv, &roleStream{ServerStream: ss, ctx: ctx})
}

type roleStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *roleStream) Context() context.Context { return s.ctx }
