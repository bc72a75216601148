package service

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/webhook"
)

// argValue is the value of flag in args.
func argValue(t *testing.T, args []string, flag string) string {
	t.Helper()
	i := slices.Index(args, flag)
	if i < 0 || i+1 >= len(args) {
		t.Fatalf("no %s in %v", flag, args)
	}
	return args[i+1]
}

// setArg sets flag in args, appending it when absent.
func setArg(args []string, flag, value string) []string {
	if i := slices.Index(args, flag); i >= 0 && i+1 < len(args) {
		args[i+1] = value
		return args
	}
	return append(args, flag, value)
}

// forgedReview is an AdmissionReview for pod name in namespace ns that no
// apiserver sent: the pod is never created.
func forgedReview(t *testing.T, ns, name string) []byte {
	t.Helper()
	pod := corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       corev1.PodSpec{ServiceAccountName: "default", Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(admissionv1.AdmissionReview{TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{UID: types.UID("forged-" + name), Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Operation: admissionv1.Create, Namespace: ns, Name: name, Object: runtime.RawExtension{Raw: raw}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// startInjector runs an injector until ctx ends: the serving certificate
// from files, the fake CA, the webhook configuration whName (deleted after
// the test) calling listen, the admin listener on admin, and extra flags.
func startInjector(ctx context.Context, t *testing.T, ca *fakeCA, whName, listen, admin string, extra ...string) ([]string, <-chan error, fmt.Stringer) {
	t.Helper()
	if whName != "" {
		webhooks := cluster.Clientset().AdmissionregistrationV1().MutatingWebhookConfigurations()
		t.Cleanup(func() { _ = webhooks.Delete(context.Background(), whName, metav1.DeleteOptions{}) })
	}
	args := serviceArgs(t, listen, admin)
	args = setArg(args, "--webhook-config-name", whName)
	args = append(args, ca.args()...)
	args = append(args, extra...)
	res, out := apptest.Start(ctx, Spec(Options{}), args, nil)
	apptest.WaitReady(t, admin, 60*time.Second, res, out)
	return args, res, out
}

// createInjectedPod creates a pod in ns through the apiserver, retrying
// until the webhook configuration is in use and the pod has the sidecar.
func createInjectedPod(ctx context.Context, t *testing.T, ns string) *corev1.Pod {
	t.Helper()
	pods := cluster.Clientset().CoreV1().Pods(ns)
	var pod *corev1.Pod
	apptest.Eventually(t, "an injected pod", 30*time.Second, func() error {
		p, err := pods.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "real-"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		if len(p.Spec.Containers) != 2 {
			_ = pods.Delete(ctx, p.Name, metav1.DeleteOptions{})
			return errors.New("created without the sidecar (the webhook configuration not yet in use?)")
		}
		pod = p
		return nil
	})
	return pod
}

// bootstrapSecretOf waits for the bootstrap Secret of pod and returns it
// with its certificate.
func bootstrapSecretOf(ctx context.Context, t *testing.T, pod *corev1.Pod) (*corev1.Secret, *x509.Certificate) {
	t.Helper()
	var sec *corev1.Secret
	apptest.Eventually(t, "the pod's bootstrap Secret", 30*time.Second, func() error {
		var err error
		sec, err = cluster.Clientset().CoreV1().Secrets(pod.Namespace).Get(ctx, "envoy-bootstrap-"+pod.Labels[layout.LabelProxyUUID], metav1.GetOptions{})
		return err
	})
	block, _ := pem.Decode(sec.Data["tls.crt"])
	if block == nil {
		t.Fatalf("the Secret has no certificate: %v", sec.Data)
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return sec, leaf
}

// TestForgedAdmissionsCostNoSignatureAndNoSecret is the webhook amplifier of
// issue 15 (item 7): anyone who reaches the HTTPS listener can send
// AdmissionReviews. 1,000 of them, for pods that are never created, must
// cost no CA signature and no Secret; a pod the apiserver does create still
// gets its Secret, with a certificate from the CA.
func TestForgedAdmissionsCostNoSignatureAndNoSecret(t *testing.T) {
	const forged, workers = 1000, 8
	ca := startFakeCA(t)
	ns := cluster.Namespace(t, "forged", map[string]string{layout.LabelMonitoredBy: "osm"})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	listen, admin := apptest.FreeAddr(t), apptest.FreeAddr(t)
	args, res, out := startInjector(ctx, t, ca, "osm-forged-test", listen, admin, "--bootstrap-owner-wait", "2s")

	servingPEM, err := os.ReadFile(argValue(t, args, "--tls-cert-file"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(servingPEM)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers,
		TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}}}
	defer client.CloseIdleConnections()
	var (
		mu        sync.Mutex
		latencies []time.Duration
		wg        sync.WaitGroup
	)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < forged; i += workers {
				body := forgedReview(t, ns, fmt.Sprintf("forged-%d", i))
				start := time.Now()
				resp, err := client.Post("https://"+listen+admissionPath, "application/json", bytes.NewReader(body))
				if err != nil {
					t.Error(err)
					return
				}
				raw, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				d := time.Since(start)
				var review admissionv1.AdmissionReview
				if err := json.Unmarshal(raw, &review); err != nil || review.Response == nil || !review.Response.Allowed || len(review.Response.Patch) == 0 {
					t.Errorf("forged review %d: %d %s", i, resp.StatusCode, raw)
					return
				}
				mu.Lock()
				latencies = append(latencies, d)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	slices.Sort(latencies)
	t.Logf("%d forged admissions, %d concurrent: p50 %s, p99 %s, max %s", len(latencies), workers,
		latencies[len(latencies)/2], latencies[len(latencies)*99/100], latencies[len(latencies)-1])

	// Each was held for --bootstrap-owner-wait, then dropped unsigned.
	apptest.Eventually(t, "the forged Secrets dropped", 30*time.Second, func() error {
		n, err := apptest.MetricValue(admin, "osm_injector_bootstrap_dropped_total", `reason="unclaimed"`)
		if err == nil && n != forged {
			err = fmt.Errorf("%v dropped", n)
		}
		return err
	})
	if n := ca.signs.Load(); n != 0 {
		t.Fatalf("the CA signed %d certificates for pods that were never created", n)
	}
	secrets := cluster.Clientset().CoreV1().Secrets(ns)
	l, err := secrets.List(ctx, metav1.ListOptions{LabelSelector: webhook.LabelManagedBy + "=" + webhook.ManagedBy})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Items) != 0 {
		t.Fatalf("%d bootstrap Secrets written for pods that were never created", len(l.Items))
	}

	// A pod the apiserver creates gets its Secret, signed once.
	pod := createInjectedPod(ctx, t, ns)
	sec, leaf := bootstrapSecretOf(ctx, t, pod)
	if want := "spiffe://cluster.local/osm/xds-client/ns/" + ns + "/sa/default"; len(leaf.URIs) != 1 || leaf.URIs[0].String() != want {
		t.Fatalf("certificate for %v, want %s", leaf.URIs, want)
	}
	if len(sec.OwnerReferences) != 1 || sec.OwnerReferences[0].UID != pod.UID {
		t.Fatalf("Secret owners %v, want the pod", sec.OwnerReferences)
	}
	if n := ca.signs.Load(); n != 1 {
		t.Fatalf("the CA signed %d certificates, want 1 for the one real pod", n)
	}
	cancel()
	apptest.Stopped(t, res, out)
}
