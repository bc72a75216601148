package service

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/bus/bustest"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/cert-authority/internal/pki"
	"github.com/openservicemesh/osm/services/cert-authority/internal/server"
)

func TestHelpExplains(t *testing.T) {
	apptest.HelpContains(t, Spec, "spiffe://<trust-domain>/osm/<role>", "Root rotation", "--trusted-root-secrets", "OSM_TRUSTED_ROOT_SECRETS",
		"--vault-auth-role", "--dev-bootstrap-token", "--max-ttl", "/debug/issuers", "--role-service-accounts",
		"--namespace", "--trust-domain", "--cluster-domain", "--kubeconfig", "--kube-api-qps", "--kube-api-burst", "OSM_KUBE_API_QPS",
		"--bootstrap-rate", "before any token review", "--sign-rate", "ResourceExhausted", "--max-connection-age")
}

func TestConfigErrorsNameTheFlag(t *testing.T) {
	apptest.RefusesConfig(t, Spec,
		apptest.BadConfig{Args: []string{"--trust-domain", "Bad Domain"}, Flag: "--trust-domain"},
		apptest.BadConfig{Args: []string{"--provider", "acme"}, Flag: "--provider"},
		apptest.BadConfig{Args: []string{"--provider", "vault"}, Flag: "--vault-addr"},
		apptest.BadConfig{Args: []string{"--provider", "vault", "--vault-addr", "http://127.0.0.1:1"}, Flag: "--vault-role"},
		apptest.BadConfig{Args: []string{"--provider", "vault", "--vault-addr", "http://127.0.0.1:1", "--vault-role", "r"}, Flag: "--vault-auth-role"},
		apptest.BadConfig{Args: []string{"--default-ttl", "72h", "--max-ttl", "48h"}, Flag: "--default-ttl"},
		apptest.BadConfig{Args: []string{"--max-ttl", "0s"}, Flag: "--max-ttl"},
		apptest.BadConfig{Args: []string{"--grpc-addr", "nonsense"}, Flag: "--grpc-addr"},
		apptest.BadConfig{Args: []string{"--role-service-accounts", "xds-edge"}, Flag: "--role-service-accounts"},
		apptest.BadConfig{Args: []string{"--role-service-accounts", "root=osm"}, Flag: "--role-service-accounts"},
		apptest.BadConfig{Args: []string{"--trusted-root-secrets", "osm-ca-root"}, Flag: "--trusted-root-secrets"},
		apptest.BadConfig{Args: []string{"--root-validity", "24h"}, Flag: "--root-validity"},
		apptest.BadConfig{Args: []string{"--kv-replicas", "0"}, Flag: "--kv-replicas"},
		apptest.BadConfig{Args: []string{"--trust-domain", ".cluster.local"}, Flag: "--trust-domain"},
		apptest.BadConfig{Args: []string{"--namespace", "Osm_System"}, Flag: "--namespace"},
		apptest.BadConfig{Args: []string{"--cluster-domain", "cluster.local."}, Flag: "--cluster-domain"},
		apptest.BadConfig{Args: []string{"--kube-api-qps", "0"}, Flag: "--kube-api-qps"},
		apptest.BadConfig{Args: []string{"--kube-api-qps", "20", "--kube-api-burst", "10"}, Flag: "--kube-api-burst"},
		apptest.BadConfig{Args: []string{"--kubeconfig", "/nonexistent/kubeconfig"}, Flag: "--kubeconfig"},
		apptest.BadConfig{Args: []string{"--bootstrap-rate", "-1"}, Flag: "--bootstrap-rate"},
		apptest.BadConfig{Args: []string{"--max-connection-age", "1s"}, Flag: "--max-connection-age"},
		apptest.BadConfig{Args: []string{"--bootstrap-burst", "0"}, Flag: "--bootstrap-burst"},
		apptest.BadConfig{Args: []string{"--sign-rate", "-5"}, Flag: "--sign-rate"},
		apptest.BadConfig{Args: []string{"--sign-rate", "10", "--sign-burst", "0"}, Flag: "--sign-burst"},
	)
	err := app.Run(t.Context(), Spec(Options{}), []string{"--provider", "vault", "--vault-addr", "x:1"}, func(k string) string {
		if k == "OSM_VAULT_TOKEN" {
			return "s.supersecret"
		}
		return ""
	}, io.Discard)
	if err == nil || strings.Contains(err.Error(), "supersecret") {
		t.Errorf("error %v leaks the vault token or is nil", err)
	}
}

