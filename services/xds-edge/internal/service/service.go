// Package service is the front door of the xds-edge service: its flags,
// their validation, and the Run wiring that obtains the edge's own
// certificate from the cert-authority, connects to NATS and to the CA, and
// runs the own-certificate renewal and the edge (KV feed, SDS renewals, ADS
// listener) under one errgroup.
package service

import (
	"context"
	"crypto/tls"
	"net"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/caclient"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	"github.com/openservicemesh/osm/services/xds-edge/internal/edge"
	"github.com/openservicemesh/osm/services/xds-edge/internal/xds"
)

// Name is the service's name: the binary, its --help, and the name of its
// meters.
const Name = "xds-edge"

// Options holds the test overrides of the service. The xds-edge's tests
// drive it through flags alone, so it has no fields; its zero value is
// production.
type Options struct{}

// config holds the service's own flags.
type config struct {
	listenAddr            string
	debugAddr             string
	tlsCertFile           string
	tlsKeyFile            string
	tlsClientCAFile       string
	cp                    app.ControlPlane
	ca                    caclient.Config
	certTTL               time.Duration
	certLinger            time.Duration
	certRetryMax          time.Duration
	natsLostThreshold     time.Duration
	streamRate            int
	streamBurst           int
	keepaliveTime         time.Duration
	keepaliveTimeout      time.Duration
	maxConnectionAge      time.Duration
	maxConnectionAgeGrace time.Duration
	maxStreamsPerConn     int
	ackStatusInterval     time.Duration
}

// Spec is the xds-edge service for app.Main and app.Run.
func Spec(Options) app.Spec {
	var c config
	return app.Spec{
		Name: Name,
		Summary: "OSM's xDS tier: serves Envoy sidecars over ADS (state of the world and delta, with SDS) on an\n" +
			"mTLS listener, from KV mesh-compiled and mesh-trust in NATS. A proxy's identity is the URI SAN\n" +
			"of its client certificate, in --trust-domain (proxies of any other domain are refused).\n" +
			"/readyz stays false until the initial sync is complete. It makes no Kubernetes API call: the MeshConfig\n" +
			"--mesh-config in --namespace, whose spec.certificate.serviceCertValidityDuration sets the service\n" +
			"certificates' lifetime and spec.sidecar.maxDataPlaneConnections the most xDS streams this replica\n" +
			"keeps open (beyond it a new stream is refused with RESOURCE_EXHAUSTED), is read from KV mesh-observed.\n" +
			"With --debug-addr it serves the debug API that osm proxy reads, to the operator's certificate only.\n" +
			"It runs with GOGC=200 unless the GOGC environment variable is set.",
		UsesNATS: true,
		Flags:    c.flags,
		Validate: c.validate,
		Run:      c.run,
	}
}

