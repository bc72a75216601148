// Package edge assembles the xds-edge: it feeds the xDS server from KV
// mesh-compiled and mesh-trust, decides readiness, obtains service
// certificates from the cert-authority, publishes proxy status to
// mesh.status.proxy.>, and serves ADS on an mTLS listener. It makes no
// Kubernetes API call.
package edge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/sirupsen/logrus"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/meshcfg"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/xds-edge/internal/debug"
	"github.com/openservicemesh/osm/services/xds-edge/internal/sds"
	"github.com/openservicemesh/osm/services/xds-edge/internal/xds"
)

// Deps are what an Edge runs on; main builds them from flags, tests
// directly.
type Deps struct {
	Log *logrus.Entry
	// Conn is the NATS connection, with the edge role.
	Conn *bus.Conn
	// Listener is where ADS is served.
	Listener net.Listener
	// GRPC holds the listener's mTLS, keepalive and connection-age settings.
	// Proxies' client certificates are verified against GRPC.TLS.ClientCAs
	// (may be nil) plus every root of the current mesh-trust bundle, so a
	// root rotation needs no restart.
	GRPC xds.GRPCConfig
	// EdgeID names this replica in proxy status.
	EdgeID string
	// TrustDomain is the only trust domain served.
	TrustDomain string
	// Signer is the cert-authority client; nil serves no service-cert.
	Signer sds.Signer
	// CertTTL and CertLinger tune service certificates (see sds.Options).
	CertTTL, CertLinger time.Duration
	// MeshConfigNamespace and MeshConfigName name the MeshConfig whose
	// spec.certificate.serviceCertValidityDuration sets the service
	// certificates' lifetime (read from KV mesh-observed, see
	// meshconfig.go); an empty name follows none.
	MeshConfigNamespace, MeshConfigName string
	// Observe, when set, is given each MeshConfig version the follower
	// sees (nil: none), for spec.observability (app.Runtime.ApplyObservability).
	Observe func(mc *meshv1.MeshConfig)
	// CertRetryMax caps the wait between attempts to sign a service
	// certificate while the CA fails (sds.Options.RetryMax); 0 is 30s.
	CertRetryMax time.Duration
	// NATSLostThreshold is how long NATS may be lost before the edge turns
	// not-ready.
	NATSLostThreshold time.Duration
	// Admission limits new streams; nil admits all.
	Admission *rate.Limiter
	// AckStatusInterval coalesces each proxy's ACK status reports (see
	// xds.Options).
	AckStatusInterval time.Duration
	// Meter makes the metrics; nil records none.
	Meter metric.Meter
	// StopGrace bounds the graceful stop of the gRPC server.
	StopGrace time.Duration
	// Debug, when set, is where the debug API (package debug) is served,
	// with the ADS listener's mutual TLS (the same serving certificate and
	// client roots), to the operator's certificate only.
	Debug net.Listener
	// BundleChanged, when set, receives a value (without blocking) after
	// each trust bundle the edge applies: the edge's own certificate
	// renews at a root rotation's switch (cpcert.Options.BundleChanged).
	BundleChanged chan<- struct{}
}

// Edge is one xds-edge replica.
type Edge struct {
	d         Deps
	clientCAs atomic.Pointer[x509.CertPool]
	// bundleRoots are the current mesh-trust bundle's roots, PEM.
	bundleRoots atomic.Pointer[[]byte]
	// signingRoot is the current bundle's signing root, PEM.
	signingRoot atomic.Pointer[[]byte]
	srv         *xds.Server
	feed        *feed
	grpc        *grpc.Server
	issuer      *sds.Issuer
	// meshConfig follows the MeshConfig (certificate lifetime, stream
	// limit); nil without --mesh-config.
	meshConfig *meshcfg.Follower
	// debug serves the debug API on Deps.Debug; nil without it.
	debug *http.Server
}

