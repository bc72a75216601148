package kube_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// labelWebhook is a mutating admission webhook that adds a label to every
// pod it admits and records what it was asked.
type labelWebhook struct {
	key, value string

	mu    sync.Mutex
	calls []admissionv1.AdmissionRequest
}

func (h *labelWebhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var review admissionv1.AdmissionReview
	if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
		http.Error(w, "bad AdmissionReview", http.StatusBadRequest)
		return
	}
	req := review.Request
	h.mu.Lock()
	h.calls = append(h.calls, *req)
	h.mu.Unlock()

	var pod corev1.Pod
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		resp.Allowed = false
		resp.Result = &metav1.Status{Message: "decode pod: " + err.Error()}
	} else {
		var op map[string]any
		if pod.Labels == nil {
			op = map[string]any{"op": "add", "path": "/metadata/labels", "value": map[string]string{h.key: h.value}}
		} else {
			op = map[string]any{"op": "add", "path": "/metadata/labels/" + jsonPointerEscape(h.key), "value": h.value}
		}
		patch, _ := json.Marshal([]any{op})
		pt := admissionv1.PatchTypeJSONPatch
		resp.Patch, resp.PatchType = patch, &pt
	}
	review.Response, review.Request = resp, nil
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(review)
}

// callsFor returns the non-dry-run requests the webhook saw for a pod.
func (h *labelWebhook) callsFor(namespace, name string) []admissionv1.AdmissionRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []admissionv1.AdmissionRequest
	for _, c := range h.calls {
		if c.Namespace == namespace && c.Name == name && (c.DryRun == nil || !*c.DryRun) {
			out = append(out, c)
		}
	}
	return out
}

func jsonPointerEscape(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '~':
			out = append(out, "~0"...)
		case '/':
			out = append(out, "~1"...)
		default:
			out = append(out, s[i])
		}
	}
	return string(out)
}

func TestMutatingWebhookPatchesPod(t *testing.T) {
	ctx := t.Context()
	cs := cluster.Clientset()
	ns := cluster.Namespace(t, "webhook", nil)

	hook := &labelWebhook{key: "osm.test/injected", value: "true"}
	caPEM, serverCert := webhookCerts(t)
	srv := httptest.NewUnstartedServer(hook)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{serverCert}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	url := srv.URL + "/mutate"
	fail := admissionregistrationv1.Fail
	none := admissionregistrationv1.SideEffectClassNone
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "label-" + ns},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "label.osm.test",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caPEM},
			AdmissionReviewVersions: []string{"v1"},
			SideEffects:             &none,
			FailurePolicy:           &fail,
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{
				corev1.LabelMetadataName: ns,
			}},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule: admissionregistrationv1.Rule{
					APIGroups:   []string{""},
					APIVersions: []string{"v1"},
					Resources:   []string{"pods"},
				},
			}},
		}},
	}
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, cfg, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), cfg.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete webhook configuration: %v", err)
		}
	})

	newPod := func(name string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": "demo"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.com/app:v1"}}},
		}
	}

	// The apiserver picks up new webhook configurations asynchronously:
	// dry-run creates (the webhook has no side effects, so it is called)
	// until the patch shows.
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Create(ctx, newPod("probe"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			return false, err
		}
		return p.Labels[hook.key] == hook.value, nil
	})
	if err != nil {
		t.Fatalf("webhook never applied to a dry-run pod: %v", err)
	}

	if _, err := cs.CoreV1().Pods(ns).Create(ctx, newPod("demo"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	stored, err := cs.CoreV1().Pods(ns).Get(ctx, "demo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := stored.Labels[hook.key]; got != hook.value {
		t.Errorf("stored pod label %s = %q, want %q (labels %v)", hook.key, got, hook.value, stored.Labels)
	}
	if got := stored.Labels["app"]; got != "demo" {
		t.Errorf("stored pod lost its own label app: %v", stored.Labels)
	}
	calls := hook.callsFor(ns, "demo")
	if len(calls) != 1 {
		t.Fatalf("webhook saw %d requests for pod demo, want 1", len(calls))
	}
	if c := calls[0]; c.Operation != admissionv1.Create || c.Kind.Kind != "Pod" || c.UserInfo.Username != "admin" {
		t.Errorf("webhook request: operation=%s kind=%s user=%s, want CREATE Pod admin", c.Operation, c.Kind.Kind, c.UserInfo.Username)
	}
}

// webhookCerts makes a CA and a serving certificate for 127.0.0.1 signed by
// it, and returns the CA in PEM for the webhook's caBundle.
func webhookCerts(t *testing.T) ([]byte, tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "webhook-test-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key}
}
