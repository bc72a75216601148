package vault

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"fmt"
	"log"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openservicemesh/osm/libs/logging"
	"github.com/openservicemesh/osm/services/cert-authority/internal/csrtest"
	"github.com/openservicemesh/osm/services/cert-authority/internal/pki"
	"github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/vaultdev"
)

const td = "cluster.local"

var (
	cluster *kube.Cluster
	vlt     *vaultdev.Server
)

// TestMain starts a real kube-apiserver (for Kubernetes auth) and a real
// Vault dev server, both on loopback, for the whole package.
func TestMain(m *testing.M) {
	os.Exit(kube.Main(m, &cluster, false, func(ctx context.Context, _ *kube.Cluster) (func(), error) {
		v, err := vaultdev.StartServer(ctx, vaultdev.Options{Build: vaultdev.BuildOptions{Output: os.Stderr}, Logf: log.Printf})
		if err != nil {
			return nil, fmt.Errorf("start vault: %w", err)
		}
		vlt = v
		if err := setupPKI(ctx, v); err != nil {
			v.Stop()
			return nil, fmt.Errorf("set up vault pki: %w", err)
		}
		return func() { v.Stop() }, nil
	}))
}

const policy = `
path "pki/sign/mesh" { capabilities = ["update"] }
path "pki/issuers" { capabilities = ["list"] }
path "pki/issuer/*" { capabilities = ["read"] }
`

// setupPKI mounts PKI with an EC root and a role restricted to the trust
// domain's URI SANs, as an operator would.
func setupPKI(ctx context.Context, v *vaultdev.Server) error {
	steps := []struct {
		method, path string
		body         map[string]any
	}{
		{"POST", "sys/mounts/pki", map[string]any{"type": "pki", "config": map[string]any{"max_lease_ttl": "87600h"}}},
		{"POST", "pki/root/generate/internal", map[string]any{"common_name": "osm vault root 1", "key_type": "ec", "key_bits": 256, "ttl": "87600h", "issuer_name": "root-1"}},
		{"POST", "pki/roles/mesh", map[string]any{
			"allowed_uri_sans": "spiffe://" + td + "/*", "allowed_domains": "ca.test", "allow_bare_domains": true,
			"require_cn": false, "use_csr_sans": false, "use_csr_common_name": false,
			"key_type": "ec", "key_bits": 256, "max_ttl": "48h", "server_flag": true, "client_flag": true}},
		{"PUT", "sys/policies/acl/osm-ca", map[string]any{"policy": policy}},
	}
	for _, s := range steps {
		if _, err := v.Do(ctx, s.method, s.path, vaultdev.RootToken, s.body); err != nil {
			return fmt.Errorf("%s %s: %w", s.method, s.path, err)
		}
	}
	return nil
}

// token creates a Vault token with the CA's policy.
func token(t *testing.T, ttl string, extra map[string]any) string {
	t.Helper()
	body := map[string]any{"policies": []string{"osm-ca"}, "ttl": ttl, "renewable": true, "no_default_policy": false}
	for k, v := range extra {
		body[k] = v
	}
	out := vlt.Root(t, http.MethodPost, "auth/token/create", body)
	return out["auth"].(map[string]any)["client_token"].(string)
}

func testLog() (*logrus.Entry, *logging.Buffer) {
	l := logrus.New()
	l.SetLevel(logrus.DebugLevel)
	b := &logging.Buffer{}
	l.SetOutput(b)
	return logrus.NewEntry(l), b
}

func newProvider(t *testing.T, auth AuthOptions, b Backoff, timeout time.Duration) *Provider {
	t.Helper()
	lg, _ := testLog()
	p, err := New(Options{Address: vlt.URL(), Role: "mesh", Auth: auth, Backoff: b, RequestTimeout: timeout, Log: lg})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Login(t.Context()); err != nil {
		t.Fatal(err)
	}
	return p
}

func signReq(t testing.TB, path string) (pki.SignRequest, *ecdsa.PrivateKey) {
	t.Helper()
	k := csrtest.Key(t)
	return pki.SignRequest{CSR: csrtest.Parsed(t, k), URI: &url.URL{Scheme: "spiffe", Host: td, Path: path}, TTL: time.Hour}, k
}