// New builds an edge; Start runs it.
func New(d Deps) (*Edge, error) {
	if d.Log == nil || d.Conn == nil || d.Listener == nil || d.GRPC.TLS == nil {
		return nil, errors.New("edge: Log, Conn, Listener and GRPC.TLS are required")
	}
	if d.StopGrace <= 0 {
		d.StopGrace = 10 * time.Second
	}
	srv, err := xds.New(xds.Options{
		Log: d.Log, EdgeID: d.EdgeID, TrustDomain: d.TrustDomain, Meter: d.Meter, Admission: d.Admission,
		Status:            &natsStatus{p: d.Conn.NATS(), edgeID: d.EdgeID, log: d.Log},
		AckStatusInterval: d.AckStatusInterval,
	})
	if err != nil {
		return nil, err
	}
	e := &Edge{d: d, srv: srv}
	if d.GRPC.TLS.ClientCAs != nil {
		e.clientCAs.Store(d.GRPC.TLS.ClientCAs)
	} else {
		e.clientCAs.Store(x509.NewCertPool())
	}
	base := d.GRPC.TLS.Clone()
	base.ClientAuth = tls.RequireAndVerifyClientCert
	gc := d.GRPC
	gc.TLS = &tls.Config{MinVersion: base.MinVersion, GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		c.ClientCAs = e.clientCAs.Load()
		return c, nil
	}}
	g := grpc.NewServer(xds.ServerOptions(gc)...)
	srv.Register(g)
	e.grpc = g
	if d.Debug != nil {
		do := debug.Options{Source: srv, EdgeID: d.EdgeID, TrustDomain: d.TrustDomain, Log: d.Log.WithField("component", "debug"),
			Observed: debug.ObservedBucket(d.Conn)}
		e.debug = &http.Server{
			Handler:           debug.Handler(do),
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          log.New(debugLogWriter{d.Log.WithField("component", "debug")}, "", 0),
		}
		d.Debug = tls.NewListener(d.Debug, gc.TLS)
		e.d.Debug = d.Debug
	}
	if d.Signer != nil {
		so := sds.Options{Signer: d.Signer, Sink: srv, Log: d.Log.WithField("component", "sds"), TTL: d.CertTTL, Linger: d.CertLinger,
			RetryMax: d.CertRetryMax, Meter: d.Meter}
		if d.MeshConfigName != "" {
			so.AwaitLifetime = awaitMeshConfig
		}
		e.issuer, err = sds.New(so)
		if err != nil {
			return nil, err
		}
		srv.SetSecretSource(e.issuer)
	}
	if d.MeshConfigName != "" {
		if e.meshConfig, err = newMeshConfigFollower(d, e.issuer, srv); err != nil {
			return nil, err
		}
	}

	e.feed = &feed{
		log: d.Log.WithField("component", "feed"), target: srv, onBundle: e.trustBundle,
		connected: func() bool { return d.Conn.NATS().Status() == nats.CONNECTED },
		threshold: d.NATSLostThreshold, now: time.Now,
	}
	return e, nil
}

// Server is the edge's xDS server.
func (e *Edge) Server() *xds.Server { return e.srv }

// Start runs the edge until ctx ends: it opens the buckets (waiting for
// them to exist), feeds the server, renews the service certificates, and
// serves ADS. Streams are refused with UNAVAILABLE until the initial sync is
// complete. On return the gRPC server and the renewals have stopped.
func (e *Edge) Start(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return app.ServeGRPC(gctx, e.grpc, e.d.Listener, e.d.StopGrace, func() { e.srv.SetServing(false) })
	})
	g.Go(func() error {
		waiting := func(name string) func(error) {
			return func(err error) { e.d.Log.WithError(err).WithField("bucket", name).Warn("waiting for bucket") }
		}
		compiled, err := e.d.Conn.WaitBucket(gctx, bus.BucketCompiled, waiting(bus.BucketCompiled))
		if err != nil {
			return err
		}
		trust, err := e.d.Conn.WaitBucket(gctx, bus.BucketTrust, waiting(bus.BucketTrust))
		if err != nil {
			return err
		}
		e.feed.compiled, e.feed.trust = compiled, trust
		return e.feed.run(gctx)
	})
	if e.issuer != nil {
		g.Go(func() error { return e.issuer.Start(gctx) })
	}
	if e.meshConfig != nil {
		g.Go(func() error { return e.meshConfig.Start(gctx) })
	}
	if e.debug != nil {
		g.Go(func() error { return serveDebug(gctx, e.debug, e.d.Debug, e.d.StopGrace) })
	}
	err := g.Wait()
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// debugLogWriter logs the debug server's own errors (failed handshakes:
// callers without a certificate of the mesh) at debug level.
type debugLogWriter struct{ log *logrus.Entry }

