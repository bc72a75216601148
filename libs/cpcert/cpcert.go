// Package cpcert keeps a control-plane component's own certificate, issued
// by the cert-authority's Bootstrap (authenticated with the component's
// ServiceAccount token, or the dev pre-shared token) for its role, with
// optional DNS names: the injector's HTTPS serving certificate (the
// kube-apiserver verifies <svc>.<ns>.svc), the xds-edge's ADS serving and
// CA client certificate. It is served through tls.Config.GetCertificate or
// GetClientCertificate and replaced in place at half of its lifetime, so
// connections never see a restart. Bundle follows the trust bundle with
// WatchTrustBundle, for a component that publishes it (the injector's
// caBundle, also through a root rotation, when the bundle holds both
// roots).
package cpcert

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	retry "github.com/openservicemesh/osm/libs/backoff"
	"github.com/openservicemesh/osm/libs/caclient"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
)

// Options configures New.
type Options struct {
	// Client reaches the cert-authority; Bootstrap needs no client
	// certificate.
	Client cav1.CertificateAuthorityServiceClient
	// Token returns the Bootstrap credential. It is called at every
	// renewal, so a projected ServiceAccount token the kubelet rotates is
	// read afresh.
	Token func() (string, error)
	// TokenType says how the CA verifies Token.
	TokenType cav1.TokenType
	// Role is the component's control-plane role (required).
	Role cav1.ComponentRole
	// DNSNames are the certificate's DNS SANs (the injector's webhook
	// Service names); the CA allows them for some roles only.
	DNSNames []string
	// TTL is the requested lifetime; zero takes the CA's default.
	TTL time.Duration
	// Roots and BundleChanged, when set, make Start renew at once when a new
	// trust bundle no longer verifies the current certificate (the last
	// step of a root rotation), instead of at half of its lifetime.
	Roots         func() ([]byte, error)
	BundleChanged <-chan struct{}
	// SigningRoot, when set with BundleChanged, is the PEM of the bundle's
	// root that signs now (nil for none marked): a new bundle whose signing
	// root did not issue the current certificate (the switch step of a
	// root rotation) renews it at once too, so that it comes from the new
	// root before the last step removes the old one.
	SigningRoot func() ([]byte, error)
	// MinRetry and MaxRetry bound the jittered exponential backoff after a
	// failed issuance; defaults 1s and 1m.
	MinRetry, MaxRetry time.Duration
	// Log receives renewals and failures.
	Log *logrus.Entry
}

// Cert is the serving certificate, renewed at half of its lifetime.
type Cert struct {
	o       Options
	current atomic.Pointer[issued]
}

type issued struct {
	pair     *tls.Certificate
	notAfter time.Time
	renewAt  time.Time
}

// New returns the certificate manager; call Renew before serving, then
// Start.
func New(o Options) (*Cert, error) {
	if o.Client == nil || o.Token == nil || o.Role == cav1.ComponentRole_COMPONENT_ROLE_UNSPECIFIED {
		return nil, errors.New("cpcert: Client, Token and Role are required")
	}
	if o.MinRetry <= 0 {
		o.MinRetry = time.Second
	}
	if o.MaxRetry < o.MinRetry {
		o.MaxRetry = max(time.Minute, o.MinRetry)
	}
	if o.Log == nil {
		o.Log = logrus.NewEntry(logrus.New())
	}
	return &Cert{o: o}, nil
}

// Renew obtains a fresh certificate, with a new key, and serves it from the
// next TLS handshake on.
func (c *Cert) Renew(ctx context.Context) error {
	token, err := c.o.Token()
	if err != nil {
		return fmt.Errorf("read the bootstrap token: %w", err)
	}
	got, err := caclient.Bootstrap(ctx, c.o.Client, caclient.BootstrapRequest{Token: token, TokenType: c.o.TokenType,
		Role: c.o.Role, TTL: c.o.TTL, DNSNames: c.o.DNSNames})
	if err != nil {
		return fmt.Errorf("control-plane certificate: %w", err)
	}
	// Half of the remaining lifetime, counted from now: NotBefore is
	// backdated for clock skew and would bring the renewal forward.
	now := time.Now()
	pair := got.Pair
	c.current.Store(&issued{pair: &pair, notAfter: got.NotAfter, renewAt: now.Add(got.NotAfter.Sub(now) / 2)})
	c.o.Log.WithContext(ctx).WithFields(logrus.Fields{"not_after": got.NotAfter.UTC(), "dns_names": c.o.DNSNames}).Info("control-plane certificate issued")
	return nil
}

