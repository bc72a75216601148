package edge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/cpcert"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	"github.com/openservicemesh/osm/services/xds-edge/internal/xds"
)

// Config is the xds-edge's configuration (its flags).
type Config struct {
	ListenAddr            string
	TLSCertFile           string
	TLSKeyFile            string
	TLSClientCAFile       string
	TrustDomain           string
	EdgeID                string
	CAAddr                string
	CAServerName          string
	CACertFile            string
	CAKeyFile             string
	CATrustFile           string
	CertTTL               time.Duration
	CertLinger            time.Duration
	NATSLostThreshold     time.Duration
	StreamRate            int
	StreamBurst           int
	KeepaliveTime         time.Duration
	KeepaliveTimeout      time.Duration
	MaxConnectionAge      time.Duration
	MaxConnectionAgeGrace time.Duration
	MaxStreamsPerConn     int
	AckStatusInterval     time.Duration
	Bootstrap             cpcert.Credential
	ControlPlaneCertTTL   time.Duration
}

// Flags registers the configuration's flags.
func (c *Config) Flags(f *app.Flags) {
	f.String(&c.ListenAddr, "listen-addr", ":15128", "address of the ADS (xDS and SDS) listener, served with mutual TLS")
	f.String(&c.TLSCertFile, "tls-cert-file", "", "override: serve the ADS listener with this certificate file (reloaded when it changes) instead of the edge's own certificate from the cert-authority's Bootstrap")
	f.String(&c.TLSKeyFile, "tls-key-file", "", "override: serving key of --tls-cert-file")
	f.String(&c.TLSClientCAFile, "tls-client-ca-file", "", "extra roots that verify proxies' client certificates, besides every root of the mesh-trust bundle; a proxy's identity is the URI SAN of its certificate")
	f.String(&c.TrustDomain, "trust-domain", "cluster.local", "SPIFFE trust domain; proxies of any other domain are refused")
	f.String(&c.EdgeID, "edge-id", "", "name of this replica in proxy status reports (the pod name); empty uses the host name")
	f.String(&c.CAAddr, "ca-addr", "osm-cert-authority.osm-system.svc:15443", "gRPC address of the cert-authority that signs service certificates")
	f.String(&c.CAServerName, "ca-server-name", "", "name to verify the cert-authority's certificate against; empty uses the host of --ca-addr")
	f.String(&c.CACertFile, "ca-client-cert-file", "", "override: client certificate for the cert-authority (URI SAN spiffe://<trust-domain>/osm/xds-edge) instead of the edge's own certificate from Bootstrap")
	f.String(&c.CAKeyFile, "ca-client-key-file", "", "override: client key of --ca-client-cert-file")
	c.Bootstrap.Flags(f, "the edge's own certificate (ADS serving and CA client, renewed at half its lifetime) unless both overrides are set")
	f.Duration(&c.ControlPlaneCertTTL, "control-plane-cert-ttl", 0, "lifetime asked of the CA for the edge's own certificate (renewed at half); 0 takes the CA's default")
	f.String(&c.CATrustFile, "ca-trust-file", "", "roots that verify the cert-authority's serving certificate")
	f.Duration(&c.CertTTL, "cert-ttl", 24*time.Hour, "lifetime asked for service certificates; each is renewed at half of its lifetime")
	f.Duration(&c.CertLinger, "cert-linger", 5*time.Minute, "how long an identity's certificate is kept after its last proxy left, for reconnects")
	f.Duration(&c.NATSLostThreshold, "nats-lost-threshold", 30*time.Second, "after NATS is lost this long the edge turns not-ready (connected proxies keep their last good state)")
	f.Int(&c.StreamRate, "stream-rate", 200, "new xDS streams admitted per second; more are refused with UNAVAILABLE and retried by the proxy")
	f.Int(&c.StreamBurst, "stream-burst", 400, "burst of new xDS streams admitted above --stream-rate")
	f.Duration(&c.KeepaliveTime, "keepalive-time", 30*time.Second, "how often the edge pings an idle proxy connection")
	f.Duration(&c.KeepaliveTimeout, "keepalive-timeout", 10*time.Second, "how long the edge waits for a keepalive answer before closing the connection")
	f.Duration(&c.MaxConnectionAge, "max-connection-age", 30*time.Minute, "connections older than this are closed gracefully, rebalancing proxies over replicas")
	f.Duration(&c.MaxConnectionAgeGrace, "max-connection-age-grace", time.Minute, "time given to open streams after --max-connection-age")
	f.Int(&c.MaxStreamsPerConn, "max-streams-per-conn", 16, "concurrent streams allowed per proxy connection")
	f.Duration(&c.AckStatusInterval, "ack-status-interval", 5*time.Second,
		"each proxy's ACKs are reported on mesh.status.proxy.> at most once per interval, after a random delay of up to half of it (the last one always); "+
			"connects, NACKs and disconnects are reported at once; 0 reports every ACK. Each report is a NATS message: 10,000 proxies at 5s make 2,000 a second")
}

