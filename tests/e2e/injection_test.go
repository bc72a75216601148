package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/layout"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

const devToken = "e2e-dev-bootstrap-token"

// servingPKI makes a CA and a serving certificate for 127.0.0.1, for the
// webhook the apiserver calls.
func servingPKI(t testing.TB, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "e2e webhook ca"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "osm-injector"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalPKCS8PrivateKey(key)
	return writeFile(t, dir, "webhook-ca.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})),
		writeFile(t, dir, "webhook.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		writeFile(t, dir, "webhook.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}))
}

func namespace(t testing.TB, name string, labels map[string]string) {
	t.Helper()
	_, err := cluster.Clientset().CoreV1().Namespaces().Create(t.Context(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

func pod(name string, annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations, Labels: map[string]string{"app": "bookstore"}},
		Spec: corev1.PodSpec{
			ServiceAccountName: "bookstore",
			Containers: []corev1.Container{{
				Name: "bookstore", Image: "bookstore:v1",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 14001}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
					Path: "/ready", Port: intOrName("http")}}},
			}},
		},
	}
}

// mesh is the cert-authority and the injector-webhook running as
// processes against the test cluster.
type mesh struct {
	ca, injector  *proc
	injectorAdmin string
	caAdmin       string
	injectorArgs  []string // to restart it
	bundle        *meshv1.TrustBundle
	secrets       []string // values that must never reach a log
}

// meshUp starts the cert-authority and the injector-webhook, with extra
// injector flags; the apiserver calls the webhook for every pod created in
// a meshed namespace.
func meshUp(t testing.TB, injectorFlags ...string) *mesh {
	ctx := t.Context()
	cs := cluster.Clientset()
	dir := t.TempDir()
	namespace(t, "osm-system", nil)
	namespace(t, "bookstore", map[string]string{"openservicemesh.io/monitored-by": "osm"})
	namespace(t, "plain", nil)
	for _, ns := range []string{"bookstore", "plain"} {
		eventually(t, "default service account in "+ns, 30*time.Second, func() error {
			_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
			return err
		})
		_, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "bookstore"}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}

	pw := map[bus.Role]string{bus.RoleCA: "ca-pw", bus.RoleAdmin: "admin-pw"}
	nats, err := bus.StartEmbedded(bus.EmbeddedOptions{Passwords: pw})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nats.Shutdown)

	// The cert-authority, built-in provider, with the dev bootstrap token.
	caAddr, caAdmin := freeAddr(t), freeAddr(t)
	ca := start(t, "cert-authority", []string{
		"--namespace", "osm-system", "--kubeconfig", cluster.KubeconfigPath(), "--trust-domain", "cluster.local",
		"--grpc-addr", caAddr, "--admin-addr", caAdmin, "--server-dns-names", "ca.test",
		"--nats-url", nats.URL(), "--nats-user", "ca", "--log-format", "text",
	}, map[string]string{"OSM_NATS_PASSWORD": pw[bus.RoleCA], "OSM_DEV_BOOTSTRAP_TOKEN": devToken})
	ca.waitReady(t, caAdmin)

	// The injector's control-plane certificate, as its deployment would
	// obtain it: the bundle from KV mesh-trust, then Bootstrap.
	admin, err := bus.Connect(ctx, bus.Options{URL: nats.URL(), Role: bus.RoleAdmin, User: "admin", Password: pw[bus.RoleAdmin]})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	trust, err := admin.Bucket(ctx, bus.BucketTrust)
	if err != nil {
		t.Fatal(err)
	}
	bundle := &meshv1.TrustBundle{}
	if _, err := trust.Get(ctx, layout.BundleKey, bundle); err != nil {
		t.Fatal(err)
	}
	anon, err := caclient.Dial(caAddr, bundle, "ca.test", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	boot, err := caclient.Bootstrap(ctx, cav1.NewCertificateAuthorityServiceClient(anon), caclient.BootstrapRequest{
		Token: devToken, TokenType: cav1.TokenType_TOKEN_TYPE_PRE_SHARED, Role: cav1.ComponentRole_COMPONENT_ROLE_INJECTOR_WEBHOOK})
	if err != nil {
		t.Fatal(err)
	}

	// The injector.
	webhookCA, webhookCert, webhookKey := servingPKI(t, dir)
	listen, injAdmin := freeAddr(t), freeAddr(t)
	args := []string{
		"--kubeconfig", cluster.KubeconfigPath(), "--mesh-name", "osm", "--control-plane-namespace", "osm-system",
		"--listen-addr", listen, "--admin-addr", injAdmin, "--log-format", "text",
		"--tls-cert-file", webhookCert, "--tls-key-file", webhookKey, "--tls-ca-file", webhookCA,
		"--webhook-config-name", "osm-e2e-injector", "--webhook-url", "https://" + listen + "/mutate-pod",
		"--ca-addr", caAddr, "--ca-server-name", "ca.test",
		"--ca-client-cert-file", writeFile(t, dir, "injector.crt", boot.ChainPEM),
		"--ca-client-key-file", writeFile(t, dir, "injector.key", boot.KeyPEM),
		"--ca-trust-file", writeFile(t, dir, "ca-roots.pem", caclient.RootsPEM(bundle)),
	}
	args = append(args, injectorFlags...)
	injector := start(t, "injector-webhook", args, nil)
	injector.waitReady(t, injAdmin)
	eventually(t, "the webhook configuration", 30*time.Second, func() error {
		_, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "osm-e2e-injector", metav1.GetOptions{})
		return err
	})
	t.Cleanup(func() {
		_ = cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), "osm-e2e-injector", metav1.DeleteOptions{})
	})
	return &mesh{ca: ca, injector: injector, injectorAdmin: injAdmin, caAdmin: caAdmin, injectorArgs: args, bundle: bundle,
		secrets: []string{devToken, pw[bus.RoleCA]}}
}

