package chart

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/kube"
	releasev1 "helm.sh/helm/v4/pkg/release/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/identity"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	"github.com/openservicemesh/osm/tests/stack"
	"github.com/openservicemesh/osm/tests/vaultdev"
)

// The Vault rows of the pod-to-process mapping (identity_test.go has the
// others): a path flag of the cert-authority's pod is resolved through the
// pod's volumeMounts to the volume the kubelet would mount there.
//
//	rendered (in the pod)                                          process
//	--vault-addr=https://vault.vault.svc:8200                      values: https://127.0.0.1:<port>, TLS in front of the dev server
//	--vault-ca-cert=/etc/osm/vault-ca/ca.crt                       <dir>/osm-cert-authority.vault-ca.crt: ConfigMap osm-vault-ca, key ca.crt
//	--vault-sa-token-file=/var/run/secrets/.../vault/token         <dir>/osm-cert-authority.vault-token: a TokenRequest for the pod's
//	                                                               ServiceAccount with the audience of the projected volume
var vaultPathFlags = []string{"--vault-ca-cert", "--vault-sa-token-file"}

// podVolumes is the part of a rendered Deployment that says what a path of
// the pod holds.
type podVolumes struct {
	Spec struct {
		Template struct {
			Spec struct {
				ServiceAccountName string `json:"serviceAccountName"`
				Containers         []struct {
					VolumeMounts []struct {
						Name      string `json:"name"`
						MountPath string `json:"mountPath"`
					} `json:"volumeMounts"`
				} `json:"containers"`
				Volumes []struct {
					Name      string `json:"name"`
					ConfigMap *struct {
						Name string `json:"name"`
					} `json:"configMap"`
					Projected *struct {
						Sources []struct {
							ServiceAccountToken *struct {
								Audience string `json:"audience"`
								Path     string `json:"path"`
							} `json:"serviceAccountToken"`
						} `json:"sources"`
					} `json:"projected"`
				} `json:"volumes"`
			} `json:"spec"`
		} `json:"template"`
	} `json:"spec"`
}

// podFile is what the pod finds at a path: a ConfigMap key, or a projected
// ServiceAccount token with its audience.
type podFile struct {
	configMap, key           string
	serviceAccount, audience string
}

// resolvePodPath finds the volume mounted over p in the rendered
// Deployment name and what it holds at p.
func resolvePodPath(t *testing.T, objs map[string]object, name, p string) podFile {
	t.Helper()
	var d podVolumes
	if err := yaml.Unmarshal([]byte(objs["Deployment/"+namespace+"/"+name].YAML), &d); err != nil {
		t.Fatal(err)
	}
	spec := d.Spec.Template.Spec
	for _, m := range spec.Containers[0].VolumeMounts {
		rel, ok := strings.CutPrefix(p, strings.TrimSuffix(m.MountPath, "/")+"/")
		if !ok {
			continue
		}
		for _, v := range spec.Volumes {
			if v.Name != m.Name {
				continue
			}
			switch {
			case v.ConfigMap != nil:
				return podFile{configMap: v.ConfigMap.Name, key: rel}
			case v.Projected != nil:
				for _, s := range v.Projected.Sources {
					if s.ServiceAccountToken != nil && path.Clean(s.ServiceAccountToken.Path) == rel {
						return podFile{serviceAccount: spec.ServiceAccountName, audience: s.ServiceAccountToken.Audience}
					}
				}
			}
			t.Fatalf("%s: volume %s mounted at %s holds nothing at %s", name, v.Name, m.MountPath, rel)
		}
		t.Fatalf("%s: volumeMount %s names no volume", name, m.Name)
	}
	t.Fatalf("%s: no volume is mounted over %s", name, p)
	return podFile{}
}

// vaultSetup is Vault configured as values-vault.yaml's comment tells the
// operator: PKI, the CA's policy and the Kubernetes auth method.
type vaultSetup struct {
	v      *vaultdev.Server
	rootCA *x509.Certificate // the PKI mount's root
	// proxy is Vault behind TLS, as the chart's https address and caBundle
	// expect; proxyCA is the PEM that verifies it.
	proxy   *httptest.Server
	proxyCA string
}

