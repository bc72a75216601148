// Package service is the front door of the cert-authority service: its
// flags (each with an OSM_ environment twin), their validation, and the Run
// wiring that opens the provider (built-in or Vault), loads the trust
// bundle, connects to NATS, and runs the provider's token keeper, the
// bundle refresher and publisher, the serving certificate's renewal, the
// MeshConfig follower (spec.observability) and the gRPC server under one
// errgroup.
package service

import (
	"context"
	"net"
	"strings"
	"time"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/kube"
	"github.com/openservicemesh/osm/services/cert-authority/internal/server"
	"github.com/openservicemesh/osm/services/cert-authority/internal/vault"
)

// Name is the service's name: the binary, its --help, the User-Agent of its
// Kubernetes calls and the name of its meters.
const Name = "cert-authority"

// Options holds the test overrides of the service; its zero value is
// production.
type Options struct {
	// Listener is a test override: the gRPC listener to serve on instead of
	// one opened on --grpc-addr, so that a test knows its address before the
	// service starts.
	Listener net.Listener
}

// Spec is the cert-authority service for app.Main and app.Run.
func Spec(o Options) app.Spec {
	c := &config{}
	return app.Spec{
		Name:     Name,
		Summary:  summary,
		UsesNATS: true,
		Flags:    c.flags,
		Validate: c.validate,
		Run:      func(ctx context.Context, rt *app.Runtime) error { return c.run(ctx, rt, o) },
	}
}

// The providers.
const (
	providerBuiltin = "builtin"
	providerVault   = "vault"
)

// Default rate of the CA's Kubernetes calls (TokenReviews for Bootstrap, the
// root Secrets at start): client-go's own defaults.
const (
	defaultKubeQPS   = 5
	defaultKubeBurst = 10
)

// config is the cert-authority's own configuration (the runner adds
// logging, the admin listener and the --nats-* flags).
type config struct {
	cp   app.ControlPlane
	kube kube.Client

	provider           string
	grpcAddr           string
	dnsNames           string
	defaultTTL, maxTTL time.Duration
	// maxConnectionAge bounds a client connection, so that renewed client
	// certificates are presented within it.
	maxConnectionAge time.Duration
	// bootstrapRate, bootstrapBurst, signRate and signBurst pace each caller.
	bootstrapRate, bootstrapBurst, signRate, signBurst int
	controlPlaneTTL                                    time.Duration
	servingTTL                                         time.Duration
	bundleRefresh                                      time.Duration
	rootSecret                                         string
	trustedRootSecrets                                 string
	rootValidity                                       time.Duration
	tokenAudiences                                     string
	roleServiceAccounts                                string
	devBootstrapToken                                  string
	vaultAddr                                          string
	vaultCACert                                        string
	vaultPKIMount                                      string
	vaultRole                                          string
	vaultAuthMount                                     string
	vaultAuthRole                                      string
	vaultSATokenFile                                   string
	vaultToken                                         string
	vaultRequestTimeout                                time.Duration
	vaultRetryBudget                                   time.Duration
	kvReplicas                                         int
}

// summary is the first paragraph of --help.
const summary = `cert-authority is the mesh CA. It signs CSRs for workload identities
(spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>) over gRPC with
mutual TLS, serves and watches the trust bundle, and publishes the bundle to
the NATS KV bucket mesh-trust. It issues for no other trust domain.

Callers authenticate with a control-plane certificate whose URI SAN is
spiffe://<trust-domain>/osm/<role>. Only the xds-edge and injector-webhook
roles may call Sign. Components get that certificate from Bootstrap with
their Kubernetes ServiceAccount token (verified with a TokenReview; the
ServiceAccount allowed per role is set by --role-service-accounts), or in dev
mode with --dev-bootstrap-token.

Providers: "builtin" keeps an ECDSA P-256 root in a Secret of --namespace
(created if absent; replicas that start together agree on one root);
"vault" signs with Vault PKI pki/sign/<role>, sending only the CSR.

Root rotation (builtin) is three edits, each safe to repeat:
  1. add a new root:     --trusted-root-secrets=<new>  (bundle holds both)
  2. issue from it:      --root-secret=<new> --trusted-root-secrets=<old>
  3. remove the old one: --trusted-root-secrets=""  (after --max-ttl has passed)
With vault, add a new root issuer, make it the default, then delete the old
one; the CA picks the change up within --bundle-refresh.

Issuers and their expiry are listed at GET /debug/issuers on the admin listener (--admin-addr).

The MeshConfig --mesh-config in --namespace, read from the smi-watcher's copy in the NATS
KV bucket mesh-observed, sets the log level (spec.observability.osmLogLevel) and whether
/debug/pprof/ is served on the admin listener (enableDebugServer), live.`

const defaultRoleAccounts = "smi-watcher=osm-smi-watcher,policy-compiler=osm-policy-compiler,injector-webhook=osm-injector-webhook,xds-edge=osm-xds-edge,operator=osm-operator"