func TestSignThroughVault(t *testing.T) {
	p := newProvider(t, AuthOptions{Token: token(t, "1h", nil)}, Backoff{}, 0)
	req, key := signReq(t, "/ns/bookstore/sa/bookbuyer")
	leaf, err := p.Sign(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.TrustBundle(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Roots) != 1 || !b.Roots[0].Signing || b.Roots[0].Id != leaf.IssuerID {
		t.Fatalf("bundle %v, issuer %s", b.Roots, leaf.IssuerID)
	}
	pool, _ := pki.BundlePool(b)
	c, err := leaf.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("vault leaf does not verify against the bundle: %v", err)
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != req.URI.String() || len(c.DNSNames) != 0 {
		t.Errorf("leaf SANs: URIs %v DNS %v", c.URIs, c.DNSNames)
	}
	if !c.PublicKey.(*ecdsa.PublicKey).Equal(&key.PublicKey) {
		t.Error("vault certified another key")
	}
	if d := c.NotAfter.Sub(c.NotBefore); d > time.Hour+time.Minute {
		t.Errorf("leaf lifetime %s, want at most 1h", d)
	}
	if strings.Contains(string(leaf.ChainPEM), "PRIVATE KEY") {
		t.Error("the chain carries a private key")
	}
	// Vault's role refuses what it does not allow; the error names it.
	bad, _ := signReq(t, "/ns/a/sa/b")
	bad.URI = &url.URL{Scheme: "spiffe", Host: "evil.example", Path: "/ns/a/sa/b"}
	if _, err := p.Sign(t.Context(), bad); pki.ReasonOf(err) != pki.ReasonProvider || !strings.Contains(err.Error(), "HTTP 400") {
		t.Errorf("foreign URI through vault: %v", err)
	}
}

// TestVaultUnreachableMidRun pauses Vault (SIGSTOP): signs fail with a clear
// Unavailable error after the retry budget, the readiness check fails, and
// once Vault continues (SIGCONT) the same provider signs again.
func TestVaultUnreachableMidRun(t *testing.T) {
	p := newProvider(t, AuthOptions{Token: token(t, "1h", nil)}, Backoff{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond, Budget: 2 * time.Second}, 700*time.Millisecond)
	req, _ := signReq(t, "/ns/a/sa/b")
	if _, err := p.Sign(t.Context(), req); err != nil {
		t.Fatal(err)
	}
	if err := vlt.Pause(); err != nil {
		t.Fatal(err)
	}
	paused := true
	defer func() {
		if paused {
			_ = vlt.Resume()
		}
	}()
	start := time.Now()
	_, err := p.Sign(t.Context(), req)
	took := time.Since(start)
	if pki.ReasonOf(err) != pki.ReasonUnavailable || !strings.Contains(err.Error(), "unavailable") || !strings.Contains(err.Error(), vlt.URL()) {
		t.Fatalf("sign while vault is paused: %v", err)
	}
	if took > 6*time.Second {
		t.Errorf("the failure took %s; the retry budget is 2s", took)
	}
	if p.Check(t.Context()) == nil {
		t.Error("readiness passes while vault is gone")
	}
	t.Logf("paused vault: failed after %s: %v", took.Round(time.Millisecond), err)

	// Vault comes back while a request is retrying: the request succeeds.
	errc := make(chan error, 1)
	go func() {
		_, err := p.Sign(context.Background(), req)
		errc <- err
	}()
	time.Sleep(300 * time.Millisecond)
	if err := vlt.Resume(); err != nil {
		t.Fatal(err)
	}
	paused = false
	if err := <-errc; err != nil {
		t.Errorf("a sign in flight when vault returned: %v", err)
	}
	if _, err := p.Sign(t.Context(), req); err != nil {
		t.Fatalf("sign after vault returned: %v", err)
	}
	if err := p.Check(t.Context()); err != nil {
		t.Errorf("readiness after vault returned: %v", err)
	}
}

// TestTokenRenewedBeforeExpiry gives the provider a token that lives 4s
// and checks, 10s later, that it was renewed and still signs.
func TestTokenRenewedBeforeExpiry(t *testing.T) {
	tok := token(t, "4s", map[string]any{"explicit_max_ttl": "1h"})
	p := newProvider(t, AuthOptions{Token: tok}, Backoff{}, 0)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Start(ctx) }()
	defer func() { cancel(); <-done }()
	time.Sleep(10 * time.Second)
	req, _ := signReq(t, "/ns/a/sa/b")
	if _, err := p.Sign(t.Context(), req); err != nil {
		t.Fatalf("sign 10s into a 4s token: %v", err)
	}
	if _, renewals := p.Stats(); renewals < 2 {
		t.Errorf("%d renewals in 10s of a 4s token, want at least 2", renewals)
	}
	look := vlt.Root(t, http.MethodPost, "auth/token/lookup", map[string]any{"token": tok})
	exp, err := time.Parse(time.RFC3339Nano, fmt.Sprint(look["data"].(map[string]any)["expire_time"]))
	if err != nil || !exp.After(time.Now()) {
		t.Errorf("token expire_time after renewals: %v (%v)", look["data"].(map[string]any)["expire_time"], err)
	}
}

