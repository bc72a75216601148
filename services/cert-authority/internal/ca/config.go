// Package ca wires the cert-authority together: its flags (each with an
// OSM_ environment twin), their validation, and the run loop that starts
// the provider, the trust bundle publisher and the gRPC server under the
// libs/app runner.
package ca

import (
	"net"
	"strings"
	"time"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/services/cert-authority/internal/pki"
	"github.com/openservicemesh/osm/services/cert-authority/internal/server"
)

// Providers.
const (
	ProviderBuiltin = "builtin"
	ProviderVault   = "vault"
)

// Config is the cert-authority's configuration.
type Config struct {
	TrustDomain   string
	Namespace     string
	ClusterDomain string
	Provider      string
	GRPCAddr      string
	DNSNames      string
	Kubeconfig    string

	DefaultTTL, MaxTTL     time.Duration
	ControlPlaneTTL        time.Duration
	ServingTTL             time.Duration
	BundleRefresh          time.Duration
	RootSecret             string
	TrustedRootSecrets     string
	RootValidity           time.Duration
	TokenAudiences         string
	RoleServiceAccounts    string
	DevBootstrapToken      string
	VaultAddr, VaultCACert string
	VaultPKIMount          string
	VaultRole              string
	VaultAuthMount         string
	VaultAuthRole          string
	VaultSATokenFile       string
	VaultToken             string
	VaultRequestTimeout    time.Duration
	VaultRetryBudget       time.Duration
	KVReplicas             int
}

// Summary is the first paragraph of --help.
const Summary = `cert-authority is the mesh CA. It signs CSRs for workload identities
(spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>) over gRPC with
mutual TLS, serves and watches the trust bundle, and publishes the bundle to
the NATS KV bucket mesh-trust.

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

Issuers and their expiry are listed at GET /debug/issuers on the admin listener (--admin-addr).`

// Register declares the flags.
func (c *Config) Register(f *app.Flags) {
	f.String(&c.TrustDomain, "trust-domain", "cluster.local", "SPIFFE trust domain of the mesh; the CA issues for no other")
	f.String(&c.Namespace, "namespace", "osm-system", "control-plane namespace: holds the root Secrets and the control-plane ServiceAccounts")
	f.String(&c.Provider, "provider", ProviderBuiltin, `certificate provider: "builtin" or "vault"`)
	f.String(&c.GRPCAddr, "grpc-addr", ":9443", "address of the gRPC (mutual TLS) listener")
	f.String(&c.DNSNames, "server-dns-names", "", "comma-separated DNS names in the CA's serving certificate (default osm-cert-authority.<namespace>.svc)")
	f.String(&c.ClusterDomain, "cluster-domain", "cluster.local", "DNS domain of the cluster: Bootstrap may certify <svc>.<namespace>.svc.<cluster-domain> for the injector-webhook")
	f.String(&c.Kubeconfig, "kubeconfig", "", "kubeconfig file; empty uses the in-cluster configuration")
	f.Duration(&c.DefaultTTL, "default-ttl", 24*time.Hour, "lifetime of a workload certificate when the request names none")
	f.Duration(&c.MaxTTL, "max-ttl", 48*time.Hour, "longest workload certificate lifetime a request may ask for")
	f.Duration(&c.ControlPlaneTTL, "control-plane-ttl", 24*time.Hour, "default and maximum lifetime of a control-plane certificate from Bootstrap")
	f.Duration(&c.ServingTTL, "serving-ttl", 24*time.Hour, "lifetime of the CA's own serving certificate (renewed at half)")
	f.Duration(&c.BundleRefresh, "bundle-refresh", time.Minute, "how often the provider's roots are re-read (vault rotation is picked up this often)")
	f.String(&c.RootSecret, "root-secret", "osm-ca-root", "builtin: Secret holding the signing root (created if absent)")
	f.String(&c.TrustedRootSecrets, "trusted-root-secrets", "", "builtin: comma-separated Secrets of roots kept in the bundle without signing (created if absent); see root rotation")
	f.Duration(&c.RootValidity, "root-validity", 10*365*24*time.Hour, "builtin: lifetime of a generated root")
	f.String(&c.TokenAudiences, "token-audiences", "osm-cert-authority", "comma-separated audiences a Bootstrap ServiceAccount token must carry; empty accepts the apiserver's default audience")
	f.String(&c.RoleServiceAccounts, "role-service-accounts", defaultRoleAccounts, "comma-separated role=serviceaccount or role=namespace/serviceaccount pairs: the only ServiceAccount allowed to bootstrap each role (namespace defaults to --namespace)")
	f.Secret(&c.DevBootstrapToken, "dev-bootstrap-token", "dev mode only: a pre-shared token that Bootstrap accepts for any role")
	f.String(&c.VaultAddr, "vault-addr", "", "vault: address, e.g. https://vault.vault.svc:8200")
	f.String(&c.VaultCACert, "vault-ca-cert", "", "vault: CA certificate file verifying Vault's TLS certificate")
	f.String(&c.VaultPKIMount, "vault-pki-mount", "pki", "vault: mount path of the PKI secrets engine")
	f.String(&c.VaultRole, "vault-role", "", "vault: PKI role to sign with (pki/sign/<role>)")
	f.String(&c.VaultAuthMount, "vault-auth-mount", "kubernetes", "vault: mount path of the Kubernetes auth method")
	f.String(&c.VaultAuthRole, "vault-auth-role", "", "vault: Kubernetes auth role to log in as; empty uses --vault-token")
	f.String(&c.VaultSATokenFile, "vault-sa-token-file", "/var/run/secrets/kubernetes.io/serviceaccount/token", "vault: ServiceAccount token presented to the Kubernetes auth method")
	f.Secret(&c.VaultToken, "vault-token", "vault: static token, used when --vault-auth-role is empty (prefer the environment variable)")
	f.Duration(&c.VaultRequestTimeout, "vault-request-timeout", 5*time.Second, "vault: timeout of one HTTP request")
	f.Int(&c.KVReplicas, "kv-replicas", 1, "replicas of the mesh-trust KV bucket when the CA creates it (3 in a NATS cluster)")
	f.Duration(&c.VaultRetryBudget, "vault-retry-budget", 10*time.Second, "vault: how long one operation retries, with jittered backoff, while Vault is unreachable")
}