// vaultValues are values-vault.yaml's names for Vault's side.
type vaultValues struct {
	PKIMount, PKIRole, AuthMount, AuthRole, Audience string
}

func readVaultValues(t *testing.T) vaultValues {
	t.Helper()
	ca, _ := valuesFile(t, "values-vault.yaml")["certAuthority"].(map[string]any)
	v, _ := ca["vault"].(map[string]any)
	auth, _ := v["auth"].(map[string]any)
	p, _ := v["pki"].(map[string]any)
	s := func(m map[string]any, k string) string {
		out, _ := m[k].(string)
		if out == "" {
			t.Fatalf("values-vault.yaml: certAuthority.vault.%s is empty", k)
		}
		return out
	}
	return vaultValues{PKIMount: s(p, "mount"), PKIRole: s(p, "role"), AuthMount: s(auth, "mount"),
		AuthRole: s(auth, "role"), Audience: s(auth, "audience")}
}

// startVault starts a Vault dev server and sets it up for the chart's CA:
// a PKI mount with an EC root and a role for the trust domain's URI SANs
// and the control plane's Service names, the CA's policy, and the
// Kubernetes auth method against the harness apiserver with a role bound
// to the chart's ServiceAccount osm-cert-authority in the release
// namespace and the values' audience. Vault reviews tokens as a
// ServiceAccount of its own bound to system:auth-delegator.
func startVault(t *testing.T, vv vaultValues, trustDomain, clusterDomain string) *vaultSetup {
	t.Helper()
	ctx := t.Context()
	v := vaultdev.Start(t)
	do := func(method, p string, body map[string]any) map[string]any {
		t.Helper()
		return v.Root(t, method, p, body)
	}
	do(http.MethodPost, "sys/mounts/"+vv.PKIMount, map[string]any{"type": "pki", "config": map[string]any{"max_lease_ttl": "87600h"}})
	root := do(http.MethodPost, vv.PKIMount+"/root/generate/internal", map[string]any{
		"common_name": "vault pki root for the chart test", "key_type": "ec", "key_bits": 256, "ttl": "87600h"})
	rootPEM, _ := root["data"].(map[string]any)["certificate"].(string)
	b, _ := pem.Decode([]byte(rootPEM))
	if b == nil {
		t.Fatalf("%s/root/generate/internal returned no certificate", vv.PKIMount)
	}
	rootCA, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	do(http.MethodPost, vv.PKIMount+"/roles/"+vv.PKIRole, map[string]any{
		"allowed_uri_sans": "spiffe://" + trustDomain + "/*",
		"allowed_domains":  []string{namespace + ".svc", namespace + ".svc." + clusterDomain}, "allow_subdomains": true,
		"require_cn": false, "use_csr_sans": false, "use_csr_common_name": false,
		"key_type": "ec", "key_bits": 256, "max_ttl": "48h", "server_flag": true, "client_flag": true})
	do(http.MethodPut, "sys/policies/acl/osm-ca", map[string]any{"policy": fmt.Sprintf(
		"path %q { capabilities = [\"update\"] }\npath %q { capabilities = [\"list\"] }\npath %q { capabilities = [\"read\"] }\n",
		vv.PKIMount+"/sign/"+vv.PKIRole, vv.PKIMount+"/issuers", vv.PKIMount+"/issuer/*")})

	// Vault's own ServiceAccount, which may create TokenReviews.
	cs := cluster.Clientset()
	vns := cluster.Namespace(t, "vault", nil)
	if _, err := cs.CoreV1().ServiceAccounts(vns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "vault"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: vns + "-auth-delegator"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:auth-delegator"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "vault", Namespace: vns}},
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.RbacV1().ClusterRoleBindings().Delete(context.Background(), crb.Name, metav1.DeleteOptions{})
	})
	exp := int64(3600)
	reviewer, err := cs.CoreV1().ServiceAccounts(vns).CreateToken(ctx, "vault",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rc := cluster.RESTConfig()
	caPEM := rc.CAData
	if len(caPEM) == 0 && rc.CAFile != "" {
		if caPEM, err = os.ReadFile(rc.CAFile); err != nil {
			t.Fatal(err)
		}
	}
	do(http.MethodPost, "sys/auth/"+vv.AuthMount, map[string]any{"type": "kubernetes"})
	do(http.MethodPost, "auth/"+vv.AuthMount+"/config", map[string]any{
		"kubernetes_host": rc.Host, "kubernetes_ca_cert": string(caPEM), "disable_local_ca_jwt": true,
		"token_reviewer_jwt": reviewer.Status.Token})
	do(http.MethodPost, "auth/"+vv.AuthMount+"/role/"+vv.AuthRole, map[string]any{
		"bound_service_account_names": []string{"osm-cert-authority"}, "bound_service_account_namespaces": []string{namespace},
		"audience": vv.Audience, "token_policies": []string{"osm-ca"}, "token_ttl": "1h"})

	// Vault behind TLS: the chart's address is https and its caBundle
	// verifies Vault's certificate (httptest's, for 127.0.0.1).
	target, _ := url.Parse(v.URL())
	proxy := httptest.NewUnstartedServer(httputil.NewSingleHostReverseProxy(target))
	proxy.StartTLS()
	t.Cleanup(proxy.Close)
	proxyCA := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: proxy.Certificate().Raw}))
	return &vaultSetup{v: v, rootCA: rootCA, proxy: proxy, proxyCA: proxyCA}
}

