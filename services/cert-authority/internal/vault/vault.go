// Package vault is the cert-authority's HashiCorp Vault PKI provider. It
// signs with pki/sign/<role>, sending only the CSR, so private keys never
// travel to Vault or back. It logs in with Vault's Kubernetes auth method
// (falling back to a static token), renews its token before expiry and
// logs in again when renewal fails, and retries with jittered backoff while
// Vault is unreachable.
//
// # Vault setup
//
// The PKI role must let the CA decide the identity: use_csr_sans=false and
// use_csr_common_name=false (the CA sends the validated SPIFFE ID as
// uri_sans), require_cn=false, allowed_uri_sans=spiffe://<trust-domain>/*,
// and, for the CA's own serving certificate, allowed_domains covering
// --server-dns-names. The policy of the CA's Vault token needs update on
// <mount>/sign/<role>, read and list on <mount>/issuers and
// <mount>/issuer/*.
//
// # Root rotation with Vault
//
// The trust bundle is every root of the mount's issuers, and the signing
// root is the default issuer's. Rotation uses Vault's own issuers and is
// picked up by the CA's periodic bundle refresh: 1. generate a new root
// issuer (pki/root/generate/internal) — the bundle carries both roots;
// 2. make it the default (pki/config/issuers) — leaves come from the new
// root; 3. delete the old issuer once its leaves have expired.
package vault

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/sirupsen/logrus"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/cert-authority/internal/pki"
)

// Options configures New.
type Options struct {
	// Address of Vault, e.g. https://vault.vault.svc:8200.
	Address string
	// CACertFile verifies Vault's TLS certificate; empty uses the system
	// roots.
	CACertFile string
	// PKIMount is the PKI secrets engine's mount path; default "pki".
	PKIMount string
	// Role is the PKI role signed with (pki/sign/<Role>).
	Role string
	// Auth says how to log in.
	Auth AuthOptions
	// RequestTimeout bounds one HTTP request to Vault; default 5s.
	RequestTimeout time.Duration
	// Backoff paces retries while Vault is unreachable.
	Backoff Backoff
	// Log receives token lifecycle events. Tokens are never logged.
	Log *logrus.Entry
}

// Provider signs through Vault PKI.
type Provider struct {
	o      Options
	client *vaultapi.Client
	auth   *authenticator
	log    *logrus.Entry

	mu      sync.Mutex
	lastErr error
}

// New returns a provider. It does not contact Vault; call Login (or Start)
// first.
func New(o Options) (*Provider, error) {
	if o.Address == "" || o.Role == "" {
		return nil, errors.New("vault: Address and Role are required")
	}
	if o.PKIMount == "" {
		o.PKIMount = "pki"
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 5 * time.Second
	}
	if o.Log == nil {
		o.Log = logrus.NewEntry(logrus.New())
	}
	cfg := vaultapi.DefaultConfig()
	if cfg.Error != nil {
		return nil, fmt.Errorf("vault config: %w", cfg.Error)
	}
	cfg.Address = o.Address
	cfg.MaxRetries = 0 // retries are ours, with jitter and a budget
	cfg.Timeout = o.RequestTimeout
	if tr, ok := cfg.HttpClient.Transport.(*http.Transport); ok {
		tr.DialContext = (&net.Dialer{Timeout: o.RequestTimeout, KeepAlive: 30 * time.Second}).DialContext
		tr.ResponseHeaderTimeout = o.RequestTimeout
	}
	if o.CACertFile != "" {
		if err := cfg.ConfigureTLS(&vaultapi.TLSConfig{CACert: o.CACertFile}); err != nil {
			return nil, fmt.Errorf("vault TLS: %w", err)
		}
	}
	c, err := vaultapi.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	// NewClient reads VAULT_TOKEN and VAULT_NAMESPACE from the environment;
	// the provider's credentials come from its options only.
	c.ClearToken()
	c.ClearNamespace()
	p := &Provider{o: o, client: c, log: o.Log}
	p.auth = newAuthenticator(c, o.Auth, o.Backoff, o.Log)
	return p, nil
}

// Login obtains the first token, retrying while Vault is unreachable.
func (p *Provider) Login(ctx context.Context) error { return p.auth.login(ctx) }

// Start keeps the token valid until ctx ends: it renews the token at two
// thirds of its lease and logs in again when renewal fails.
func (p *Provider) Start(ctx context.Context) error { return p.auth.run(ctx) }

// Stats reports how many logins and successful renewals happened.
func (p *Provider) Stats() (logins, renewals int) { return p.auth.stats() }