const defaultRoleAccounts = "smi-watcher=osm-smi-watcher,policy-compiler=osm-policy-compiler,injector-webhook=osm-injector-webhook,xds-edge=osm-xds-edge,operator=osm-operator"

// Validate checks the configuration; errors name the flag.
func (c *Config) Validate() error {
	if err := identity.ValidateTrustDomain(c.TrustDomain); err != nil {
		return app.FlagError("trust-domain", "%v", err)
	}
	if c.Namespace == "" {
		return app.FlagError("namespace", "is required")
	}
	if c.ClusterDomain == "" || strings.HasPrefix(c.ClusterDomain, ".") || strings.HasSuffix(c.ClusterDomain, ".") {
		return app.FlagError("cluster-domain", "must be a DNS domain such as cluster.local, got %q", c.ClusterDomain)
	}
	if _, _, err := net.SplitHostPort(c.GRPCAddr); err != nil {
		return app.FlagError("grpc-addr", "%v", err)
	}
	for name, d := range map[string]time.Duration{"default-ttl": c.DefaultTTL, "max-ttl": c.MaxTTL, "control-plane-ttl": c.ControlPlaneTTL,
		"serving-ttl": c.ServingTTL, "bundle-refresh": c.BundleRefresh, "root-validity": c.RootValidity,
		"vault-request-timeout": c.VaultRequestTimeout, "vault-retry-budget": c.VaultRetryBudget} {
		if d <= 0 {
			return app.FlagError(name, "must be positive, got %s", d)
		}
	}
	if c.KVReplicas < 1 || c.KVReplicas > 5 {
		return app.FlagError("kv-replicas", "must be 1 to 5, got %d", c.KVReplicas)
	}
	if c.DefaultTTL > c.MaxTTL {
		return app.FlagError("default-ttl", "%s exceeds --max-ttl %s", c.DefaultTTL, c.MaxTTL)
	}
	if _, err := c.RoleAccounts(); err != nil {
		return err
	}
	switch c.Provider {
	case ProviderBuiltin:
		if c.RootSecret == "" {
			return app.FlagError("root-secret", "is required with --provider=builtin")
		}
		if c.RootValidity <= c.MaxTTL {
			return app.FlagError("root-validity", "%s must exceed --max-ttl %s", c.RootValidity, c.MaxTTL)
		}
		for _, s := range c.TrustedRoots() {
			if s == c.RootSecret {
				return app.FlagError("trusted-root-secrets", "lists the signing root %q; name only the other roots", s)
			}
		}
	case ProviderVault:
		if c.VaultAddr == "" {
			return app.FlagError("vault-addr", "is required with --provider=vault")
		}
		if c.VaultRole == "" {
			return app.FlagError("vault-role", "is required with --provider=vault")
		}
		if c.VaultAuthRole == "" && c.VaultToken == "" {
			return app.FlagError("vault-auth-role", "give --vault-auth-role (Kubernetes auth) or --vault-token")
		}
	default:
		return app.FlagError("provider", `must be "builtin" or "vault", got %q`, c.Provider)
	}
	return nil
}

// TrustedRoots lists --trusted-root-secrets.
func (c *Config) TrustedRoots() []string { return splitList(c.TrustedRootSecrets) }

// ServerDNSNames lists --server-dns-names, or the default Service name.
func (c *Config) ServerDNSNames() []string {
	if n := splitList(c.DNSNames); len(n) > 0 {
		return n
	}
	return []string{"osm-cert-authority." + c.Namespace + ".svc"}
}

// RoleAccounts parses --role-service-accounts.
func (c *Config) RoleAccounts() (map[identity.Role]server.ServiceAccount, error) {
	out := map[identity.Role]server.ServiceAccount{}
	valid := map[identity.Role]bool{}
	for _, r := range identity.Roles() {
		valid[r] = true
	}
	for _, pair := range splitList(c.RoleServiceAccounts) {
		role, sa, ok := strings.Cut(pair, "=")
		if !ok || sa == "" {
			return nil, app.FlagError("role-service-accounts", "%q is not role=serviceaccount", pair)
		}
		if !valid[identity.Role(role)] {
			return nil, app.FlagError("role-service-accounts", "unknown role %q (roles: %v)", role, identity.Roles())
		}
		ns, name, hasNS := strings.Cut(sa, "/")
		if !hasNS {
			ns, name = c.Namespace, sa
		}
		if ns == "" || name == "" {
			return nil, app.FlagError("role-service-accounts", "%q names an empty namespace or ServiceAccount", pair)
		}
		out[identity.Role(role)] = server.ServiceAccount{Namespace: ns, Name: name}
	}
	return out, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
