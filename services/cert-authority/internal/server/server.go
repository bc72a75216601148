// Package server is the cert-authority's gRPC service osm.ca.v1: Sign,
// GetTrustBundle, WatchTrustBundle and Bootstrap, served over mutual TLS.
//
// # Roles
//
// Control-plane components present a client certificate whose URI SAN is
// spiffe://<trust-domain>/osm/<role> (see package pki); they get it from
// Bootstrap. The CA authorizes each RPC by that role:
//
//   - Sign: xds-edge and injector-webhook only, each for its usages (see
//     signUsages): the edge service certificates; the injector xDS client
//     certificates, and service certificates for proxyless gRPC pods;
//   - GetTrustBundle, WatchTrustBundle: any control-plane role;
//   - Bootstrap: anyone; the caller has no certificate yet and proves
//     itself with a ServiceAccount token (checked with a TokenReview) or,
//     in dev mode, a pre-shared token.
//
// Workload certificates (spiffe://<td>/ns/<ns>/sa/<sa>) carry no role, so a
// workload cannot call the CA even though it chains to the same root.
package server

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/openservicemesh/osm/libs/identity"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	"github.com/openservicemesh/osm/services/cert-authority/internal/pki"
	"github.com/openservicemesh/osm/services/cert-authority/internal/trust"
)

// Signer signs validated requests: the built-in provider or Vault.
type Signer interface {
	Sign(ctx context.Context, r pki.SignRequest) (*pki.Leaf, error)
}

// Options configures New.
type Options struct {
	// Signer issues every certificate.
	Signer Signer
	// Hub holds the trust bundle served to callers.
	Hub *trust.Hub
	// Workload is the policy for Sign (trust domain, default and maximum
	// TTL).
	Workload pki.Policy
	// ControlPlane is the policy for Bootstrap; its trust domain must equal
	// Workload's.
	ControlPlane pki.Policy
	// Bootstrap configures how Bootstrap callers are authenticated.
	Bootstrap BootstrapOptions
	// Log is the component logger. Tokens and keys are never logged.
	Log *logrus.Entry
	// Meter records the sign metrics; nil records nothing.
	Meter metric.Meter
	// Limits pace Bootstrap and Sign per caller; the zero value limits
	// nothing (the service sets DefaultLimits unless told otherwise).
	Limits Limits
}

// Server implements cav1.CertificateAuthorityServiceServer.
type Server struct {
	cav1.UnimplementedCertificateAuthorityServiceServer

	signer  Signer
	hub     *trust.Hub
	wl, cp  pki.Policy
	boot    BootstrapOptions
	log     *logrus.Entry
	metrics *metrics
	// bootLimit and signLimit pace each caller before any work.
	bootLimit, signLimit *callerLimiter

	stopOnce sync.Once
	stopping chan struct{} // closed by EndWatches
}

var _ cav1.CertificateAuthorityServiceServer = (*Server)(nil)

// New returns the service.
func New(o Options) (*Server, error) {
	if o.Signer == nil || o.Hub == nil {
		return nil, errors.New("server: Signer and Hub are required")
	}
	if o.ControlPlane.TrustDomain != o.Workload.TrustDomain {
		return nil, errors.New("server: the control-plane and workload policies name different trust domains")
	}
	if o.Log == nil {
		o.Log = logrus.NewEntry(logrus.New())
	}
	m, err := newMetrics(o.Meter)
	if err != nil {
		return nil, err
	}
	return &Server{signer: o.Signer, hub: o.Hub, wl: o.Workload, cp: o.ControlPlane, boot: o.Bootstrap, log: o.Log, metrics: m,
		bootLimit: newCallerLimiter("Bootstrap", o.Limits.Bootstrap), signLimit: newCallerLimiter("Sign", o.Limits.Sign),
		stopping: make(chan struct{})}, nil
}

// Register adds the service to a gRPC server.
func (s *Server) Register(r grpc.ServiceRegistrar) {
	cav1.RegisterCertificateAuthorityServiceServer(r, s)
}

// Sign signs a workload CSR.
func (s *Server) Sign(ctx context.Context, req *cav1.SignRequest) (*cav1.SignResponse, error) {
	start := time.Now()
	if err := s.signLimit.allow(callerCertificate(ctx)); err != nil {
		s.metrics.record(ctx, rpcSign, start, err) // not logged: a flood would flood the log too
		return nil, err
	}
	ttl, asked := s.signTTL(req)
	leaf, err := s.sign(ctx, req, ttl)
	s.metrics.record(ctx, rpcSign, start, err)
	if err != nil {
		s.log.WithContext(ctx).WithFields(logrus.Fields{"identity": req.GetIdentity(), "caller_role": callerRole(ctx), "reason": reasonLabel(err)}).WithError(err).Info("sign refused")
		return nil, toStatus(err)
	}
	if asked != ttl {
		s.log.WithContext(ctx).WithFields(logrus.Fields{"identity": req.GetIdentity(), "caller_role": callerRole(ctx), "asked_ttl": asked.String(),
			"granted_ttl": ttl.String(), "reason": "the asked ttl exceeds --max-ttl"}).Info("sign ttl clamped")
	}
	return &cav1.SignResponse{
		CertificateChainPem: leaf.ChainPEM,
		IssuerId:            leaf.IssuerID,
		NotAfter:            timestamppb.New(leaf.NotAfter),
		SerialNumber:        leaf.SerialNumber.Text(16),
	}, nil
}