// flags registers the service's flags.
func (c *config) flags(f *app.Flags) {
	c.cp.Flags(f, app.CPNamespace|app.CPMeshConfig|app.CPTrustDomain|app.CPClusterDomain)
	c.kube.Flags(f, defaultKubeQPS, defaultKubeBurst)
	f.String(&c.provider, "provider", providerBuiltin, `certificate provider: "builtin" or "vault"`)
	f.String(&c.grpcAddr, "grpc-addr", ":9443", "address of the gRPC (mutual TLS) listener")
	f.String(&c.dnsNames, "server-dns-names", "", "comma-separated DNS names in the CA's serving certificate (default osm-cert-authority.<namespace>.svc)")
	f.Duration(&c.defaultTTL, "default-ttl", 24*time.Hour, "lifetime of a workload certificate when the request names none: the xds-edge names the MeshConfig's spec.certificate.serviceCertValidityDuration when it is set, else its --cert-ttl when set")
	f.Duration(&c.maxTTL, "max-ttl", 48*time.Hour, "longest workload certificate lifetime: a request over it is refused (ttl_too_long), unless it sets clamp_ttl, as the xds-edge does for the MeshConfig's serviceCertValidityDuration: "+
		"it is then signed for --max-ttl and the CA logs \"sign ttl clamped\" with the asked and granted lifetimes. Example: a MeshConfig asking 72h with --max-ttl=48h gets 48h certificates")
	f.Duration(&c.maxConnectionAge, "max-connection-age", 10*time.Minute,
		app.MaxConnectionAgeHelp)
	f.Int(&c.bootstrapRate, "bootstrap-rate", int(server.DefaultLimits.Bootstrap.Rate),
		"Bootstrap calls per second allowed from one client address, checked before any token review (0: no limit); more get ResourceExhausted")
	f.Int(&c.bootstrapBurst, "bootstrap-burst", server.DefaultLimits.Bootstrap.Burst, "Bootstrap calls one client address may make at once above --bootstrap-rate")
	f.Int(&c.signRate, "sign-rate", int(server.DefaultLimits.Sign.Rate),
		"Sign calls per second allowed from one client certificate (0: no limit); more get ResourceExhausted")
	f.Int(&c.signBurst, "sign-burst", server.DefaultLimits.Sign.Burst, "Sign calls one client certificate may make at once above --sign-rate")
	f.Duration(&c.controlPlaneTTL, "control-plane-ttl", 24*time.Hour, "default and maximum lifetime of a control-plane certificate from Bootstrap")
	f.Duration(&c.servingTTL, "serving-ttl", 24*time.Hour, "lifetime of the CA's own serving certificate (renewed at half)")
	f.Duration(&c.bundleRefresh, "bundle-refresh", time.Minute, "how often the provider's roots are re-read (vault rotation is picked up this often)")
	f.String(&c.rootSecret, "root-secret", "osm-ca-root", "builtin: Secret holding the signing root (created if absent)")
	f.String(&c.trustedRootSecrets, "trusted-root-secrets", "", "builtin: comma-separated Secrets of roots kept in the bundle without signing (created if absent); see root rotation")
	f.Duration(&c.rootValidity, "root-validity", 10*365*24*time.Hour, "builtin: lifetime of a generated root")
	f.String(&c.tokenAudiences, "token-audiences", "osm-cert-authority", "comma-separated audiences a Bootstrap ServiceAccount token must carry; empty accepts the apiserver's default audience")
	f.String(&c.roleServiceAccounts, "role-service-accounts", defaultRoleAccounts, "comma-separated role=serviceaccount or role=namespace/serviceaccount pairs: the only ServiceAccount allowed to bootstrap each role (namespace defaults to --namespace)")
	f.Secret(&c.devBootstrapToken, "dev-bootstrap-token", "dev mode only: a pre-shared token that Bootstrap accepts for any role")
	f.String(&c.vaultAddr, "vault-addr", "", "vault: address, e.g. https://vault.vault.svc:8200")
	f.String(&c.vaultCACert, "vault-ca-cert", "", "vault: CA certificate file verifying Vault's TLS certificate")
	f.String(&c.vaultPKIMount, "vault-pki-mount", "pki", "vault: mount path of the PKI secrets engine")
	f.String(&c.vaultRole, "vault-role", "", "vault: PKI role to sign with (pki/sign/<role>)")
	f.String(&c.vaultAuthMount, "vault-auth-mount", "kubernetes", "vault: mount path of the Kubernetes auth method")
	f.String(&c.vaultAuthRole, "vault-auth-role", "", "vault: Kubernetes auth role to log in as; empty uses --vault-token")
	f.String(&c.vaultSATokenFile, "vault-sa-token-file", vault.DefaultServiceAccountTokenFile, "vault: ServiceAccount token presented to the Kubernetes auth method")
	f.Secret(&c.vaultToken, "vault-token", "vault: static token, used when --vault-auth-role is empty (prefer the environment variable)")
	f.Duration(&c.vaultRequestTimeout, "vault-request-timeout", 5*time.Second, "vault: timeout of one HTTP request")
	f.Duration(&c.vaultRetryBudget, "vault-retry-budget", 10*time.Second, "vault: how long one operation retries, with jittered backoff, while Vault is unreachable")
	f.KVReplicas(&c.kvReplicas)
}