// Check is a readiness check: the provider holds a token and its last call
// to Vault did not fail for lack of Vault.
func (p *Provider) Check(context.Context) error {
	if !p.auth.hasToken() {
		return errors.New("not logged in to vault")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastErr
}

func (p *Provider) noteErr(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pki.ReasonOf(err) == pki.ReasonUnavailable {
		p.lastErr = err
	} else {
		p.lastErr = nil
	}
}

// call runs one Vault operation with retries, logging in again once on 403
// (an expired or revoked token), and classifies the final error.
func (p *Provider) call(ctx context.Context, what string, op func(ctx context.Context) (*vaultapi.Secret, error)) (*vaultapi.Secret, error) {
	var out *vaultapi.Secret
	do := func(ctx context.Context) error {
		s, err := op(ctx)
		out = s
		return err
	}
	seen := p.auth.loginCount()
	attempts, err := p.o.Backoff.retry(ctx, do)
	var re *vaultapi.ResponseError
	if errors.As(err, &re) && re.StatusCode == http.StatusForbidden && p.auth.canLogin() {
		p.log.WithContext(ctx).WithField("operation", what).Warn("vault denied the token; logging in again")
		if lerr := p.auth.reloginAfter(ctx, seen); lerr == nil {
			n, rerr := p.o.Backoff.retry(ctx, do)
			attempts, err = attempts+n, rerr
		}
	}
	err = classify(err, what, p.o.Address, attempts)
	p.noteErr(err)
	return out, err
}

// classify turns a Vault error into a pki.Error: Unavailable when Vault did
// not answer usefully, Provider when it refused.
func classify(err error, what, addr string, attempts int) error {
	if err == nil {
		return nil
	}
	var re *vaultapi.ResponseError
	if errors.As(err, &re) && !retryable(err) {
		return pki.Errorf(pki.ReasonProvider, "vault refused %s (HTTP %d): %s", what, re.StatusCode, strings.Join(re.Errors, "; "))
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	return pki.Errorf(pki.ReasonUnavailable, "vault at %s is unavailable: %s failed after %d attempts: %s", addr, what, attempts, cause(err))
}

// cause says in a few words why Vault could not be used.
func cause(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "no answer before the request timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	}
	var re *vaultapi.ResponseError
	if errors.As(err, &re) {
		return fmt.Sprintf("HTTP %d: %s", re.StatusCode, strings.Join(re.Errors, "; "))
	}
	return err.Error()
}

// Sign sends the CSR to pki/sign/<role> with the identity as the only URI
// SAN and the TTL the policy resolved.
func (p *Provider) Sign(ctx context.Context, r pki.SignRequest) (*pki.Leaf, error) {
	data := map[string]any{
		"csr":                  string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: r.CSR.Raw})),
		"ttl":                  fmt.Sprintf("%ds", int64(r.TTL/time.Second)),
		"format":               "pem",
		"exclude_cn_from_sans": true,
	}
	if r.URI != nil {
		data["uri_sans"] = r.URI.String()
	}
	if len(r.DNSNames) > 0 {
		data["common_name"] = r.DNSNames[0]
		data["alt_names"] = strings.Join(r.DNSNames, ",")
	}
	path := p.o.PKIMount + "/sign/" + p.o.Role
	s, err := p.call(ctx, "sign", func(ctx context.Context) (*vaultapi.Secret, error) {
		return p.client.Logical().WriteWithContext(ctx, path, data)
	})
	if err != nil {
		return nil, err
	}
	leaf, err := leafFromSecret(s, r)
	if err != nil {
		return nil, err
	}
	// Vault caps the lifetime at its role's max_ttl (and the issuer's
	// expiry) without failing the request; say so, or the operator sees
	// only certificates renewing sooner than the CA's --max-ttl promises.
	if granted := time.Until(leaf.NotAfter); r.TTL > 0 && granted < r.TTL-shortenedSlack {
		p.log.WithFields(logrus.Fields{
			"asked_ttl": r.TTL.String(), "granted_ttl": granted.Round(time.Second).String(), "role": p.o.Role,
			"vault_warnings": strings.Join(s.Warnings, "; "),
			"reason":         "vault's role max_ttl or its issuer's expiry is shorter than the asked ttl",
		}).Info("sign ttl clamped")
	}
	return leaf, nil
}

// shortenedSlack is how much shorter than asked a Vault certificate may
// live before Sign says Vault shortened it: the time its round trip took.
const shortenedSlack = 10 * time.Second

