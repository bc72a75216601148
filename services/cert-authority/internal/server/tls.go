package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/openservicemesh/osm/libs/backoff"
	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/services/cert-authority/internal/pki"
	"github.com/openservicemesh/osm/services/cert-authority/internal/trust"
)

// ServingCert is the CA's own TLS certificate, spiffe://<td>/osm/cert-authority
// plus the configured DNS names, issued by the CA's signer and renewed at
// half of its lifetime.
type ServingCert struct {
	signer   Signer
	uriTD    string
	dnsNames []string
	ttl      time.Duration
	retry    time.Duration
	log      *logrus.Entry

	mu       sync.RWMutex
	cert     *tls.Certificate
	notAfter time.Time
	renewAt  time.Time
}

// ServingCertOptions configures NewServingCert.
type ServingCertOptions struct {
	// Signer issues the certificate.
	Signer Signer
	// TrustDomain of the certificate's URI SAN.
	TrustDomain string
	// DNSNames the CA is reached at, e.g. osm-cert-authority.osm-system.svc.
	DNSNames []string
	// TTL of the certificate; default 24h.
	TTL time.Duration
	// Retry caps the wait between failed renewals, which grow from a tenth
	// of it (libs/backoff); default 10s.
	Retry time.Duration
	// Log receives renewals and failures.
	Log *logrus.Entry
}

// NewServingCert returns the serving certificate manager; call Renew (or
// Start) before serving.
func NewServingCert(o ServingCertOptions) *ServingCert {
	if o.TTL == 0 {
		o.TTL = 24 * time.Hour
	}
	if o.Retry == 0 {
		o.Retry = 10 * time.Second
	}
	if o.Log == nil {
		o.Log = logrus.NewEntry(logrus.New())
	}
	return &ServingCert{signer: o.Signer, uriTD: o.TrustDomain, dnsNames: o.DNSNames, ttl: o.TTL, retry: o.Retry, log: o.Log}
}

// Renew issues a fresh certificate with a new key.
func (s *ServingCert) Renew(ctx context.Context) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	uri := identity.ControlPlaneURI(s.uriTD, identity.RoleCertAuthority)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return err
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return err
	}
	leaf, err := s.signer.Sign(ctx, pki.SignRequest{CSR: csr, URI: uri, DNSNames: s.dnsNames, TTL: s.ttl})
	if err != nil {
		return fmt.Errorf("issue the CA's serving certificate: %w", err)
	}
	keyPEM, err := pkcs8PEM(key)
	if err != nil {
		return err
	}
	c, err := tls.X509KeyPair(leaf.ChainPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("serving certificate: %w", err)
	}
	// Half of the remaining lifetime, counted from now: NotBefore is
	// backdated for clock skew and would bring the renewal forward.
	now := time.Now()
	s.mu.Lock()
	s.cert = &c
	s.notAfter = leaf.NotAfter
	s.renewAt = now.Add(leaf.NotAfter.Sub(now) / 2)
	s.mu.Unlock()
	s.log.WithContext(ctx).WithFields(logrus.Fields{"not_after": leaf.NotAfter.UTC(), "issuer_id": leaf.IssuerID}).Info("issued serving certificate")
	return nil
}

// NotAfter is the expiry of the current serving certificate (zero if none).
func (s *ServingCert) NotAfter() time.Time {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.notAfter
}

// Check is a readiness check: a valid serving certificate is held.
func (s *ServingCert) Check(context.Context) error {
	if na := s.NotAfter(); na.IsZero() || time.Now().After(na) {
		return errors.New("no valid serving certificate")
	}
	return nil
}

// Start renews the certificate at half its lifetime until ctx ends.
func (s *ServingCert) Start(ctx context.Context) error {
	failures := 0
	for {
		s.mu.RLock()
		wait := time.Until(s.renewAt)
		s.mu.RUnlock()
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(max(wait, 0)):
		}
		if err := s.Renew(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			failures++
			wait := backoff.Wait(s.retry/10, s.retry, failures)
			s.log.WithContext(ctx).WithError(err).WithField("retry_in", wait.String()).Warn("serving certificate renewal failed; retrying")
			s.mu.Lock()
			s.renewAt = time.Now().Add(wait)
			s.mu.Unlock()
			continue
		}
		failures = 0
	}
}

func (s *ServingCert) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.cert == nil {
		return nil, errors.New("no serving certificate yet")
	}
	return s.cert, nil
}