func (s *Server) sign(ctx context.Context, req *cav1.SignRequest, ttl time.Duration) (*pki.Leaf, error) {
	usage, err := signUsage(callerRole(ctx), req.GetUsage())
	if err != nil {
		return nil, err
	}
	wr, err := s.wl.ValidateWorkload(req.GetCsr(), req.GetIdentity(), usage, ttl)
	if err != nil {
		return nil, err
	}
	return s.signer.Sign(ctx, pki.SignRequest{CSR: wr.CSR, URI: wr.URI, TTL: wr.TTL})
}

// signUsages is what each role may sign: the xds-edge service
// certificates for the proxies it serves over SDS; the injector-webhook xDS
// client certificates for pods' bootstraps, and service certificates for
// proxyless gRPC pods, whose bootstrap Secret carries their workload
// certificate files (gRPC has no SDS). The edge may not sign xDS client
// certificates: a compromised edge cannot open xDS streams as any
// workload. The injector's service certificates give it no power it lacks:
// an xDS client certificate it signs already gets that identity's service
// certificate from the edge over SDS.
var signUsages = map[identity.Role][]struct {
	usage cav1.CertificateUsage
	id    identity.Usage
}{
	identity.RoleXDSEdge: {{cav1.CertificateUsage_CERTIFICATE_USAGE_SERVICE, identity.UsageService}},
	identity.RoleInjectorWebhook: {
		{cav1.CertificateUsage_CERTIFICATE_USAGE_XDS_CLIENT, identity.UsageXDSClient},
		{cav1.CertificateUsage_CERTIFICATE_USAGE_SERVICE, identity.UsageService},
	},
}

// signUsage checks that role may ask for u.
func signUsage(role identity.Role, u cav1.CertificateUsage) (identity.Usage, error) {
	if _, known := cav1.CertificateUsage_name[int32(u)]; !known || u == cav1.CertificateUsage_CERTIFICATE_USAGE_UNSPECIFIED {
		return 0, pki.Errorf(pki.ReasonInvalidUsage, "usage: %v is not a certificate usage; want CERTIFICATE_USAGE_SERVICE or CERTIFICATE_USAGE_XDS_CLIENT", u)
	}
	for _, allowed := range signUsages[role] {
		if allowed.usage == u {
			return allowed.id, nil
		}
	}
	return 0, pki.Errorf(pki.ReasonUsageNotAllowed, "usage: role %q may not sign %v certificates", role, u)
}

// ttlOf maps an unset duration to 0 (the default) and a set zero duration
// to an invalid one, so that "ttl: 0s" is refused rather than defaulted.
func ttlOf(d time.Duration, set bool) time.Duration {
	if set && d == 0 {
		return -1
	}
	return d
}

// GetTrustBundle returns the current bundle.
func (s *Server) GetTrustBundle(context.Context, *cav1.GetTrustBundleRequest) (*cav1.GetTrustBundleResponse, error) {
	b, _ := s.hub.Current()
	if b == nil {
		return nil, status.Error(codes.Unavailable, "the trust bundle is not loaded yet")
	}
	return &cav1.GetTrustBundleResponse{TrustBundle: b}, nil
}

// WatchTrustBundle streams the bundle: the current one unless the caller
// knows it, then each change, until the caller cancels or EndWatches is
// called (the stream then ends with Unavailable, and the caller reconnects,
// for example to another replica).
func (s *Server) WatchTrustBundle(req *cav1.WatchTrustBundleRequest, stream grpc.ServerStreamingServer[cav1.WatchTrustBundleResponse]) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	go func() {
		select {
		case <-s.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	known := req.GetKnownVersion()
	for {
		b, err := s.hub.Next(ctx, known)
		if err != nil {
			select {
			case <-s.stopping:
				return status.Error(codes.Unavailable, "the cert-authority is shutting down; reconnect")
			default:
			}
			return status.FromContextError(err).Err()
		}
		if err := stream.Send(&cav1.WatchTrustBundleResponse{TrustBundle: b}); err != nil {
			return err
		}
		known = b.Version
	}
}

// EndWatches ends every WatchTrustBundle stream, now and later. Call it
// before grpc.Server.GracefulStop, which would otherwise wait for these
// never-ending streams until its deadline.
func (s *Server) EndWatches() {
	s.stopOnce.Do(func() { close(s.stopping) })
}