// TestServiceEndToEnd runs the whole service against the real apiserver
// and an embedded NATS server: the root lands in a Secret, the bundle in KV
// mesh-trust, control-plane components bootstrap with real ServiceAccount
// tokens (TokenReview), the xds-edge signs a workload CSR, and metrics and
// the debug endpoint report it.
func TestServiceEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	ns := cluster.Namespace(t, "osm-ca", nil)
	cs := cluster.Clientset()
	for _, sa := range []string{"osm-xds-edge", "osm-policy-compiler", "intruder"} {
		if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// NATS with per-role users: the CA connects as role ca, whose
	// permissions allow writing mesh-trust and nothing else.
	nats, err := bustest.Start(bustest.Options{Passwords: map[bus.Role]string{bus.RoleCA: "ca-pw", bus.RoleAdmin: "admin-pw"}})
	if err != nil {
		t.Fatal(err)
	}
	defer nats.Shutdown()

	const dev = "dev-token-do-not-log"
	svc := runService(t, nats.URL(), map[string]string{"OSM_DEV_BOOTSTRAP_TOKEN": dev, "OSM_NATS_PASSWORD": "ca-pw"},
		"--namespace", ns, "--log-format", "text", "--bundle-refresh", "1h", "--nats-user", "ca")
	defer func() {
		if err := svc.stop(); err != nil {
			t.Errorf("service stopped with %v", err)
		}
		if l := svc.logs.String(); strings.Contains(l, dev) || strings.Contains(l, "ca-pw") || strings.Contains(l, "PRIVATE KEY") || strings.Contains(l, "eyJ") {
			t.Errorf("logs leak a credential:\n%s", l)
		}
	}()

	// The bundle appears in KV mesh-trust.
	conn, err := bus.Connect(ctx, bus.Options{URL: nats.URL(), Role: bus.RoleAdmin, User: string(bus.RoleAdmin), Password: "admin-pw"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var bundle *meshv1.TrustBundle
	apptest.Eventually(t, "the trust bundle in KV", 30*time.Second, func() (err error) { bundle, _, err = kvBundle(ctx, conn); return err })
	if len(bundle.Roots) != 1 || !bundle.Roots[0].Signing {
		t.Fatalf("bundle roots: %v", bundle.Roots)
	}
	// The root is the one in the Secret.
	sec, err := cs.CoreV1().Secrets(ns).Get(ctx, "osm-ca-root", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	root, _ := pki.ParseCertificatePEM(sec.Data["ca.crt"])
	if pki.RootID(root) != bundle.Roots[0].Id {
		t.Fatal("the published root is not the Secret's")
	}
	apptest.Eventually(t, "readiness", 30*time.Second, svc.ready)

	dial := func(cert *tls.Certificate) cav1.CertificateAuthorityServiceClient { return svc.dial(t, bundle, cert) }
	saToken := func(sa string, audiences ...string) string {
		tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{Audiences: audiences}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}
	anon := dial(nil)
	bootstrapAs := func(token string, tt cav1.TokenType, role cav1.ComponentRole) (*tls.Certificate, error) {
		k, csr := newCSR(t)
		return bootstrap(ctx, anon, token, tt, role, k, csr)
	}
	sa := cav1.TokenType_TOKEN_TYPE_SERVICE_ACCOUNT
	edgeRole := cav1.ComponentRole_COMPONENT_ROLE_XDS_EDGE

	// Refusals of the real TokenReview path.
	for _, c := range []struct {
		name  string
		token string
		role  cav1.ComponentRole
		code  codes.Code
	}{
		{"another ServiceAccount", saToken("intruder", "osm-cert-authority"), edgeRole, codes.PermissionDenied},
		{"the wrong role for the ServiceAccount", saToken("osm-xds-edge", "osm-cert-authority"), cav1.ComponentRole_COMPONENT_ROLE_POLICY_COMPILER, codes.PermissionDenied},
		{"a token without the CA's audience", saToken("osm-xds-edge"), edgeRole, codes.Unauthenticated},
		{"a forged token", "eyJhbGciOiJSUzI1NiJ9.e30.c2ln", edgeRole, codes.Unauthenticated},
	} {
		if _, err := bootstrapAs(c.token, sa, c.role); status.Code(err) != c.code {
			t.Errorf("bootstrap with %s: %v, want %s", c.name, err, c.code)
		}
	}

	edgeCert, err := bootstrapAs(saToken("osm-xds-edge", "osm-cert-authority"), sa, edgeRole)
	if err != nil {
		t.Fatalf("bootstrap the xds-edge with its ServiceAccount token: %v", err)
	}
	compilerCert, err := bootstrapAs(saToken("osm-policy-compiler", "osm-cert-authority"), sa, cav1.ComponentRole_COMPONENT_ROLE_POLICY_COMPILER)
	if err != nil {
		t.Fatalf("bootstrap the policy-compiler: %v", err)
	}
	if _, err := bootstrapAs(dev, cav1.TokenType_TOKEN_TYPE_PRE_SHARED, cav1.ComponentRole_COMPONENT_ROLE_OPERATOR); err != nil {
		t.Fatalf("dev-mode bootstrap: %v", err)
	}

	_, csrPEM := newCSR(t)
	block, _ := pem.Decode(csrPEM)
	der := block.Bytes // the DER form, as caclient.Sign sends it
	req := &cav1.SignRequest{Csr: der, Identity: "spiffe://cluster.local/ns/bookstore/sa/bookbuyer", Usage: cav1.CertificateUsage_CERTIFICATE_USAGE_SERVICE}
	resp, err := dial(edgeCert).Sign(ctx, req)
	if err != nil {
		t.Fatalf("xds-edge sign: %v", err)
	}
	leaf, _ := pki.ParseCertificatePEM(resp.CertificateChainPem)
	pool, _ := pki.BundlePool(bundle)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatalf("the workload leaf does not verify against the KV bundle: %v", err)
	}
	if _, err := dial(compilerCert).Sign(ctx, req); status.Code(err) != codes.PermissionDenied {
		t.Errorf("policy-compiler sign: %v, want PermissionDenied", err)
	}
	if _, err := dial(edgeCert).Sign(ctx, &cav1.SignRequest{Csr: der, Identity: "spiffe://elsewhere/ns/a/sa/b", Usage: cav1.CertificateUsage_CERTIFICATE_USAGE_SERVICE}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("foreign identity: %v", err)
	}

	// Metrics count signs and failures by reason.
	var metrics string
	apptest.Eventually(t, "sign metrics", 30*time.Second, func() error {
		var err error
		if metrics, err = svc.admin(ctx, "/metrics"); err != nil {
			return err
		}
		for _, want := range []string{`osm_ca_signs_total{`, `result="ok"`, `osm_ca_sign_failures_total{`, `reason="foreign_trust_domain"`, `osm_ca_sign_duration_seconds_bucket{`} {
			if !strings.Contains(metrics, want) {
				return fmt.Errorf("metrics lack %s", want)
			}
		}
		return nil
	})

	// The debug endpoint lists the issuer and its expiry.
	dbg, err := svc.admin(ctx, "/debug/issuers")
	if err != nil {
		t.Fatal(err)
	}
	var info server.DebugInfo
	if err := json.Unmarshal([]byte(dbg), &info); err != nil {
		t.Fatal(err)
	}
	if len(info.Issuers) != 1 || info.Issuers[0].ID != bundle.Roots[0].Id || !info.Issuers[0].Signing || !info.Issuers[0].NotAfter.Equal(root.NotAfter) || info.ServingCertificateExpiry.IsZero() {
		t.Errorf("debug issuers: %s", dbg)
	}
}
