package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openservicemesh/osm/libs/caclient"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/tests/stack"
)

// namespace creates the namespace name with labels unless it exists,
// waits for its default ServiceAccount (without which the apiserver
// refuses pods), and creates the ServiceAccounts sas unless they exist.
func namespace(t testing.TB, name string, labels map[string]string, sas ...string) {
	t.Helper()
	ctx, cs := t.Context(), cluster.Clientset()
	_, err := cs.CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	eventually(t, "default service account in "+name, 30*time.Second, func() error {
		_, err := cs.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	for _, sa := range sas {
		_, err := cs.CoreV1().ServiceAccounts(name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
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

// meshUp starts the cert-authority and the injector-webhook, with extra
// injector flags; the apiserver calls the webhook for every pod created in
// a meshed namespace.
func meshUp(t testing.TB, injectorFlags ...string) *stack.Mesh {
	namespace(t, "bookstore", map[string]string{"openservicemesh.io/monitored-by": "osm"}, "bookstore")
	namespace(t, "plain", nil, "bookstore")
	// The injector gets its serving certificate from the CA. The apiserver
	// calls it through its Service, osm-injector.osm-system, as in a
	// cluster; here an ExternalName Service resolves that to loopback (the
	// apiserver dials the ExternalName and still verifies the certificate
	// against osm-injector.osm-system.svc).
	m := startMesh(t, stack.Options{Name: "osm-e2e", Flags: map[stack.Component][]string{stack.Injector: injectorFlags}},
		stack.CertAuthority, stack.Injector)
	t.Cleanup(func() {
		_ = cluster.Clientset().AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), m.WebhookConfigName(), metav1.DeleteOptions{})
		_ = cluster.Clientset().AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(context.Background(), m.ValidatingWebhookConfigName(), metav1.DeleteOptions{})
	})
	return m
}

// injectorCert is the injector's control-plane certificate, for calling
// the CA, as its deployment would obtain it.
func injectorCert(t testing.TB, m *stack.Mesh) *tls.Certificate {
	t.Helper()
	boot, err := m.Bootstrap(t.Context(), cav1.ComponentRole_COMPONENT_ROLE_INJECTOR_WEBHOOK)
	if err != nil {
		t.Fatal(err)
	}
	return &boot.Pair
}

// TestCABundleFollowsRootRotation: when the CA adds a second root (the
// first step of a root rotation), the injector writes the new trust bundle
// into the webhook configuration's caBundle, and the apiserver keeps
// calling it.
func TestCABundleFollowsRootRotation(t *testing.T) {
	ctx := t.Context()
	cs := cluster.Clientset()
	m := meshUp(t)
	cert := injectorCert(t, m)
	second := "osm-ca-root-e2e" + uniq()
	t.Cleanup(func() {
		_ = cs.CoreV1().Secrets("osm-system").Delete(context.Background(), second, metav1.DeleteOptions{})
	})
	restart := time.Now()
	if err := m.Restart(ctx, stack.CertAuthority, "--trusted-root-secrets", second); err != nil {
		t.Fatal(err)
	}
	t.Logf("CA restarted with a second root in %s", time.Since(restart).Round(time.Millisecond))

	conn, err := m.DialCA(cert)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := cav1.NewCertificateAuthorityServiceClient(conn).GetTrustBundle(ctx, &cav1.GetTrustBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	rotated := resp.GetTrustBundle()
	if len(rotated.GetRoots()) != 2 {
		t.Fatalf("the CA's bundle holds %d roots after adding one, want 2", len(rotated.GetRoots()))
	}
	eventually(t, "the caBundle with both roots", 60*time.Second, func() error {
		cfg, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, m.WebhookConfigName(), metav1.GetOptions{})
		if err != nil {
			return err
		}
		if got := cfg.Webhooks[0].ClientConfig.CABundle; string(got) != string(caclient.RootsPEM(rotated)) {
			return fmt.Errorf("caBundle holds %d certificates, not the rotated bundle's %d", strings.Count(string(got), "BEGIN CERTIFICATE"), len(rotated.GetRoots()))
		}
		return nil
	})
	t.Logf("caBundle updated %s after the restart began", time.Since(restart).Round(time.Millisecond))
	p, err := cs.CoreV1().Pods("bookstore").Create(ctx, pod("after-rotation"+uniq(), nil), metav1.CreateOptions{})
	if err != nil || len(p.Spec.Containers) != 2 {
		t.Fatalf("pod after the rotation step: %v", err)
	}
}

// TestInjection: the real apiserver calls the webhook for every pod.
func TestInjection(t *testing.T) {
	ctx := t.Context()
	cs := cluster.Clientset()
	m := meshUp(t)
	bundle := m.Bundle()
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
	t.Run("the webhook serves a CA-issued certificate and its caBundle is the trust bundle", func(t *testing.T) {
		roots, err := caclient.RootPool(bundle)
		if err != nil {
			t.Fatal(err)
		}
		// As the apiserver does: the Service's name, the caBundle's roots.
		conn, err := tls.Dial("tcp", m.Addr(stack.Injector), &tls.Config{RootCAs: roots, ServerName: stack.InjectorService + ".osm-system.svc"})
		if err != nil {
			t.Fatalf("TLS to the webhook, verified against the trust bundle: %v", err)
		}
		leaf := conn.ConnectionState().PeerCertificates[0]
		conn.Close()
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://cluster.local/osm/injector-webhook" {
			t.Errorf("serving certificate URI SANs %v, want the injector's control-plane identity", leaf.URIs)
		}
		wantNames := caclient.ServiceDNSNames(stack.InjectorService, "osm-system", "")
		if strings.Join(leaf.DNSNames, " ") != strings.Join(wantNames, " ") {
			t.Errorf("serving certificate DNS SANs %v, want %v", leaf.DNSNames, wantNames)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: stack.InjectorService + ".osm-system.svc",
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("serving certificate does not chain to the trust bundle: %v", err)
		}
		cfg, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, m.WebhookConfigName(), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cc := cfg.Webhooks[0].ClientConfig
		if string(cc.CABundle) != string(caclient.RootsPEM(bundle)) {
			t.Errorf("caBundle is not the trust bundle's roots:\n%s", cc.CABundle)
		}
		if cc.URL != nil || cc.Service == nil || cc.Service.Namespace != "osm-system" || cc.Service.Name != stack.InjectorService {
			t.Errorf("webhook client config %+v, want the Service osm-system/%s", cc, stack.InjectorService)
		}
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
		stop(t, m, stack.Injector)
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
	for _, p := range []*stack.Proc{m.Proc(stack.CertAuthority), m.Proc(stack.Injector)} {
		for _, secret := range append(m.Secrets(), "PRIVATE KEY") {
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
	// The xDS client certificate of the pod's identity (not its service
	// certificate: the edge opens no stream for that one).
	want := "spiffe://cluster.local/osm/xds-client/ns/" + pod.Namespace + "/sa/" + pod.Spec.ServiceAccountName
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