func (w debugLogWriter) Write(b []byte) (int, error) {
	w.log.WithField("error", strings.TrimSpace(string(b))).Debug("debug api connection failed")
	return len(b), nil
}

// serveDebug serves the debug API on ln until ctx ends, then shuts it
// down within grace.
func serveDebug(ctx context.Context, srv *http.Server, ln net.Listener, grace time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("debug api: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	<-errc
	return nil
}

// trustBundle makes the bundle's roots (plus the configured ones) the roots
// that verify proxies' client certificates.
func (e *Edge) trustBundle(b *meshv1.TrustBundle) {
	pool := x509.NewCertPool()
	if base := e.d.GRPC.TLS.ClientCAs; base != nil {
		pool = base.Clone()
	}
	for _, r := range b.GetRoots() {
		if !pool.AppendCertsFromPEM(r.GetCertificatePem()) {
			e.d.Log.WithField("root_id", r.GetId()).Warn("trust bundle root is not a PEM certificate")
		}
	}
	e.clientCAs.Store(pool)
	roots, signing := caclient.RootsPEM(b), caclient.SigningRootPEM(b)
	e.bundleRoots.Store(&roots)
	e.signingRoot.Store(&signing)
	if e.d.BundleChanged != nil {
		select {
		case e.d.BundleChanged <- struct{}{}:
		default:
		}
	}
}

// SigningRoot is the root of the mesh-trust bundle the edge applied last
// that signs now, PEM; nil before the first bundle or when none is marked
// signing.
func (e *Edge) SigningRoot() []byte {
	if r := e.signingRoot.Load(); r != nil {
		return *r
	}
	return nil
}

// BundleRoots are the roots of the mesh-trust bundle the edge applied last,
// PEM; nil before the first. They verify the cert-authority too
// (caclient.Config.ExtraRoots), so the edge reaches it after a root
// rotation's switch step.
func (e *Edge) BundleRoots() []byte {
	if r := e.bundleRoots.Load(); r != nil {
		return *r
	}
	return nil
}

// CheckSync is the readiness check of the initial sync.
func (e *Edge) CheckSync(context.Context) error { return e.feed.checkSync() }

// CheckNATS is the readiness check of the NATS connection, with the lost
// threshold.
func (e *Edge) CheckNATS(context.Context) error { return e.feed.checkNATS() }

// natsStatus publishes proxy status on mesh.status.proxy.<edge>.<proxy>.
type natsStatus struct {
	p      bus.Publisher
	edgeID string
	log    *logrus.Entry
}

// PublishStatus implements xds.StatusPublisher. Status is best effort: a
// report lost while NATS is away is superseded by the next one.
func (n *natsStatus) PublishStatus(ctx context.Context, s *meshv1.ProxyStatus) {
	if err := bus.Publish(ctx, n.p, StatusSubject(n.edgeID, s.GetProxyId()), s); err != nil {
		n.log.WithError(err).WithField("node_id", s.GetNodeId()).Debug("proxy status not published")
	}
}

// StatusSubject is the subject of a proxy's status reports.
func StatusSubject(edgeID, proxyID string) string {
	return bus.SubjectProxyStatus + "." + bus.EscapeToken(edgeID) + "." + bus.EscapeToken(proxyID)
}