// validate checks the configuration; errors name the flag.
func (c *config) validate() error {
	if err := c.cp.Validate(); err != nil {
		return err
	}
	if err := identity.ValidateTrustDomain(c.cp.TrustDomain); err != nil {
		return app.FlagError("trust-domain", "%v", err)
	}
	if err := c.kube.Validate(); err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(c.grpcAddr); err != nil {
		return app.FlagError("grpc-addr", "%v", err)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"default-ttl", c.defaultTTL}, {"max-ttl", c.maxTTL}, {"control-plane-ttl", c.controlPlaneTTL},
		{"serving-ttl", c.servingTTL}, {"bundle-refresh", c.bundleRefresh}, {"root-validity", c.rootValidity},
		{"vault-request-timeout", c.vaultRequestTimeout}, {"vault-retry-budget", c.vaultRetryBudget},
	} {
		if d.v <= 0 {
			return app.FlagError(d.name, "must be positive, got %s", d.v)
		}
	}
	if err := app.CheckKVReplicas(c.kvReplicas); err != nil {
		return err
	}
	if c.maxConnectionAge < 10*time.Second {
		return app.FlagError("max-connection-age", "must be at least 10s, got %s", c.maxConnectionAge)
	}
	for _, l := range []struct {
		rate, burst string
		r, b        int
	}{{"bootstrap-rate", "bootstrap-burst", c.bootstrapRate, c.bootstrapBurst}, {"sign-rate", "sign-burst", c.signRate, c.signBurst}} {
		if l.r < 0 {
			return app.FlagError(l.rate, "must be 0 (no limit) or positive, got %d", l.r)
		}
		if l.r > 0 && l.b < 1 {
			return app.FlagError(l.burst, "must be at least 1 with --%s %d, got %d", l.rate, l.r, l.b)
		}
	}
	if c.defaultTTL > c.maxTTL {
		return app.FlagError("default-ttl", "%s exceeds --max-ttl %s", c.defaultTTL, c.maxTTL)
	}
	if _, err := c.roleAccounts(); err != nil {
		return err
	}
	switch c.provider {
	case providerBuiltin:
		return c.validateBuiltin()
	case providerVault:
		return c.validateVault()
	}
	return app.FlagError("provider", `must be "builtin" or "vault", got %q`, c.provider)
}

func (c *config) validateBuiltin() error {
	if c.rootSecret == "" {
		return app.FlagError("root-secret", "is required with --provider=builtin")
	}
	if c.rootValidity <= c.maxTTL {
		return app.FlagError("root-validity", "%s must exceed --max-ttl %s", c.rootValidity, c.maxTTL)
	}
	for _, s := range c.trustedRoots() {
		if s == c.rootSecret {
			return app.FlagError("trusted-root-secrets", "lists the signing root %q; name only the other roots", s)
		}
	}
	return nil
}

func (c *config) validateVault() error {
	switch {
	case c.vaultAddr == "":
		return app.FlagError("vault-addr", "is required with --provider=vault")
	case c.vaultRole == "":
		return app.FlagError("vault-role", "is required with --provider=vault")
	case c.vaultAuthRole == "" && c.vaultToken == "":
		return app.FlagError("vault-auth-role", "give --vault-auth-role (Kubernetes auth) or --vault-token")
	}
	return nil
}

// trustedRoots lists --trusted-root-secrets.
func (c *config) trustedRoots() []string { return app.SplitList(c.trustedRootSecrets) }

// serverDNSNames lists --server-dns-names, or the default Service name.
func (c *config) serverDNSNames() []string {
	if n := app.SplitList(c.dnsNames); len(n) > 0 {
		return n
	}
	return []string{"osm-cert-authority." + c.cp.Namespace + ".svc"}
}

// roleAccounts parses --role-service-accounts.
func (c *config) roleAccounts() (map[identity.Role]server.ServiceAccount, error) {
	out := map[identity.Role]server.ServiceAccount{}
	valid := map[identity.Role]bool{}
	for _, r := range identity.Roles() {
		valid[r] = true
	}
	for _, pair := range app.SplitList(c.roleServiceAccounts) {
		role, sa, ok := strings.Cut(pair, "=")
		if !ok || sa == "" {
			return nil, app.FlagError("role-service-accounts", "%q is not role=serviceaccount", pair)
		}
		if !valid[identity.Role(role)] {
			return nil, app.FlagError("role-service-accounts", "unknown role %q (roles: %v)", role, identity.Roles())
		}
		ns, name, hasNS := strings.Cut(sa, "/")
		if !hasNS {
			ns, name = c.cp.Namespace, sa
		}
		if ns == "" || name == "" {
			return nil, app.FlagError("role-service-accounts", "%q names an empty namespace or ServiceAccount", pair)
		}
		out[identity.Role(role)] = server.ServiceAccount{Namespace: ns, Name: name}
	}
	return out, nil
}