func leafFromSecret(s *vaultapi.Secret, r pki.SignRequest) (*pki.Leaf, error) {
	if s == nil || s.Data == nil {
		return nil, pki.Errorf(pki.ReasonProvider, "vault returned no certificate")
	}
	certPEM, _ := s.Data["certificate"].(string)
	leaf, err := pki.ParseCertificatePEM([]byte(certPEM))
	if err != nil {
		return nil, pki.Wrap(pki.ReasonProvider, err, "vault returned an unreadable certificate")
	}
	// The private key never left the caller: the leaf must carry its key and
	// exactly the identity asked for.
	if !publicKeyEqual(leaf.PublicKey, r.CSR.PublicKey) {
		return nil, pki.Errorf(pki.ReasonProvider, "vault signed a different key than the CSR's")
	}
	if r.URI != nil && (len(leaf.URIs) != 1 || leaf.URIs[0].String() != r.URI.String()) {
		return nil, pki.Errorf(pki.ReasonProvider, "vault issued URI SANs %v, want only %s (set use_csr_sans=false on the role)", leaf.URIs, r.URI)
	}
	if !sameNames(leaf.DNSNames, r.DNSNames) {
		return nil, pki.Errorf(pki.ReasonProvider, "vault issued DNS SANs %v, want exactly %v", leaf.DNSNames, r.DNSNames)
	}
	chain := []byte(strings.TrimSpace(certPEM) + "\n")
	var root *x509.Certificate
	caChain, _ := s.Data["ca_chain"].([]any)
	if len(caChain) == 0 {
		if ic, ok := s.Data["issuing_ca"].(string); ok {
			caChain = []any{ic}
		}
	}
	for _, c := range caChain {
		cp, _ := c.(string)
		cert, err := pki.ParseCertificatePEM([]byte(cp))
		if err != nil {
			return nil, pki.Wrap(pki.ReasonProvider, err, "vault returned an unreadable CA chain")
		}
		if isRoot(cert) {
			root = cert
			continue
		}
		chain = append(chain, []byte(strings.TrimSpace(cp)+"\n")...)
	}
	var issuerID string
	if root != nil {
		issuerID = pki.RootID(root)
	}
	return pki.NewLeaf(leaf, chain, issuerID), nil
}

// TrustBundle lists the mount's issuers and returns their roots, the
// default issuer's root marked as signing.
func (p *Provider) TrustBundle(ctx context.Context) (*meshv1.TrustBundle, error) {
	list, err := p.call(ctx, "list issuers", func(ctx context.Context) (*vaultapi.Secret, error) {
		return p.client.Logical().ListWithContext(ctx, p.o.PKIMount+"/issuers")
	})
	if err != nil {
		return nil, err
	}
	var refs []string
	if list != nil {
		if keys, ok := list.Data["keys"].([]any); ok {
			for _, k := range keys {
				if s, ok := k.(string); ok {
					refs = append(refs, s)
				}
			}
		}
	}
	if len(refs) == 0 {
		return nil, pki.Errorf(pki.ReasonProvider, "the vault mount %s has no issuer", p.o.PKIMount)
	}
	var roots []*x509.Certificate
	for _, ref := range refs {
		r, err := p.issuerRoot(ctx, ref)
		if err != nil {
			return nil, err
		}
		roots = append(roots, r)
	}
	def, err := p.issuerRoot(ctx, "default")
	if err != nil {
		return nil, err
	}
	return pki.BuildBundle(roots, pki.RootID(def)), nil
}

// issuerRoot returns the root at the end of an issuer's chain.
func (p *Provider) issuerRoot(ctx context.Context, ref string) (*x509.Certificate, error) {
	s, err := p.call(ctx, "read issuer", func(ctx context.Context) (*vaultapi.Secret, error) {
		return p.client.Logical().ReadWithContext(ctx, p.o.PKIMount+"/issuer/"+ref)
	})
	if err != nil {
		return nil, err
	}
	if s == nil {
		return nil, pki.Errorf(pki.ReasonProvider, "vault issuer %s not found", ref)
	}
	pems := []string{}
	if chain, ok := s.Data["ca_chain"].([]any); ok {
		for _, c := range chain {
			if cs, ok := c.(string); ok {
				pems = append(pems, cs)
			}
		}
	}
	if c, ok := s.Data["certificate"].(string); ok {
		pems = append(pems, c)
	}
	for _, cp := range pems {
		c, err := pki.ParseCertificatePEM([]byte(cp))
		if err != nil {
			return nil, pki.Wrap(pki.ReasonProvider, err, "vault issuer %s", ref)
		}
		if isRoot(c) {
			return c, nil
		}
	}
	return nil, pki.Errorf(pki.ReasonProvider, "vault issuer %s has no root in its chain", ref)
}

func isRoot(c *x509.Certificate) bool {
	return c.IsCA && string(c.RawIssuer) == string(c.RawSubject) && c.CheckSignatureFrom(c) == nil
}

func publicKeyEqual(a, b any) bool {
	ka, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ka.Equal(b)
}

// sameNames reports whether a and b hold the same names, in any order.
func sameNames(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	set := make(map[string]int, len(a))
	for _, n := range a {
		set[n]++
	}
	for _, n := range b {
		if set[n] == 0 {
			return false
		}
		set[n]--
	}
	return true
}
