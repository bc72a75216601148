package service

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/certfile"
	"github.com/openservicemesh/osm/libs/cpcert"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
)

// ServingConfig is the configuration of the admission server's certificate
// and of the caBundle written into the webhook configuration. By default the
// certificate comes from the cert-authority; the files are an override.
type ServingConfig struct {
	TLSCertFile        string
	TLSKeyFile         string
	TLSCAFile          string
	WebhookServicePort int
}

func (c *ServingConfig) flags(f *app.Flags) {
	f.String(&c.TLSCertFile, "tls-cert-file", "", "override: serve this certificate file (reloaded when it changes) instead of one from the cert-authority; needs --tls-key-file, and --tls-ca-file when the webhook configuration is managed")
	f.String(&c.TLSKeyFile, "tls-key-file", "", "override: serving key of --tls-cert-file")
	f.String(&c.TLSCAFile, "tls-ca-file", "", "override, with --tls-cert-file only: CA that signed it, written as the caBundle of the webhook configuration")
	f.Int(&c.WebhookServicePort, "webhook-service-port", 443, "port of --webhook-service-name the apiserver calls")
}

// ServesFromFiles reports whether the serving certificate comes from
// --tls-cert-file (the override) rather than the cert-authority.
func (c *ServingConfig) ServesFromFiles() bool { return c.TLSCertFile != "" || c.TLSKeyFile != "" }

// ServingDNSNames are the DNS names of the CA-issued serving certificate.
func (c *Config) ServingDNSNames() []string {
	return caclient.ServiceDNSNames(c.WebhookServiceName, c.ControlPlane.Namespace, c.ControlPlane.ClusterDomain)
}

// validateServing checks the serving-certificate flags: either both files
// (the override), or what Bootstrap needs.
func (c *Config) validateServing() error {
	if c.WebhookServicePort < 1 || c.WebhookServicePort > 65535 {
		return app.FlagError("webhook-service-port", "must be 1-65535, got %d", c.WebhookServicePort)
	}
	if c.ServesFromFiles() {
		if err := app.FlagPair("tls-cert-file", c.TLSCertFile, "tls-key-file", c.TLSKeyFile); err != nil {
			return err
		}
		if c.WebhookConfigName != "" && c.TLSCAFile == "" {
			return app.FlagError("tls-ca-file", "is required with --tls-cert-file to manage the webhook configuration %s (or set --webhook-config-name to empty)", c.WebhookConfigName)
		}
		return app.FlagFiles("tls-cert-file", c.TLSCertFile, "tls-key-file", c.TLSKeyFile, "tls-ca-file", c.TLSCAFile)
	}
	if c.TLSCAFile != "" {
		return app.FlagError("tls-ca-file", "only applies with --tls-cert-file; the CA-issued certificate's caBundle is the CA's trust bundle")
	}
	if err := c.CA.ValidateBootstrap("--tls-cert-file is set"); err != nil {
		return err
	}
	if c.WebhookServiceName == "" {
		return app.FlagError("webhook-service-name", "is required: the CA-issued serving certificate names the Service")
	}
	if c.WebhookURL != "" {
		u, err := url.Parse(c.WebhookURL)
		if err != nil {
			return app.FlagError("webhook-url", "%v", err)
		}
		if !slices.Contains(c.ServingDNSNames(), u.Hostname()) {
			return app.FlagError("webhook-url", "host %q is not in the CA-issued serving certificate (%s); call the Service, or serve --tls-cert-file",
				u.Hostname(), strings.Join(c.ServingDNSNames(), ", "))
		}
	}
	return nil
}

// serving is the admission server's certificate source, the caBundle that
// verifies it, and the parts that keep both current.
type serving struct {
	tls           *tls.Config
	caBundle      func() ([]byte, error)
	bundleChanged <-chan struct{} // nil when the caBundle is a file
	// parts renew the certificate and follow the trust bundle; none when
	// the certificate comes from files (they are read at each handshake).
	parts []part
	// checks are the readiness checks of the certificate and the bundle.
	checks []check
}

// servingTLS sets up the serving certificate and its readiness checks. By
// default the certificate comes from the cert-authority's
// Bootstrap (with the webhook Service's DNS names), obtained here, before
// anything can sign, and renewed at half its lifetime by a part; the
// caBundle is the CA's trust bundle, which another part follows with
// WatchTrustBundle. --tls-cert-file overrides both with files.
//
// Bootstrap goes over ca.boot, which presents no client certificate; the
// bundle watch over ca.sign, which presents the certificate ca.own holds
// (or --ca-client-cert-file): servingTLS sets ca.own before it returns.
// bundle is the trust bundle watch, which run starts in both cases (the
// bootstrap Secrets' ca.crt follows it).
func servingTLS(ctx context.Context, log *logrus.Entry, c Config, ca *caConns, bundle *cpcert.Bundle) (*serving, error) {
	if c.ServesFromFiles() {
		certs, err := certfile.Load(c.TLSCertFile, c.TLSKeyFile, certfile.Options{})
		if err != nil {
			return nil, app.FlagError("tls-cert-file", "%v", err)
		}
		log.WithField("tls_cert_file", c.TLSCertFile).Info("serving certificate from files (--tls-cert-file overrides the cert-authority)")
		return &serving{tls: &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.GetCertificate},
			caBundle: func() ([]byte, error) { return os.ReadFile(c.TLSCAFile) },
			checks:   []check{{"serving-certificate", certFileCheck(certs)}}}, nil
	}
	cert, err := cpcert.New(cpcert.Options{Role: cav1.ComponentRole_COMPONENT_ROLE_INJECTOR_WEBHOOK,
		Client: cav1.NewCertificateAuthorityServiceClient(ca.boot), TokenType: c.CA.Credential.TokenType(), Token: c.CA.Credential.Token,
		DNSNames: c.ServingDNSNames(), TTL: c.CA.OwnCertTTL, Log: log,
		// Renew at once when a rotation's new root begins to sign, or
		// drops the root that issued it.
		Roots: bundle.RootsPEM, SigningRoot: bundle.SigningRootPEM, BundleChanged: bundle.Subscribe(),
	})
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	if err := cert.RenewUntilDone(ctx); err != nil {
		return nil, err
	}
	ca.own.Store(cert)
	return &serving{tls: cert.TLSConfig(), caBundle: bundle.RootsPEM, bundleChanged: bundle.Subscribe(),
		parts:  []part{{name: "serving certificate renewal", p: cert}},
		checks: []check{{"serving-certificate", cert.Check}, {"trust-bundle", bundle.Check}}}, nil
}

// certReloader is the serving certificate read from files.
type certReloader interface {
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
}

var _ certReloader = (*certfile.Pair)(nil)

// certFileCheck is a readiness check of a certificate read from files: a
// key pair is loaded and its certificate has not expired.
func certFileCheck(r certReloader) app.Check {
	return func(context.Context) error {
		pair, err := r.GetCertificate(nil)
		if err != nil {
			return err
		}
		leaf := pair.Leaf
		if leaf == nil {
			if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
				return fmt.Errorf("serving certificate: %w", err)
			}
		}
		if time.Now().After(leaf.NotAfter) {
			return fmt.Errorf("serving certificate expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		return nil
	}
}