// merge lays over onto base, map by map (as a second -f does).
func merge(base, over map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		if bm, ok := out[k].(map[string]any); ok {
			if om, ok := v.(map[string]any); ok {
				out[k] = merge(bm, om)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// renderedArg is the value of flag in args.
func renderedArg(args []string, flag string) string {
	for _, a := range args {
		if f, v, ok := strings.Cut(a, "="); ok && f == flag {
			return v
		}
	}
	return ""
}

// TestVaultCASignsThroughVaultWithItsChartServiceAccount installs the chart
// with values-dev.yaml and values-vault.yaml (a development cluster whose
// CA signs with Vault), the Vault address, caBundle and caRoots.pem those
// of a real Vault dev server set up as values-vault.yaml's comment says,
// and runs the cert-authority as a process with the args and env of its
// rendered Deployment (identity_test.go's mapping, and the Vault rows
// above). Its Vault token file first holds a token of another chart
// ServiceAccount: Vault refuses the login and the CA is not ready. Once
// the file holds a token of its own ServiceAccount with the audience of its
// projected volume, the CA logs in with Vault's Kubernetes auth as
// osm-cert-authority, becomes ready, serves with a certificate of Vault's
// PKI, and a workload certificate it signs was issued by Vault and chains
// to the PKI mount's root, with no builtin root created.
func TestVaultCASignsThroughVaultWithItsChartServiceAccount(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the cert-authority and a Vault dev server")
	}
	ctx := t.Context()
	start := time.Now()
	dir := t.TempDir()
	vv := readVaultValues(t)

	// Build while Vault starts.
	var bin string
	binc := make(chan error, 1)
	go func() {
		var err error
		bin, err = stack.NewBuilder(filepath.Join(dir, "bin")).Build(context.Background(), string(stack.CertAuthority))
		binc <- err
	}()

	// The trust and cluster domains are the rendered CA's.
	vals := merge(valuesFile(t, "values-dev.yaml"), valuesFile(t, "values-vault.yaml"))
	r, err := render(t, vals)
	if err != nil {
		t.Fatal(err)
	}
	pre := renderedPod(t, byKey(t, objects(t, r.Manifest)), "osm-cert-authority").Spec.Containers[0].Args
	vs := startVault(t, vv, renderedArg(pre, "--trust-domain"), renderedArg(pre, "--cluster-domain"))
	rootPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: vs.rootCA.Raw}))
	vals = merge(vals, map[string]any{
		"certAuthority": map[string]any{"vault": map[string]any{"address": vs.proxy.URL, "caBundle": vs.proxyCA}},
		"global":        map[string]any{"caRoots": map[string]any{"pem": rootPEM}},
	})
	t.Logf("vault set up in %s", time.Since(start).Round(time.Millisecond))

	in := action.NewInstall(helmConfig(t))
	in.ReleaseName, in.Namespace = releaseName, namespace
	in.CreateNamespace = true
	in.WaitStrategy = kube.HookOnlyStrategy
	ri, err := in.RunWithContext(ctx, loadChart(t), vals)
	if err != nil {
		t.Fatalf("install: %v", err)
	}
	rel := ri.(*releasev1.Release)
	t.Cleanup(func() {
		un := action.NewUninstall(helmConfig(t))
		un.WaitStrategy = kube.HookOnlyStrategy
		if _, err := un.Run(releaseName); err != nil {
			t.Errorf("uninstall: %v", err)
		}
	})
	objs := byKey(t, objects(t, rel.Manifest))

	// NATS: the rendered nats.conf with the installed Secrets.
	nf := natsLayout(t, rel.Manifest)
	opts, err := server.ProcessConfigFile(nf.conf)
	if err != nil {
		t.Fatalf("nats.conf: %v", err)
	}
	opts.NoSigs, opts.NoLog = true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	if err := os.WriteFile(filepath.Join(dir, "nats-ca.crt"), nf.secrets["osm-nats-ca/ca.crt"], 0o600); err != nil {
		t.Fatal(err)
	}

	// The CA's process: identity_test.go's mapping for every flag but the
	// Vault paths, which the pod's volumes resolve.
	const name = "osm-cert-authority"
	p := renderedPod(t, objs, name)
	c := &p.Spec.Containers[0]
	var vaultArgs []string
	c.Args = slices.DeleteFunc(c.Args, func(a string) bool {
		f, _, _ := strings.Cut(a, "=")
		if slices.Contains(vaultPathFlags, f) {
			vaultArgs = append(vaultArgs, a)
			return true
		}
		return false
	})
	caAddr, _ := stack.FreeAddr()
	admin, _ := stack.FreeAddr()
	e := &procEnv{t: t, dir: dir, nats: fmt.Sprintf("127.0.0.1:%d", nf.client),
		addrs: map[string]string{"--grpc-addr": caAddr, "--admin-addr": admin}, ca: caAddr}
	args, env := e.process(p)
	var tokenFile string
	var tokenAudience string
	for _, a := range vaultArgs {
		f, v, _ := strings.Cut(a, "=")
		pf := resolvePodPath(t, objs, name, v)
		switch {
		case pf.configMap != "":
			cm, err := cluster.Clientset().CoreV1().ConfigMaps(namespace).Get(ctx, pf.configMap, metav1.GetOptions{})
			if err != nil || cm.Data[pf.key] == "" {
				t.Fatalf("%s: ConfigMap %s key %s: %v", a, pf.configMap, pf.key, err)
			}
			file := filepath.Join(dir, name+".vault-ca.crt")
			if err := os.WriteFile(file, []byte(cm.Data[pf.key]), 0o600); err != nil {
				t.Fatal(err)
			}
			a = f + "=" + file
		case pf.serviceAccount != "":
			if pf.serviceAccount != name {
				t.Fatalf("%s: the projected token is of ServiceAccount %s, want %s", a, pf.serviceAccount, name)
			}
			tokenFile, tokenAudience = filepath.Join(dir, name+".vault-token"), pf.audience
			a = f + "=" + tokenFile
		}
		args = append(args, a)
	}
	if tokenFile == "" || renderedArg(args, "--vault-ca-cert") == "" {
		t.Fatalf("the rendered CA has no --vault-sa-token-file or --vault-ca-cert: %v", args)
	}
	t.Logf("the CA's Vault token audience (its projected volume): %q", tokenAudience)

	// First a token of another chart ServiceAccount, with the right
	// audience: Vault refuses it and the CA is not ready.
	if err := os.WriteFile(tokenFile, []byte(token(t, "osm-injector-webhook", tokenAudience)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := <-binc; err != nil {
		t.Fatal(err)
	}
	proc, err := stack.Start(name, bin, args, env, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := proc.Stop(30 * time.Second); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("--- %s ---\n%s\n--- vault ---\n%s", name, proc.Output(), vs.v.Logs())
		}
	})
	// Vault's reason names the ServiceAccount, not the audience.
	refused := "vault refused kubernetes login (HTTP 403): service account name not authorized"
	if err := stack.Eventually(ctx, 20*time.Second, func() error {
		if !strings.Contains(proc.Output(), refused) {
			return fmt.Errorf("the CA has not logged %q", refused)
		}
		return nil
	}); err != nil {
		t.Fatalf("a token of ServiceAccount osm-injector-webhook: %v\n%s", err, proc.Output())
	}
	if err := proc.Ready(admin); err == nil {
		t.Fatal("the CA is ready with a token of another ServiceAccount")
	}
	t.Logf("a token of osm-injector-webhook: refused, not ready %s after the start: %s",
		time.Since(start).Round(time.Millisecond), lastLine(proc.Output(), refused))

	// The kubelet's token: the CA's own ServiceAccount, the projected
	// volume's audience. The CA's next login attempt reads it.
	if err := os.WriteFile(tokenFile, []byte(token(t, name, tokenAudience)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := proc.WaitReady(ctx, admin, 30*time.Second); err != nil {
		t.Fatalf("the CA with its own ServiceAccount's token: %v\n%s", err, proc.Output())
	}
	t.Logf("the CA ready through Vault %s after the start", time.Since(start).Round(time.Millisecond))

	// Vault: the CA's token came from the Kubernetes auth method, for the
	// chart's ServiceAccount in the release namespace.
	checkVaultLogin(t, vs.v, vv.AuthMount, name)

	// The CA's clients verify it with global.caRoots.pem (the ConfigMap
	// osm-ca-roots), Vault's root alone.
	cm, err := cluster.Clientset().CoreV1().ConfigMaps(namespace).Get(ctx, "osm-ca-roots", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(cm.Data["ca.crt"])) {
		t.Fatal("osm-ca-roots's ca.crt holds no certificate")
	}
	injectorAudience := ""
	for _, v := range renderedPod(t, objs, "osm-injector-webhook").Spec.Volumes {
		if v.Projected != nil {
			for _, s := range v.Projected.Sources {
				if s.ServiceAccountToken != nil {
					injectorAudience = s.ServiceAccountToken.Audience
				}
			}
		}
	}
	id := identity.New(renderedArg(args, "--trust-domain"), "bookbuyer", "bookbuyer")
	leaf := vaultSigned(t, caAddr, pool, token(t, "osm-injector-webhook", injectorAudience), id)

	// The leaf chains to the PKI mount's root, and Vault issued it.
	roots := x509.NewCertPool()
	roots.AddCert(vs.rootCA)
	inter := x509.NewCertPool()
	for _, c := range leaf.Certificate[1:] {
		ic, err := x509.ParseCertificate(c)
		if err != nil {
			t.Fatal(err)
		}
		inter.AddCert(ic)
	}
	chains, err := leaf.Leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		t.Fatalf("the certificate the CA signed for %s does not chain to Vault's PKI root: %v", id, err)
	}
	if top := chains[0][len(chains[0])-1]; !top.Equal(vs.rootCA) {
		t.Errorf("the chain ends at %s, not Vault's root", top.Subject)
	}
	serial := colonHex(leaf.Leaf.SerialNumber.Bytes())
	if _, err := vs.v.Do(ctx, http.MethodGet, vv.PKIMount+"/cert/"+serial, vaultdev.RootToken, nil); err != nil {
		t.Errorf("Vault's %s has no certificate %s (the one the CA signed): %v", vv.PKIMount, serial, err)
	}
	// No builtin root: the CA with Vault creates no root Secret.
	if _, err := cluster.Clientset().CoreV1().Secrets(namespace).Get(ctx, "osm-ca-root", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the builtin root Secret osm-ca-root exists with the Vault provider (err %v)", err)
	}
	t.Logf("a certificate signed through Vault %s after the start", time.Since(start).Round(time.Millisecond))

	// No token in the CA's logs: neither a ServiceAccount JWT nor Vault's.
	for _, secret := range []string{"eyJ", "hvs."} {
		if strings.Contains(proc.Output(), secret) {
			t.Errorf("the CA logged a token (%s...)", secret)
		}
	}
}