// Validate checks the configuration; errors name the flag.
func (c *Config) Validate() error {
	for _, f := range []struct{ name, v string }{
		{"ca-trust-file", c.CATrustFile}, {"trust-domain", c.TrustDomain}, {"ca-addr", c.CAAddr},
	} {
		if f.v == "" {
			return app.FlagError(f.name, "is required")
		}
	}
	for _, pair := range [][2]struct{ name, v string }{
		{{"tls-cert-file", c.TLSCertFile}, {"tls-key-file", c.TLSKeyFile}},
		{{"ca-client-cert-file", c.CACertFile}, {"ca-client-key-file", c.CAKeyFile}},
	} {
		if (pair[0].v == "") != (pair[1].v == "") {
			missing, with := pair[0], pair[1]
			if missing.v != "" {
				missing, with = with, missing
			}
			return app.FlagError(missing.name, "is required with --%s", with.name)
		}
	}
	if c.bootstraps() {
		if err := c.Bootstrap.Validate("--tls-cert-file and --ca-client-cert-file are both set"); err != nil {
			return err
		}
		if err := c.Bootstrap.CheckFile(); err != nil {
			return err
		}
		if c.ControlPlaneCertTTL < 0 || (c.ControlPlaneCertTTL > 0 && c.ControlPlaneCertTTL < time.Minute) {
			return app.FlagError("control-plane-cert-ttl", "must be 0 (the CA's default) or at least 1m, got %s", c.ControlPlaneCertTTL)
		}
	}
	for _, f := range []struct{ name, path string }{
		{"tls-cert-file", c.TLSCertFile}, {"tls-key-file", c.TLSKeyFile}, {"tls-client-ca-file", c.TLSClientCAFile},
		{"ca-client-cert-file", c.CACertFile}, {"ca-client-key-file", c.CAKeyFile}, {"ca-trust-file", c.CATrustFile},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return app.FlagError(f.name, "%v", err)
		}
	}
	if _, _, err := net.SplitHostPort(c.ListenAddr); err != nil {
		return app.FlagError("listen-addr", "%v", err)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
		min  time.Duration
	}{
		{"cert-ttl", c.CertTTL, time.Minute}, {"nats-lost-threshold", c.NATSLostThreshold, time.Second},
		{"keepalive-time", c.KeepaliveTime, time.Second}, {"keepalive-timeout", c.KeepaliveTimeout, time.Second},
		{"max-connection-age", c.MaxConnectionAge, time.Minute}, {"max-connection-age-grace", c.MaxConnectionAgeGrace, time.Second},
	} {
		if d.v < d.min {
			return app.FlagError(d.name, "must be at least %s, got %s", d.min, d.v)
		}
	}
	if c.AckStatusInterval < 0 {
		return app.FlagError("ack-status-interval", "must not be negative, got %s", c.AckStatusInterval)
	}
	if c.CertLinger < 0 {
		return app.FlagError("cert-linger", "must not be negative, got %s", c.CertLinger)
	}
	if c.StreamRate <= 0 {
		return app.FlagError("stream-rate", "must be positive, got %d", c.StreamRate)
	}
	if c.StreamBurst < 1 {
		return app.FlagError("stream-burst", "must be at least 1, got %d", c.StreamBurst)
	}
	if c.MaxStreamsPerConn < 1 {
		return app.FlagError("max-streams-per-conn", "must be at least 1, got %d", c.MaxStreamsPerConn)
	}
	if c.EdgeID == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return app.FlagError("edge-id", "is required when the host name is unknown (%v)", err)
		}
		c.EdgeID = h
	}
	return nil
}

// bootstraps says whether the edge gets its own certificate from the
// cert-authority: unless both the serving and the CA client certificates
// come from files.
func (c *Config) bootstraps() bool { return c.TLSCertFile == "" || c.CACertFile == "" }

// caTLS is the TLS configuration for calls to the cert-authority, without
// a client certificate.
func (c *Config) caTLS() (*tls.Config, error) {
	tc, err := caclient.TLSFromFile(c.CATrustFile, c.CAServerName)
	if err != nil {
		return nil, app.FlagError("ca-trust-file", "%v", err)
	}
	return tc, nil
}

