package ca

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/bus/bustest"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/logging"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/cert-authority/internal/pki"
	"github.com/openservicemesh/osm/services/cert-authority/internal/server"
	"github.com/openservicemesh/osm/tests/kube"
)

// cluster is a real kube-apiserver (tests/kube), started once.
var cluster *kube.Cluster

func TestMain(m *testing.M) { os.Exit(kube.Main(m, &cluster, false)) }

func noenv(string) string { return "" }

func TestHelpExplains(t *testing.T) {
	var out bytes.Buffer
	if err := app.Run(t.Context(), Spec(Deps{}), []string{"--help"}, noenv, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"spiffe://<trust-domain>/osm/<role>", "Root rotation", "--trusted-root-secrets", "OSM_TRUSTED_ROOT_SECRETS",
		"--vault-auth-role", "--dev-bootstrap-token", "--max-ttl", "/debug/issuers", "--role-service-accounts"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

func TestConfigErrorsNameTheFlag(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--trust-domain", "Bad Domain"}, "--trust-domain"},
		{[]string{"--provider", "acme"}, "--provider"},
		{[]string{"--provider", "vault"}, "--vault-addr"},
		{[]string{"--provider", "vault", "--vault-addr", "http://127.0.0.1:1"}, "--vault-role"},
		{[]string{"--provider", "vault", "--vault-addr", "http://127.0.0.1:1", "--vault-role", "r"}, "--vault-auth-role"},
		{[]string{"--default-ttl", "72h", "--max-ttl", "48h"}, "--default-ttl"},
		{[]string{"--max-ttl", "0s"}, "--max-ttl"},
		{[]string{"--grpc-addr", "nonsense"}, "--grpc-addr"},
		{[]string{"--role-service-accounts", "xds-edge"}, "--role-service-accounts"},
		{[]string{"--role-service-accounts", "root=osm"}, "--role-service-accounts"},
		{[]string{"--trusted-root-secrets", "osm-ca-root"}, "--trusted-root-secrets"},
		{[]string{"--root-validity", "24h"}, "--root-validity"},
		{[]string{"--kv-replicas", "0"}, "--kv-replicas"},
	}
	for _, c := range cases {
		err := app.Run(t.Context(), Spec(Deps{}), c.args, noenv, io.Discard)
		var ce *app.ConfigError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("args %v: %v, want a configuration error naming %s", c.args, err, c.want)
		}
	}
	err := app.Run(t.Context(), Spec(Deps{}), []string{"--provider", "vault", "--vault-addr", "x:1"}, func(k string) string {
		if k == "OSM_VAULT_TOKEN" {
			return "s.supersecret"
		}
		return ""
	}, io.Discard)
	if err == nil || strings.Contains(err.Error(), "supersecret") {
		t.Errorf("error %v leaks the vault token or is nil", err)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
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

	grpcLis := listen(t)
	adminAddr := freeAddr(t)
	logs := &logging.Buffer{}
	const dev = "dev-token-do-not-log"
	args := []string{"--namespace", ns, "--nats-url", nats.URL(), "--admin-addr", adminAddr, "--kubeconfig", cluster.KubeconfigPath(),
		"--server-dns-names", "ca.test", "--log-format", "text", "--bundle-refresh", "1h", "--nats-user", "ca"}
	env := func(k string) string {
		switch k {
		case "OSM_DEV_BOOTSTRAP_TOKEN":
			return dev
		case "OSM_NATS_PASSWORD":
			return "ca-pw"
		}
		return ""
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- app.Run(runCtx, Spec(Deps{Listener: grpcLis}), args, env, logs)
	}()
	defer func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("service stopped with %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("service did not stop")
		}
		if l := logs.String(); strings.Contains(l, dev) || strings.Contains(l, "ca-pw") || strings.Contains(l, "PRIVATE KEY") || strings.Contains(l, "eyJ") {
			t.Errorf("logs leak a credential:\n%s", l)
		}
	}()

	// The bundle appears in KV mesh-trust.
	conn, err := bus.Connect(ctx, bus.Options{URL: nats.URL(), Role: bus.RoleAdmin, User: string(bus.RoleAdmin), Password: "admin-pw"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var bundle meshv1.TrustBundle
	waitFor(t, "the trust bundle in KV", func() error {
		store, err := conn.Bucket(ctx, bus.BucketTrust)
		if err != nil {
			return err
		}
		_, err = store.Get(ctx, layout.BundleKey, &bundle)
		return err
	})
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
	waitFor(t, "readiness", func() error { return httpGet(ctx, "http://"+adminAddr+"/readyz", nil) })

	dial := func(cert *tls.Certificate) cav1.CertificateAuthorityServiceClient {
		cfg, err := server.ClientTLSConfig(&bundle, cert, "ca.test")
		if err != nil {
			t.Fatal(err)
		}
		cc, err := grpc.NewClient(grpcLis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cav1.NewCertificateAuthorityServiceClient(cc)
	}
	saToken := func(sa string, audiences ...string) string {
		tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{Audiences: audiences}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}
	anon := dial(nil)
	bootstrap := func(token string, tt cav1.TokenType, role cav1.ComponentRole) (*tls.Certificate, error) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
		resp, err := anon.Bootstrap(ctx, &cav1.BootstrapRequest{Token: token, TokenType: tt, Role: role,
			Csr: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})})
		if err != nil {
			return nil, err
		}
		kder, _ := x509.MarshalPKCS8PrivateKey(k)
		c, err := tls.X509KeyPair(resp.CertificateChainPem, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
		return &c, err
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
		if _, err := bootstrap(c.token, sa, c.role); status.Code(err) != c.code {
			t.Errorf("bootstrap with %s: %v, want %s", c.name, err, c.code)
		}
	}

	edgeCert, err := bootstrap(saToken("osm-xds-edge", "osm-cert-authority"), sa, edgeRole)
	if err != nil {
		t.Fatalf("bootstrap the xds-edge with its ServiceAccount token: %v", err)
	}
	compilerCert, err := bootstrap(saToken("osm-policy-compiler", "osm-cert-authority"), sa, cav1.ComponentRole_COMPONENT_ROLE_POLICY_COMPILER)
	if err != nil {
		t.Fatalf("bootstrap the policy-compiler: %v", err)
	}
	if _, err := bootstrap(dev, cav1.TokenType_TOKEN_TYPE_PRE_SHARED, cav1.ComponentRole_COMPONENT_ROLE_OPERATOR); err != nil {
		t.Fatalf("dev-mode bootstrap: %v", err)
	}

	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
	req := &cav1.SignRequest{Csr: der, Identity: "spiffe://cluster.local/ns/bookstore/sa/bookbuyer"}
	resp, err := dial(edgeCert).Sign(ctx, req)
	if err != nil {
		t.Fatalf("xds-edge sign: %v", err)
	}
	leaf, _ := pki.ParseCertificatePEM(resp.CertificateChainPem)
	pool, _ := pki.BundlePool(&bundle)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatalf("the workload leaf does not verify against the KV bundle: %v", err)
	}
	if _, err := dial(compilerCert).Sign(ctx, req); status.Code(err) != codes.PermissionDenied {
		t.Errorf("policy-compiler sign: %v, want PermissionDenied", err)
	}
	if _, err := dial(edgeCert).Sign(ctx, &cav1.SignRequest{Csr: der, Identity: "spiffe://elsewhere/ns/a/sa/b"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("foreign identity: %v", err)
	}

	// Metrics count signs and failures by reason.
	var metrics string
	waitFor(t, "sign metrics", func() error {
		var b bytes.Buffer
		if err := httpGet(ctx, "http://"+adminAddr+"/metrics", &b); err != nil {
			return err
		}
		metrics = b.String()
		for _, want := range []string{`osm_ca_signs_total{`, `result="ok"`, `osm_ca_sign_failures_total{`, `reason="foreign_trust_domain"`, `osm_ca_sign_duration_seconds_bucket{`} {
			if !strings.Contains(metrics, want) {
				return fmt.Errorf("metrics lack %s", want)
			}
		}
		return nil
	})

	// The debug endpoint lists the issuer and its expiry.
	var dbg bytes.Buffer
	if err := httpGet(ctx, "http://"+adminAddr+"/debug/issuers", &dbg); err != nil {
		t.Fatal(err)
	}
	var info server.DebugInfo
	if err := json.Unmarshal(dbg.Bytes(), &info); err != nil {
		t.Fatal(err)
	}
	if len(info.Issuers) != 1 || info.Issuers[0].ID != bundle.Roots[0].Id || !info.Issuers[0].Signing || !info.Issuers[0].NotAfter.Equal(root.NotAfter) || info.ServingCertificateExpiry.IsZero() {
		t.Errorf("debug issuers: %s", dbg.String())
	}
}

func httpGet(ctx context.Context, url string, into io.Writer) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if into == nil {
		into = io.Discard
	}
	if _, err := io.Copy(into, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

func waitFor(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("waiting for %s: %v", what, err)
}