// TestInjection: the real apiserver calls the webhook for every pod.
func TestInjection(t *testing.T) {
	ctx := t.Context()
	cs := cluster.Clientset()
	m := meshUp(t)
	injector, bundle := m.injector, m.bundle
	run := uniq() // names differ between runs on one cluster (-count)
	pods := cs.CoreV1().Pods("bookstore")
	var created *corev1.Pod
	eventually(t, "an injected pod", 30*time.Second, func() error {
		_ = pods.Delete(ctx, "bookstore-1"+run, metav1.DeleteOptions{})
		p, err := pods.Create(ctx, pod("bookstore-1"+run, nil), metav1.CreateOptions{})
		if err != nil {
			return err
		}
		if len(p.Spec.Containers) != 2 {
			return errors.New("pod created without the sidecar (webhook not called yet?)")
		}
		created = p
		return nil
	})
	t.Run("stored pod has the init container, sidecar and volume", func(t *testing.T) {
		if len(created.Spec.InitContainers) != 1 || created.Spec.InitContainers[0].Name != "osm-init" ||
			!strings.Contains(created.Spec.InitContainers[0].Args[0], "REDIRECT --to-port 15001") {
			t.Fatalf("init containers: %+v", created.Spec.InitContainers)
		}
		if created.Spec.Containers[1].Name != "envoy" || created.Spec.Containers[1].SecurityContext.RunAsUser == nil ||
			*created.Spec.Containers[1].SecurityContext.RunAsUser != 1500 {
			t.Fatalf("sidecar: %+v", created.Spec.Containers[1])
		}
		probe := created.Spec.Containers[0].ReadinessProbe.HTTPGet
		if probe.Port.IntValue() != 15902 || probe.Path != "/osm-readiness-probe" || created.Annotations["openservicemesh.io/original-probes"] == "" {
			t.Fatalf("readiness probe not sent through the sidecar: %+v", probe)
		}
		if len(created.Spec.Volumes) == 0 || created.Spec.Volumes[len(created.Spec.Volumes)-1].Name != "envoy-bootstrap" {
			t.Fatalf("volumes: %+v", created.Spec.Volumes)
		}
	})
	t.Run("bootstrap secret carries the pod identity, chained to the trust bundle", func(t *testing.T) {
		checkBootstrapSecret(t, created, bundle)
	})
	t.Run("opting out leaves the pod untouched", func(t *testing.T) {
		p, err := pods.Create(ctx, pod("opted-out"+run, map[string]string{"openservicemesh.io/sidecar-injection": "disabled"}), metav1.CreateOptions{})
		if err != nil || len(p.Spec.Containers) != 1 || len(p.Spec.InitContainers) != 0 {
			t.Fatalf("opted-out pod: %v, %d containers", err, len(p.Spec.Containers))
		}
		p, err = cs.CoreV1().Pods("plain").Create(ctx, pod("plain-1"+run, nil), metav1.CreateOptions{})
		if err != nil || len(p.Spec.Containers) != 1 {
			t.Fatalf("pod outside the mesh: %v", err)
		}
		// kube-system is never injected, even when labelled into the mesh.
		ks := cs.CoreV1().Namespaces()
		sys, err := ks.Get(ctx, "kube-system", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		sys.Labels["openservicemesh.io/monitored-by"] = "osm"
		if _, err := ks.Update(ctx, sys, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		sysPod := pod("kube-system-1"+run, nil)
		sysPod.Spec.ServiceAccountName = "default"
		p, err = cs.CoreV1().Pods("kube-system").Create(ctx, sysPod, metav1.CreateOptions{})
		if err != nil || len(p.Spec.Containers) != 1 {
			t.Fatalf("pod in kube-system: %v", err)
		}
	})
	t.Run("admitting an injected pod again changes nothing and a dry run stores nothing", func(t *testing.T) {
		again := created.DeepCopy()
		again.ObjectMeta = metav1.ObjectMeta{Name: "bookstore-again" + run, Labels: created.Labels, Annotations: created.Annotations}
		again.Spec.NodeName = ""
		before := secretCount(t, "bookstore")
		p, err := pods.Create(ctx, again, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Spec.Containers) != 2 || len(p.Spec.InitContainers) != 1 {
			t.Fatalf("re-admitted pod has %d containers and %d init containers", len(p.Spec.Containers), len(p.Spec.InitContainers))
		}
		fresh, err := pods.Create(ctx, pod("dry-run"+run, nil), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil || len(fresh.Spec.Containers) != 2 {
			t.Fatalf("dry-run pod not injected: %v", err)
		}
		if after := secretCount(t, "bookstore"); after != before {
			t.Fatalf("dry runs created %d secrets", after-before)
		}
	})
	t.Run("fails closed when the injector is down", func(t *testing.T) {
		injector.stop(t)
		_, err := pods.Create(ctx, pod("refused"+run, nil), metav1.CreateOptions{})
		if err == nil {
			t.Fatal("a pod in a meshed namespace was created with the injector down")
		}
		if !strings.Contains(err.Error(), "sidecar-injector.openservicemesh.io") {
			t.Fatalf("refusal does not name the webhook: %v", err)
		}
		if _, err := cs.CoreV1().Pods("plain").Create(ctx, pod("plain-2"+run, nil), metav1.CreateOptions{}); err != nil {
			t.Fatalf("a pod outside the mesh was refused: %v", err)
		}
	})
	for _, p := range []*proc{m.ca, injector} {
		for _, secret := range append(m.secrets, "PRIVATE KEY") {
			if strings.Contains(p.Output(), secret) {
				t.Errorf("%s logs a secret", p.Name)
			}
		}
	}
}

func secretCount(t testing.TB, ns string) int {
	t.Helper()
	l, err := cluster.Clientset().CoreV1().Secrets(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=osm-injector"})
	if err != nil {
		t.Fatal(err)
	}
	return len(l.Items)
}

// checkBootstrapSecret waits for the bootstrap Secret of pod (it is written
// after admission has answered) and checks that it carries a certificate
// for the pod's identity, chained to the mesh trust bundle, and a bootstrap
// naming the proxy. It returns the Secret.
func checkBootstrapSecret(t *testing.T, pod *corev1.Pod, bundle *meshv1.TrustBundle) *corev1.Secret {
	t.Helper()
	uuid := pod.Labels["osm-proxy-uuid"]
	var sec *corev1.Secret
	eventually(t, "the bootstrap secret", 30*time.Second, func() error {
		var err error
		sec, err = cluster.Clientset().CoreV1().Secrets(pod.Namespace).Get(t.Context(), "envoy-bootstrap-"+uuid, metav1.GetOptions{})
		return err
	})
	block, _ := pem.Decode(sec.Data["tls.crt"])
	if block == nil {
		t.Fatal("tls.crt holds no certificate")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	want := "spiffe://cluster.local/ns/" + pod.Namespace + "/sa/" + pod.Spec.ServiceAccountName
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != want {
		t.Fatalf("leaf URIs %v, want %s", leaf.URIs, want)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(sec.Data["ca.crt"]) {
		t.Fatal("ca.crt holds no root")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("leaf does not chain to the bundle in the secret: %v", err)
	}
	bundleRoots, _ := caclient.RootPool(bundle)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: bundleRoots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("leaf does not chain to the mesh trust bundle: %v", err)
	}
	if _, err := tls.X509KeyPair(sec.Data["tls.crt"], sec.Data["tls.key"]); err != nil {
		t.Fatalf("tls.key does not match tls.crt: %v", err)
	}
	if !strings.Contains(string(sec.Data["bootstrap.json"]), uuid) {
		t.Fatal("bootstrap.json does not name the proxy")
	}
	return sec
}