// checkVaultLogin asks Vault for the tokens it holds and fails unless one
// came from the Kubernetes auth method mount for ServiceAccount sa of the
// release namespace.
func checkVaultLogin(t *testing.T, v *vaultdev.Server, mount, sa string) {
	t.Helper()
	ctx := t.Context()
	list, err := v.Do(ctx, "LIST", "auth/token/accessors", vaultdev.RootToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := list["data"].(map[string]any)["keys"].([]any)
	var seen []string
	for _, k := range keys {
		look, err := v.Do(ctx, http.MethodPost, "auth/token/lookup-accessor", vaultdev.RootToken, map[string]any{"accessor": k})
		if err != nil {
			t.Fatal(err)
		}
		d, _ := look["data"].(map[string]any)
		meta, _ := d["meta"].(map[string]any)
		seen = append(seen, fmt.Sprintf("%v %v/%v", d["path"], meta["service_account_namespace"], meta["service_account_name"]))
		if d["path"] == "auth/"+mount+"/login" && meta["service_account_name"] == sa && meta["service_account_namespace"] == namespace {
			t.Logf("vault token of %v: path %v, policies %v", d["display_name"], d["path"], d["policies"])
			return
		}
	}
	t.Errorf("no Vault token from auth/%s/login for ServiceAccount %s/%s; tokens: %v", mount, namespace, sa, seen)
}

// vaultSigned bootstraps as the injector with its ServiceAccount's token
// over TLS that trusts pool alone, and has the CA sign an xDS client
// certificate for id.
func vaultSigned(t *testing.T, addr string, pool *x509.CertPool, injectorToken string, id identity.ID) tls.Certificate {
	t.Helper()
	ctx := t.Context()
	dial := func(cert *tls.Certificate) cav1.CertificateAuthorityServiceClient {
		tc := &tls.Config{RootCAs: pool, ServerName: "osm-cert-authority." + namespace + ".svc", MinVersion: tls.VersionTLS12}
		if cert != nil {
			tc.Certificates = []tls.Certificate{*cert}
		}
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cav1.NewCertificateAuthorityServiceClient(cc)
	}
	boot, err := caclient.Bootstrap(ctx, dial(nil), caclient.BootstrapRequest{Token: injectorToken,
		TokenType: cav1.TokenType_TOKEN_TYPE_SERVICE_ACCOUNT, Role: cav1.ComponentRole_COMPONENT_ROLE_INJECTOR_WEBHOOK})
	if err != nil {
		t.Fatalf("bootstrap with the injector ServiceAccount's token (the CA verified by Vault's root alone): %v", err)
	}
	issued, err := caclient.Sign(ctx, dial(&boot.Pair), id, identity.UsageXDSClient, time.Hour)
	if err != nil {
		t.Fatalf("sign for %s: %v", id, err)
	}
	return issued.Pair
}

// colonHex is a serial number as Vault writes it (aa:bb:...).
func colonHex(b []byte) string {
	parts := make([]string, len(b))
	for i, x := range b {
		parts[i] = fmt.Sprintf("%02x", x)
	}
	return strings.Join(parts, ":")
}

// lastLine is the last line of out that contains s.
func lastLine(out, s string) string {
	var last string
	for l := range strings.Lines(out) {
		if strings.Contains(l, s) {
			last = strings.TrimSpace(l)
		}
	}
	return last
}
