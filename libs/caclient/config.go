package caclient

import (
	"crypto/tls"
	"time"

	"google.golang.org/grpc"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/libs/certfile"
)

// DefaultAddr is the cert-authority's Service in the default control-plane
// namespace.
const DefaultAddr = "osm-cert-authority.osm-system.svc:15443"

// Config holds the flags of a component that calls the cert-authority: where
// it is, how to verify it, the Bootstrap credential that obtains the
// component's own certificate, and the optional client certificate files
// that override that certificate for calls to the CA.
type Config struct {
	// Addr is --ca-addr.
	Addr string
	// ServerName is --ca-server-name; empty verifies the host of Addr.
	ServerName string
	// TrustFile is --ca-trust-file, the roots that verify the CA.
	TrustFile string
	// CertFile and KeyFile are --ca-client-cert-file and
	// --ca-client-key-file, the override of the component's own certificate.
	CertFile, KeyFile string
	// Credential is --ca-bootstrap-token-file and --ca-bootstrap-token-type.
	Credential Credential
	// OwnCertTTL is --control-plane-cert-ttl; zero takes the CA's default.
	OwnCertTTL time.Duration
	// ExtraRoots, when set, returns PEM roots that verify the CA besides
	// those of TrustFile: the trust bundle the component follows. Both are
	// read at each handshake with the CA, so a root rotation's switch step
	// (the CA serving under the new root, which step 1 added to the
	// bundle) needs no restart and no rewritten file.
	ExtraRoots func() []byte
}

// Flags registers the cert-authority client flags.
func (c *Config) Flags(f *app.Flags) {
	f.String(&c.Addr, "ca-addr", DefaultAddr, "gRPC address of the cert-authority")
	f.String(&c.ServerName, "ca-server-name", "", "name to verify the cert-authority's certificate against; empty uses the host of --ca-addr")
	f.String(&c.TrustFile, "ca-trust-file", "", "roots that verify the cert-authority's serving certificate (required)")
	f.String(&c.CertFile, "ca-client-cert-file", "", "override: client certificate presented to the cert-authority (reloaded when it changes) instead of this component's own certificate from Bootstrap")
	f.String(&c.KeyFile, "ca-client-key-file", "", "override: client key of --ca-client-cert-file")
	c.Credential.Flags(f, "this component's own certificate")
	f.Duration(&c.OwnCertTTL, "control-plane-cert-ttl", 0, "lifetime asked of the cert-authority for this component's own certificate, renewed at half of it; 0 takes the CA's default (its --control-plane-ttl)")
}

// Validate checks the flags that do not depend on whether the component
// bootstraps; errors name the flag.
func (c *Config) Validate() error {
	if c.Addr == "" {
		return app.FlagError("ca-addr", "is required")
	}
	if c.TrustFile == "" {
		return app.FlagError("ca-trust-file", "is required")
	}
	if err := app.FlagPair("ca-client-cert-file", c.CertFile, "ca-client-key-file", c.KeyFile); err != nil {
		return err
	}
	if err := app.FlagFiles("ca-trust-file", c.TrustFile, "ca-client-cert-file", c.CertFile, "ca-client-key-file", c.KeyFile); err != nil {
		return err
	}
	if c.OwnCertTTL < 0 || (c.OwnCertTTL > 0 && c.OwnCertTTL < time.Minute) {
		return app.FlagError("control-plane-cert-ttl", "must be 0 (the CA's default) or at least 1m, got %s", c.OwnCertTTL)
	}
	return nil
}

// ValidateBootstrap checks the Bootstrap credential, for a component that
// will call Bootstrap; requiredUnless says, in the error, when it is not
// needed.
func (c *Config) ValidateBootstrap(requiredUnless string) error {
	if err := c.Credential.Validate(requiredUnless); err != nil {
		return err
	}
	return c.Credential.CheckFile()
}

// HasClientCertFile reports whether --ca-client-cert-file overrides the
// component's own certificate for calls to the CA.
func (c *Config) HasClientCertFile() bool { return c.CertFile != "" }

// creds verify the CA against --ca-trust-file and ExtraRoots, both read
// at each handshake, and present nothing; the file must hold roots now.
func (c *Config) creds() (*trustCreds, error) {
	if _, err := PoolFromFile(c.TrustFile); err != nil {
		return nil, app.FlagError("ca-trust-file", "%v", err)
	}
	return &trustCreds{file: c.TrustFile, serverName: c.ServerName, extra: c.ExtraRoots}, nil
}

func (c *Config) dial(tc *trustCreds) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient(c.Addr, grpc.WithTransportCredentials(tc))
	if err != nil {
		return nil, app.FlagError("ca-addr", "%v", err)
	}
	return conn, nil
}

// DialBootstrap connects to the CA presenting no client certificate, as
// Bootstrap needs.
func (c *Config) DialBootstrap() (*grpc.ClientConn, error) {
	tc, err := c.creds()
	if err != nil {
		return nil, err
	}
	return c.dial(tc)
}

// Dial connects to the CA presenting --ca-client-cert-file when it is set,
// else the certificate own returns (the component's own, from Bootstrap).
// own may be nil only with --ca-client-cert-file.
func (c *Config) Dial(own func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) (*grpc.ClientConn, error) {
	tc, err := c.creds()
	if err != nil {
		return nil, err
	}
	switch {
	case c.CertFile != "":
		pair, err := certfile.Load(c.CertFile, c.KeyFile, certfile.Options{})
		if err != nil {
			return nil, app.FlagError("ca-client-cert-file", "%v", err)
		}
		tc.clientCert = pair.GetClientCertificate
	case own != nil:
		tc.clientCert = own
	default:
		return nil, app.FlagError("ca-client-cert-file", "is required: this component has no certificate of its own from Bootstrap to present")
	}
	return c.dial(tc)
}