// flags registers the service's flags.
func (c *config) flags(f *app.Flags) {
	f.String(&c.listenAddr, "listen-addr", ":15128", "address of the ADS (xDS and SDS) listener, served with mutual TLS")
	f.String(&c.debugAddr, "debug-addr", "", "address of the debug API (HTTPS with mutual TLS, the ADS listener's certificate and client roots), which answers only the operator's control-plane certificate "+
		"(role operator from the cert-authority's Bootstrap, as osm proxy gets one): each connected proxy's ACKed generation, lag, last NACK, served resources and certificates, never a private key; the recent generations' convergence; an observed object's latest mesh-observed entry; empty: off")
	f.String(&c.tlsCertFile, "tls-cert-file", "", "override: serve the ADS listener with this certificate file (reloaded when it changes) instead of the edge's own certificate from the cert-authority's Bootstrap")
	f.String(&c.tlsKeyFile, "tls-key-file", "", "override: serving key of --tls-cert-file")
	f.String(&c.tlsClientCAFile, "tls-client-ca-file", "", "extra roots that verify proxies' client certificates, besides every root of the mesh-trust bundle; a proxy's identity is the URI SAN of its certificate")
	c.cp.Flags(f, app.CPPodName|app.CPTrustDomain|app.CPMeshConfig)
	f.Deprecated("edge-id", "pod-name")
	c.ca.Flags(f)
	f.Duration(&c.certTTL, "cert-ttl", 0, "lifetime asked for service certificates while the MeshConfig (--mesh-config) sets no spec.certificate.serviceCertValidityDuration, which wins; "+
		"0 asks none: the cert-authority's --default-ttl. Each certificate is renewed at half of its lifetime; a change applies at each certificate's next issue or renewal")
	f.Duration(&c.certRetryMax, "cert-retry-max", 30*time.Second, "longest wait between attempts to have a service certificate signed while the cert-authority fails (jittered exponential backoff from 500ms)")
	f.Duration(&c.certLinger, "cert-linger", 5*time.Minute, "how long an identity's certificate is kept after its last proxy left, for reconnects")
	f.Duration(&c.natsLostThreshold, "nats-lost-threshold", 30*time.Second, "after NATS is lost this long the edge turns not-ready (connected proxies keep their last good state)")
	f.Int(&c.streamRate, "stream-rate", 200, "new xDS streams admitted per second; more are refused with UNAVAILABLE and retried by the proxy")
	f.Int(&c.streamBurst, "stream-burst", 400, "burst of new xDS streams admitted above --stream-rate")
	f.Duration(&c.keepaliveTime, "keepalive-time", 30*time.Second, "how often the edge pings an idle proxy connection")
	f.Duration(&c.keepaliveTimeout, "keepalive-timeout", 10*time.Second, "how long the edge waits for a keepalive answer before closing the connection")
	f.Duration(&c.maxConnectionAge, "max-connection-age", 30*time.Minute, app.MaxConnectionAgeHelp)
	f.Duration(&c.maxConnectionAgeGrace, "max-connection-age-grace", time.Minute, "time given to open streams after --max-connection-age")
	f.Int(&c.maxStreamsPerConn, "max-streams-per-conn", 16, "concurrent streams allowed per proxy connection")
	f.Duration(&c.ackStatusInterval, "ack-status-interval", 5*time.Second,
		"each proxy's ACKs are reported on mesh.status.proxy.> at most once per interval, after a random delay of up to half of it (the last one always); "+
			"connects, NACKs and disconnects are reported at once; 0 reports every ACK. Each report is a NATS message: 10,000 proxies at 5s make 2,000 a second")
}