// ownCert obtains the edge's own certificate (role xds-edge) through
// Bootstrap, over a connection of its own that presents none, and keeps
// renewing it at half of its lifetime until ctx ends.
func (c *Config) ownCert(ctx context.Context, rt *app.Runtime) (*cpcert.Cert, error) {
	tc, err := c.caTLS()
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(c.CAAddr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		return nil, app.FlagError("ca-addr", "%v", err)
	}
	cert, err := cpcert.New(cpcert.Options{
		Client: cav1.NewCertificateAuthorityServiceClient(conn), Role: cav1.ComponentRole_COMPONENT_ROLE_XDS_EDGE,
		TokenType: c.Bootstrap.TokenType(), Token: c.Bootstrap.Token, TTL: c.ControlPlaneCertTTL, Log: rt.Log,
	})
	if err != nil {
		conn.Close()
		return nil, err
	}
	if err := cert.RenewUntilDone(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	go func() {
		defer conn.Close()
		_ = cert.Start(ctx)
	}()
	rt.Health.AddReadyCheck("control-plane-certificate", cert.Check)
	return cert, nil
}

// serverTLS is the ADS listener's mTLS configuration, serving own (the
// edge's own certificate) unless --tls-cert-file overrides it.
func (c *Config) serverTLS(own *cpcert.Cert) (*tls.Config, error) {
	get := own.GetCertificate
	if c.TLSCertFile != "" {
		cf, err := loadCertFile(c.TLSCertFile, c.TLSKeyFile)
		if err != nil {
			return nil, app.FlagError("tls-cert-file", "load the serving certificate: %v", err)
		}
		get = cf.get
	}
	var err error
	var pool *x509.CertPool
	if c.TLSClientCAFile != "" {
		if pool, err = caclient.PoolFromFile(c.TLSClientCAFile); err != nil {
			return nil, app.FlagError("tls-client-ca-file", "%v", err)
		}
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: get, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}, nil
}

// caClient dials the cert-authority presenting own (the edge's own
// certificate) unless --ca-client-cert-file overrides it.
func (c *Config) caClient(own *cpcert.Cert) (*grpc.ClientConn, error) {
	tc, err := c.caTLS()
	if err != nil {
		return nil, err
	}
	if c.CACertFile != "" {
		pair, err := tls.LoadX509KeyPair(c.CACertFile, c.CAKeyFile)
		if err != nil {
			return nil, app.FlagError("ca-client-cert-file", "load the client certificate: %v", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	} else {
		tc.GetClientCertificate = own.GetClientCertificate
	}
	cc, err := grpc.NewClient(c.CAAddr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		return nil, app.FlagError("ca-addr", "%v", err)
	}
	return cc, nil
}

// Run serves as the xds-edge until ctx ends.
func Run(ctx context.Context, rt *app.Runtime, c Config) error {
	var own *cpcert.Cert
	if c.bootstraps() {
		var err error
		if own, err = c.ownCert(ctx, rt); err != nil {
			return err
		}
	}
	tc, err := c.serverTLS(own)
	if err != nil {
		return err
	}
	caConn, err := c.caClient(own)
	if err != nil {
		return err
	}
	defer caConn.Close()
	conn, err := rt.Bus(ctx, bus.RoleEdge)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.ListenAddr)
	if err != nil {
		return app.FlagError("listen-addr", "cannot listen: %v", err)
	}
	e, err := New(Deps{
		Log: rt.Log, Conn: conn, Listener: ln, EdgeID: c.EdgeID, TrustDomain: c.TrustDomain,
		GRPC: xds.GRPCConfig{
			TLS: tc, KeepaliveTime: c.KeepaliveTime, KeepaliveTimeout: c.KeepaliveTimeout,
			MaxConnectionAge: c.MaxConnectionAge, MaxConnectionAgeGrace: c.MaxConnectionAgeGrace,
			MaxConcurrentStreams: uint32(c.MaxStreamsPerConn),
		},
		Signer: cav1.NewCertificateAuthorityServiceClient(caConn), Context: ctx,
		CertTTL: c.CertTTL, CertLinger: c.CertLinger, NATSLostThreshold: c.NATSLostThreshold, AckStatusInterval: c.AckStatusInterval,
		Admission: rate.NewLimiter(rate.Limit(c.StreamRate), c.StreamBurst),
		Meter:     rt.Telemetry.MeterProvider.Meter("github.com/openservicemesh/osm/services/xds-edge"),
	})
	if err != nil {
		ln.Close()
		return err
	}
	// These replace the runner's "nats" check, which fails at the first
	// disconnect: the edge keeps serving through a short NATS outage.
	rt.Health.AddReadyCheck("nats", e.CheckNATS)
	rt.Health.AddReadyCheck("mesh-compiled", e.CheckSync)
	rt.Log.WithField("listen_addr", ln.Addr().String()).Info("ads listener up")
	return e.Start(ctx)
}
