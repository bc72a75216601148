package server

import (
	"context"
	"crypto/subtle"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/openservicemesh/osm/libs/identity"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	"github.com/openservicemesh/osm/services/cert-authority/internal/pki"
)

// ServiceAccount names a Kubernetes ServiceAccount.
type ServiceAccount struct {
	Namespace, Name string
}

// Username is the ServiceAccount's Kubernetes user name.
func (sa ServiceAccount) Username() string {
	return "system:serviceaccount:" + sa.Namespace + ":" + sa.Name
}

// TokenReviewer verifies a ServiceAccount token and returns the Kubernetes
// user name it authenticates.
type TokenReviewer interface {
	Review(ctx context.Context, token string) (username string, err error)
}

// BootstrapOptions configures how Bootstrap authenticates callers.
type BootstrapOptions struct {
	// Reviewer verifies ServiceAccount tokens; nil refuses them.
	Reviewer TokenReviewer
	// Accounts maps each role to the only ServiceAccount allowed to claim it.
	// A role absent from the map cannot be bootstrapped with a
	// ServiceAccount token.
	Accounts map[identity.Role]ServiceAccount
	// DevToken, when set, is a pre-shared token that may claim any role: for
	// the local dev stack only.
	DevToken string
	// DNS is the policy for BootstrapRequest.dns_names.
	DNS DNSPolicy
}

// roleFromProto maps the wire enum to a role.
func roleFromProto(r cav1.ComponentRole) (identity.Role, bool) {
	switch r {
	case cav1.ComponentRole_COMPONENT_ROLE_SMI_WATCHER:
		return identity.RoleSMIWatcher, true
	case cav1.ComponentRole_COMPONENT_ROLE_POLICY_COMPILER:
		return identity.RolePolicyCompiler, true
	case cav1.ComponentRole_COMPONENT_ROLE_INJECTOR_WEBHOOK:
		return identity.RoleInjectorWebhook, true
	case cav1.ComponentRole_COMPONENT_ROLE_XDS_EDGE:
		return identity.RoleXDSEdge, true
	case cav1.ComponentRole_COMPONENT_ROLE_OPERATOR:
		return identity.RoleOperator, true
	}
	return "", false
}

// Bootstrap issues a control-plane certificate to a caller that proves its
// role with a token.
func (s *Server) Bootstrap(ctx context.Context, req *cav1.BootstrapRequest) (*cav1.BootstrapResponse, error) {
	start := time.Now()
	if err := s.bootLimit.allow(callerAddress(ctx)); err != nil {
		s.metrics.record(ctx, rpcBootstrap, start, err) // not logged: a flood would flood the log too
		return nil, err
	}
	role, ok := roleFromProto(req.GetRole())
	log := s.log.WithContext(ctx).WithFields(logrus.Fields{"role": string(role), "token_type": req.GetTokenType().String()})
	if !ok {
		err := status.Errorf(codes.InvalidArgument, "unknown component role %s", req.GetRole())
		s.metrics.record(ctx, rpcBootstrap, start, err)
		return nil, err
	}
	if err := s.boot.DNS.checkDNSNames(role, req.GetDnsNames()); err != nil {
		s.metrics.record(ctx, rpcBootstrap, start, err)
		log.WithError(err).Warn("bootstrap refused")
		return nil, err
	}
	who, err := s.authenticate(ctx, req, role)
	if err != nil {
		s.metrics.record(ctx, rpcBootstrap, start, err)
		log.WithError(err).Warn("bootstrap refused")
		return nil, err
	}
	leaf, err := s.bootstrapSign(ctx, req, role)
	s.metrics.record(ctx, rpcBootstrap, start, err)
	if err != nil {
		log.WithField("caller", who).WithError(err).Warn("bootstrap refused")
		return nil, toStatus(err)
	}
	bundle, _ := s.hub.Current()
	log.WithFields(logrus.Fields{"caller": who, "serial": leaf.SerialNumber.Text(16), "not_after": leaf.NotAfter.UTC(), "dns_names": req.GetDnsNames()}).Info("bootstrapped control-plane certificate")
	return &cav1.BootstrapResponse{
		CertificateChainPem: leaf.ChainPEM,
		Identity:            identity.ControlPlaneURI(s.cp.TrustDomain, role).String(),
		IssuerId:            leaf.IssuerID,
		NotAfter:            timestamppb.New(leaf.NotAfter),
		TrustBundle:         bundle,
	}, nil
}