// validate checks the flags; errors name the flag.
func (c *config) validate() error {
	if err := c.cp.Validate(); err != nil {
		return err
	}
	if err := c.ca.Validate(); err != nil {
		return err
	}
	if err := app.FlagPair("tls-cert-file", c.tlsCertFile, "tls-key-file", c.tlsKeyFile); err != nil {
		return err
	}
	if c.bootstraps() {
		if err := c.ca.ValidateBootstrap("--tls-cert-file and --ca-client-cert-file are both set"); err != nil {
			return err
		}
	}
	if err := app.FlagFiles("tls-cert-file", c.tlsCertFile, "tls-key-file", c.tlsKeyFile, "tls-client-ca-file", c.tlsClientCAFile); err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(c.listenAddr); err != nil {
		return app.FlagError("listen-addr", "%v", err)
	}
	if c.debugAddr != "" {
		if _, _, err := net.SplitHostPort(c.debugAddr); err != nil {
			return app.FlagError("debug-addr", "%v", err)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
		min  time.Duration
	}{
		{"cert-retry-max", c.certRetryMax, 500 * time.Millisecond}, {"nats-lost-threshold", c.natsLostThreshold, time.Second},
		{"keepalive-time", c.keepaliveTime, time.Second}, {"keepalive-timeout", c.keepaliveTimeout, time.Second},
		{"max-connection-age", c.maxConnectionAge, time.Minute}, {"max-connection-age-grace", c.maxConnectionAgeGrace, time.Second},
	} {
		if d.v < d.min {
			return app.FlagError(d.name, "must be at least %s, got %s", d.min, d.v)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"ack-status-interval", c.ackStatusInterval}, {"cert-linger", c.certLinger}} {
		if d.v < 0 {
			return app.FlagError(d.name, "must not be negative, got %s", d.v)
		}
	}
	if c.certTTL != 0 && c.certTTL < edge.MinCertLifetime {
		return app.FlagError("cert-ttl", "must be 0 (the cert-authority's --default-ttl) or at least %s, got %s", edge.MinCertLifetime, c.certTTL)
	}
	for _, n := range []struct {
		name string
		v    int
	}{{"stream-rate", c.streamRate}, {"stream-burst", c.streamBurst}, {"max-streams-per-conn", c.maxStreamsPerConn}} {
		if n.v < 1 {
			return app.FlagError(n.name, "must be at least 1, got %d", n.v)
		}
	}
	return nil
}

// bootstraps says whether the edge gets its own certificate from the
// cert-authority: unless both the serving and the CA client certificates
// come from files.
func (c *config) bootstraps() bool { return c.tlsCertFile == "" || !c.ca.HasClientCertFile() }

// run serves as the xds-edge until ctx ends: the renewal of the edge's own
// certificate (when it bootstraps) and the edge run as parts of one
// errgroup.
func (c *config) run(ctx context.Context, rt *app.Runtime) error {
	// The CA is verified against --ca-trust-file and the mesh-trust
	// bundle the edge applied last, both read at each connection, so the
	// edge reaches a CA that a root rotation switched to the new root.
	var applied atomic.Pointer[edge.Edge]
	c.ca.ExtraRoots = func() []byte {
		if e := applied.Load(); e != nil {
			return e.BundleRoots()
		}
		return nil
	}
	bundleChanged := make(chan struct{}, 1)
	own, err := c.ownCert(ctx, rt, bundleSource{
		roots: func() ([]byte, error) {
			if e := applied.Load(); e != nil {
				return e.BundleRoots(), nil
			}
			return nil, nil
		},
		signing: func() ([]byte, error) {
			if e := applied.Load(); e != nil {
				return e.SigningRoot(), nil
			}
			return nil, nil
		},
		changed: bundleChanged,
	})
	if err != nil {
		return err
	}
	var clientCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
	if own != nil {
		defer own.conn.Close()
		clientCert = own.GetClientCertificate
	}
	tc, err := c.serverTLS(own)
	if err != nil {
		return err
	}
	caConn, err := c.ca.Dial(clientCert)
	if err != nil {
		return err
	}
	defer caConn.Close()
	conn, err := rt.Bus(ctx, bus.RoleEdge)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.listenAddr)
	if err != nil {
		return app.FlagError("listen-addr", "cannot listen: %v", err)
	}
	var debugLn net.Listener
	if c.debugAddr != "" {
		if debugLn, err = net.Listen("tcp", c.debugAddr); err != nil {
			ln.Close()
			return app.FlagError("debug-addr", "cannot listen: %v", err)
		}
		rt.Log.WithField("debug_addr", debugLn.Addr().String()).Info("debug api listener up")
	}
	e, err := edge.New(edge.Deps{
		Log: rt.Log, Conn: conn, Listener: ln, Debug: debugLn, EdgeID: c.cp.PodName, TrustDomain: c.cp.TrustDomain,
		GRPC: xds.GRPCConfig{
			TLS: tc, KeepaliveTime: c.keepaliveTime, KeepaliveTimeout: c.keepaliveTimeout,
			MaxConnectionAge: c.maxConnectionAge, MaxConnectionAgeGrace: c.maxConnectionAgeGrace,
			MaxConcurrentStreams: uint32(c.maxStreamsPerConn),
		},
		Signer:  cav1.NewCertificateAuthorityServiceClient(caConn),
		CertTTL: c.certTTL, CertLinger: c.certLinger, MeshConfigNamespace: c.cp.Namespace, MeshConfigName: c.cp.MeshConfig, Observe: rt.ApplyObservability, CertRetryMax: c.certRetryMax, NATSLostThreshold: c.natsLostThreshold, AckStatusInterval: c.ackStatusInterval,
		Admission: rate.NewLimiter(rate.Limit(c.streamRate), c.streamBurst),
		Meter:     rt.Meter(), BundleChanged: bundleChanged,
	})
	if err != nil {
		ln.Close()
		if debugLn != nil {
			debugLn.Close()
		}
		return err
	}
	applied.Store(e)
	// These replace the runner's "nats" check, which fails at the first
	// disconnect: the edge keeps serving through a short NATS outage.
	rt.Health.AddReadyCheck("nats", e.CheckNATS)
	rt.Health.AddReadyCheck("mesh-compiled", e.CheckSync)
	rt.Health.Started()
	rt.Log.WithField("listen_addr", ln.Addr().String()).Info("ads listener up")
	g, gctx := errgroup.WithContext(ctx)
	if own != nil {
		g.Go(func() error { return own.Start(gctx) })
	}
	g.Go(func() error { return e.Start(gctx) })
	return g.Wait()
}