// poolCache keeps the client CA pool of the latest bundle version.
type poolCache struct {
	hub     *trust.Hub
	mu      sync.Mutex
	version string
	pool    *x509.CertPool
}

func (p *poolCache) get() (*x509.CertPool, error) {
	b, _ := p.hub.Current()
	if b == nil {
		return nil, errors.New("no trust bundle yet")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pool != nil && p.version == b.Version {
		return p.pool, nil
	}
	pool, err := pki.BundlePool(b)
	if err != nil {
		return nil, err
	}
	p.pool, p.version = pool, b.Version
	return pool, nil
}

// TLSConfig is the server side of the CA's mTLS: TLS 1.3, the serving
// certificate, and client certificates verified against the current trust
// bundle when presented (Bootstrap callers have none; the Authorizer
// requires one on every other RPC).
func TLSConfig(cert *ServingCert, hub *trust.Hub) *tls.Config {
	pc := &poolCache{hub: hub}
	base := &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: cert.getCertificate,
		ClientAuth:     tls.VerifyClientCertIfGiven,
		NextProtos:     []string{"h2"},
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			pool, err := pc.get()
			if err != nil {
				return nil, err
			}
			c := base.Clone()
			c.ClientCAs = pool
			return c, nil
		},
	}
}

// ConnectionAge bounds each client connection to maxAge (then a GOAWAY makes
// the client reconnect, presenting its current certificate) plus grace for
// the calls in flight; a trust bundle watch still open after the grace
// ends, and its client watches again on a new connection.
func ConnectionAge(maxAge, grace time.Duration) grpc.ServerOption {
	return grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: maxAge, MaxConnectionAgeGrace: grace})
}

// certBoundCreds end each connection before the client certificate that
// authenticated it expires, at 90% of its lifetime (halfway to its expiry
// if that has passed already), whatever the maximum connection age: the client
// reconnects and presents its current certificate (renewed in place at
// half-life by cpcert). TLS checks a client certificate once, at the
// handshake, and the calls of an older connection would be refused once it
// expired.
type certBoundCreds struct {
	credentials.TransportCredentials
}

func (c certBoundCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return conn, info, err
	}
	ti, ok := info.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return conn, info, nil // Bootstrap: no client certificate
	}
	return boundTo(conn, ti.State.PeerCertificates[0]), info, nil
}

func (c certBoundCreds) Clone() credentials.TransportCredentials {
	return certBoundCreds{c.TransportCredentials.Clone()}
}

// boundConn is a connection closed when its client certificate is about to
// expire.
type boundConn struct {
	net.Conn
	timer *time.Timer
}

func boundTo(conn net.Conn, leaf *x509.Certificate) *boundConn {
	end := leaf.NotAfter.Add(-leaf.NotAfter.Sub(leaf.NotBefore) / 10)
	if now := time.Now(); now.After(end) {
		// Past 90% already (a backdated or short certificate): halfway to
		// its expiry, so the client reconnects before it.
		end = now.Add(leaf.NotAfter.Sub(now) / 2)
	}
	b := &boundConn{Conn: conn}
	b.timer = time.AfterFunc(time.Until(end), func() { _ = conn.Close() })
	return b
}

func (b *boundConn) Close() error {
	b.timer.Stop()
	return b.Conn.Close()
}

// NewGRPCServer returns a gRPC server with the CA's mTLS credentials and
// role authorization; register the Server on it.
//
// RPCs run on a pool of worker goroutines (grpc.NumStreamWorkers: 32, or 4
// per CPU if more) rather than a new goroutine each: the ECDSA work of a
// Sign needs a deeper stack than a new goroutine starts with, and growing
// (copying) it on every call costs about 4% of a sign. The pool is larger
// than the CPU count because callers keep several Signs in flight on one
// connection; when every worker is busy gRPC still starts a goroutine, so a
// slow call never queues behind another. Idle workers cost only their
// stacks.
func NewGRPCServer(cfg *tls.Config, a *Authorizer, opts ...grpc.ServerOption) *grpc.Server {
	opts = append([]grpc.ServerOption{
		grpc.Creds(certBoundCreds{credentials.NewTLS(cfg)}),
		grpc.ChainUnaryInterceptor(a.Unary),
		grpc.ChainStreamInterceptor(a.Stream),
		grpc.NumStreamWorkers(uint32(max(32, 4*runtime.GOMAXPROCS(0)))),
	}, opts...)
	return grpc.NewServer(opts...)
}