// TestKubernetesAuth logs in with Vault's Kubernetes auth method for real:
// Vault reviews the CA's ServiceAccount token against the harness
// apiserver. The login token is short (max 6s), so the provider has to log
// in again when renewal cannot extend it; and after every token of the
// mount is revoked, the next sign logs in again by itself.
func TestKubernetesAuth(t *testing.T) {
	ctx := t.Context()
	saToken := kubernetesAuth(t, "vault-auth", "osm-ca", map[string]any{"token_ttl": "3s", "token_max_ttl": "6s"})
	lg, logs := testLog()
	p, err := New(Options{Address: vlt.URL(), Role: "mesh", Log: lg,
		Auth: AuthOptions{KubernetesRole: "osm-ca", ServiceAccountToken: saToken}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Login(ctx); err != nil {
		t.Fatalf("kubernetes login: %v", err)
	}
	req, _ := signReq(t, "/ns/a/sa/b")
	if _, err := p.Sign(ctx, req); err != nil {
		t.Fatalf("sign after kubernetes login: %v", err)
	}

	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Start(runCtx) }()
	time.Sleep(10 * time.Second)
	if _, err := p.Sign(ctx, req); err != nil {
		t.Fatalf("sign 10s into 6s-max tokens: %v", err)
	}
	cancel()
	<-done
	logins, _ := p.Stats()
	if logins < 2 {
		t.Errorf("%d logins in 10s with a 6s max TTL, want a re-login", logins)
	}

	// Revoke every token the mount issued: the next sign is denied, logs in
	// again and succeeds.
	vlt.Root(t, http.MethodPut, "sys/leases/revoke-prefix/auth/kubernetes/login", nil)
	before, _ := p.Stats()
	if _, err := p.Sign(ctx, req); err != nil {
		t.Fatalf("sign after revocation: %v", err)
	}
	if after, _ := p.Stats(); after != before+1 {
		t.Errorf("logins %d -> %d after revocation, want one more", before, after)
	}
	for _, secret := range []string{"eyJ", "hvs."} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the provider logged a token (%s...)", secret)
		}
	}
}