// RenewUntilDone calls Renew until it succeeds, backing off between
// failures, or returns ctx's error.
func (c *Cert) RenewUntilDone(ctx context.Context) error {
	b := c.backoff()
	for {
		err := c.Renew(ctx)
		if err == nil {
			return nil
		}
		wait := b.next()
		c.o.Log.WithContext(ctx).WithError(err).WithField("retry_in", wait.String()).Warn("control-plane certificate not issued; retrying")
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// Start renews the certificate at half of its lifetime until ctx ends,
// retrying failures with jittered backoff; the current certificate is
// served meanwhile.
func (c *Cert) Start(ctx context.Context) error {
	b := c.backoff()
	next := time.Now()
	if cur := c.current.Load(); cur != nil {
		next = cur.renewAt
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Until(next)):
		case <-c.o.BundleChanged:
			why := c.staleness()
			if why == "" {
				continue
			}
			c.o.Log.WithContext(ctx).WithField("reason", why).Info("control-plane certificate renewed now, not at half of its lifetime")
		}
		if err := c.Renew(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			wait := b.next()
			c.o.Log.WithContext(ctx).WithError(err).WithField("retry_in", wait.String()).Warn("control-plane certificate renewal failed; retrying")
			next = time.Now().Add(wait)
			continue
		}
		b.reset()
		next = c.current.Load().renewAt
	}
}

// staleness says why the current certificate should be renewed after a
// bundle change: the bundle no longer verifies it, or its signing root did
// not issue it; "" when neither (or what is needed to tell is unknown).
func (c *Cert) staleness() string {
	cur := c.current.Load()
	if cur == nil {
		return "no certificate yet"
	}
	if !c.verifiedBy(cur, c.o.Roots) {
		return "the trust bundle no longer verifies it"
	}
	if !c.verifiedBy(cur, c.o.SigningRoot) {
		return "the trust bundle's signing root did not issue it"
	}
	return ""
}

// verifiedBy reports whether the certificate verifies against the roots
// that roots returns (true when they are unknown).
func (c *Cert) verifiedBy(cur *issued, roots func() ([]byte, error)) bool {
	if roots == nil || cur.pair.Leaf == nil {
		return true
	}
	pemRoots, err := roots()
	if err != nil || len(pemRoots) == 0 {
		return true
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemRoots) {
		return true
	}
	inter := x509.NewCertPool()
	for _, der := range cur.pair.Certificate[1:] {
		if ic, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(ic)
		}
	}
	_, err = cur.pair.Leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err == nil
}

// GetCertificate is the tls.Config callback: the current certificate.
func (c *Cert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	cur := c.current.Load()
	if cur == nil {
		return nil, errors.New("no control-plane certificate yet")
	}
	return cur.pair, nil
}

// GetClientCertificate is the tls.Config callback of a client: the
// current certificate (an empty one before the first, which a server that
// requires one refuses).
func (c *Cert) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if cur := c.current.Load(); cur != nil {
		return cur.pair, nil
	}
	return &tls.Certificate{}, nil
}

// NotAfter is the expiry of the current certificate (zero if none).
func (c *Cert) NotAfter() time.Time {
	if cur := c.current.Load(); cur != nil {
		return cur.notAfter
	}
	return time.Time{}
}

// Check is a readiness check: a valid certificate is held.
func (c *Cert) Check(context.Context) error {
	if na := c.NotAfter(); na.IsZero() || !time.Now().Before(na) {
		return errors.New("no valid control-plane certificate")
	}
	return nil
}

// TLSConfig is a server TLS configuration serving the certificate.
func (c *Cert) TLSConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: c.GetCertificate}
}

func (c *Cert) backoff() *backoff { return &backoff{min: c.o.MinRetry, max: c.o.MaxRetry} }

// backoff counts the failures since the last success and waits
// backoff.Wait from min to max.
type backoff struct {
	min, max time.Duration
	mu       sync.Mutex
	attempt  int
}

func (b *backoff) next() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.attempt++
	return retry.Wait(b.min, b.max, b.attempt)
}

func (b *backoff) reset() {
	b.mu.Lock()
	b.attempt = 0
	b.mu.Unlock()
}