// authenticate checks the token and returns who presented it (for logs).
func (s *Server) authenticate(ctx context.Context, req *cav1.BootstrapRequest, role identity.Role) (string, error) {
	if req.GetToken() == "" {
		return "", status.Error(codes.Unauthenticated, "the bootstrap token is empty")
	}
	switch req.GetTokenType() {
	case cav1.TokenType_TOKEN_TYPE_PRE_SHARED:
		if s.boot.DevToken == "" {
			return "", status.Error(codes.Unauthenticated, "pre-shared bootstrap tokens are disabled (dev mode is off)")
		}
		if subtle.ConstantTimeCompare([]byte(req.GetToken()), []byte(s.boot.DevToken)) != 1 {
			return "", status.Error(codes.Unauthenticated, "the pre-shared bootstrap token is wrong")
		}
		return "pre-shared-token", nil
	case cav1.TokenType_TOKEN_TYPE_SERVICE_ACCOUNT, cav1.TokenType_TOKEN_TYPE_UNSPECIFIED:
		if s.boot.Reviewer == nil {
			return "", status.Error(codes.Unauthenticated, "ServiceAccount tokens are not accepted: the CA has no Kubernetes access")
		}
		want, ok := s.boot.Accounts[role]
		if !ok {
			return "", status.Errorf(codes.PermissionDenied, "no ServiceAccount may bootstrap role %s", role)
		}
		user, err := s.boot.Reviewer.Review(ctx, req.GetToken())
		if err != nil {
			return "", err
		}
		if user != want.Username() {
			return "", status.Errorf(codes.PermissionDenied, "%s may not bootstrap role %s (only %s may)", user, role, want.Username())
		}
		return user, nil
	default:
		return "", status.Errorf(codes.InvalidArgument, "unknown token type %s", req.GetTokenType())
	}
}

func (s *Server) bootstrapSign(ctx context.Context, req *cav1.BootstrapRequest, role identity.Role) (*pki.Leaf, error) {
	uri := identity.ControlPlaneURI(s.cp.TrustDomain, role)
	csr, err := pki.ParseCSR(req.GetCsr())
	if err != nil {
		return nil, err
	}
	if err := pki.CheckSANs(csr, uri); err != nil {
		return nil, err
	}
	ttl, err := s.cp.TTL(ttlOf(req.GetTtl().AsDuration(), req.GetTtl() != nil))
	if err != nil {
		return nil, err
	}
	return s.signer.Sign(ctx, pki.SignRequest{CSR: csr, URI: uri, DNSNames: req.GetDnsNames(), TTL: ttl})
}

// KubeReviewer verifies tokens with the apiserver's TokenReview API.
type KubeReviewer struct {
	client    kubernetes.Interface
	audiences []string
}

var _ TokenReviewer = (*KubeReviewer)(nil)

// NewKubeReviewer returns a reviewer; audiences, when set, are the token
// audiences the CA accepts (the callers' projected tokens must name one).
func NewKubeReviewer(c kubernetes.Interface, audiences []string) *KubeReviewer {
	return &KubeReviewer{client: c, audiences: audiences}
}

// Review creates a TokenReview. It returns a gRPC status: Unauthenticated
// for a token the apiserver rejects, Unavailable when it cannot be asked.
func (k *KubeReviewer) Review(ctx context.Context, token string) (string, error) {
	tr, err := k.client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: k.audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", status.Error(codes.Unavailable, fmt.Sprintf("token review: %v", err))
	}
	if !tr.Status.Authenticated {
		msg := "the ServiceAccount token was not authenticated"
		if tr.Status.Error != "" {
			msg += ": " + tr.Status.Error
		}
		return "", status.Error(codes.Unauthenticated, msg)
	}
	return tr.Status.User.Username, nil
}