// kubernetesAuth sets up Vault's Kubernetes auth method for real against
// the harness apiserver: a namespace named after prefix with the CA's
// ServiceAccount, a reviewer token bound to system:auth-delegator, the
// mount's config, and role (the CA's policy, audience "vault", plus
// roleOpts such as token_ttl). It returns what the provider reads as its
// ServiceAccount token: a fresh token of audience "vault" at each call.
func kubernetesAuth(t *testing.T, prefix, role string, roleOpts map[string]any) func() (string, error) {
	t.Helper()
	ctx := t.Context()
	ns := cluster.Namespace(t, prefix, nil)
	cs := cluster.Clientset()
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "osm-cert-authority"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The reviewer ServiceAccount may create TokenReviews.
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: ns + "-auth-delegator"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:auth-delegator"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "osm-cert-authority", Namespace: ns}},
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.RbacV1().ClusterRoleBindings().Delete(context.Background(), crb.Name, metav1.DeleteOptions{})
	})

	rc := cluster.RESTConfig()
	caPEM := rc.CAData
	if len(caPEM) == 0 && rc.CAFile != "" {
		var err error
		if caPEM, err = os.ReadFile(rc.CAFile); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := vlt.Do(ctx, http.MethodPost, "sys/auth/kubernetes", vaultdev.RootToken, map[string]any{"type": "kubernetes"}); err != nil && !strings.Contains(err.Error(), "path is already in use") {
		t.Fatal(err)
	}
	// Vault calls the TokenReview API with a token of the apiserver's own
	// audience, held by a ServiceAccount bound to system:auth-delegator.
	reviewer, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "osm-cert-authority",
		&authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vlt.Root(t, http.MethodPost, "auth/kubernetes/config", map[string]any{
		"kubernetes_host": rc.Host, "kubernetes_ca_cert": string(caPEM), "disable_local_ca_jwt": true,
		"token_reviewer_jwt": reviewer.Status.Token})
	body := map[string]any{
		"bound_service_account_names": []string{"osm-cert-authority"}, "bound_service_account_namespaces": []string{ns},
		"token_policies": []string{"osm-ca"}, "audience": "vault"}
	for k, v := range roleOpts {
		body[k] = v
	}
	vlt.Root(t, http.MethodPost, "auth/kubernetes/role/"+role, body)

	return func() (string, error) {
		tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), "osm-cert-authority",
			&authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{Audiences: []string{"vault"}}}, metav1.CreateOptions{})
		if err != nil {
			return "", err
		}
		return tr.Status.Token, nil
	}
}

// BenchmarkVaultSign measures sign latency through the provider against
// the real dev server (CSR to pki/sign and back, one at a time) and reports
// p50 and p99.
func BenchmarkVaultSign(b *testing.B) {
	tok := vlt.Root(b, http.MethodPost, "auth/token/create", map[string]any{"policies": []string{"osm-ca"}, "ttl": "1h"})["auth"].(map[string]any)["client_token"].(string)
	quiet := logrus.New()
	quiet.SetLevel(logrus.WarnLevel)
	p, err := New(Options{Address: vlt.URL(), Role: "mesh", Auth: AuthOptions{Token: tok}, Log: logrus.NewEntry(quiet)})
	if err != nil {
		b.Fatal(err)
	}
	if err := p.Login(b.Context()); err != nil {
		b.Fatal(err)
	}
	req, _ := signReq(b, "/ns/a/sa/b")
	lat := make([]time.Duration, 0, b.N)
	for b.Loop() {
		start := time.Now()
		if _, err := p.Sign(b.Context(), req); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// TestSignSaysWhenVaultShortensTheLifetime: Vault caps a certificate at its
// role's max_ttl (48h here) without failing the request; the provider logs
// "sign ttl clamped" with the asked and granted lifetimes and the role, as
// the CA does for its own --max-ttl, and says nothing when Vault grants
// what was asked.
func TestSignSaysWhenVaultShortensTheLifetime(t *testing.T) {
	lg, buf := testLog()
	p, err := New(Options{Address: vlt.URL(), Role: "mesh", Auth: AuthOptions{Token: token(t, "1h", nil)}, Log: lg})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Login(t.Context()); err != nil {
		t.Fatal(err)
	}
	req, _ := signReq(t, "/ns/bookstore/sa/bookbuyer")
	if _, err := p.Sign(t.Context(), req); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "sign ttl clamped") {
		t.Fatalf("a 1h certificate, granted as asked, was logged as clamped:\n%s", buf)
	}
	req.TTL = 72 * time.Hour
	leaf, err := p.Sign(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if d := leaf.NotAfter.Sub(time.Now()); d > 48*time.Hour || d < 47*time.Hour {
		t.Fatalf("vault granted %s for 72h under a 48h role max_ttl; the test's premise fails", d)
	}
	logs := buf.String()
	for _, want := range []string{"sign ttl clamped", "asked_ttl=72h0m0s", "granted_ttl=4", "role=mesh"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
}
