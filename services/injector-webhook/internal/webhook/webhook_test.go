package webhook

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc/xds"
	"google.golang.org/protobuf/encoding/protojson"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/bootstrap"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/inject"
)

// Hand-written fakes of the webhook's small interfaces.

type namespaces map[string]*corev1.Namespace

func (n namespaces) Get(_ context.Context, name string) (*corev1.Namespace, error) {
	if ns, ok := n[name]; ok {
		return ns, nil
	}
	return nil, errors.New("not found")
}

type secrets struct {
	mu      sync.Mutex
	created []*corev1.Secret
	sas     []string
}

func (s *secrets) Store(_ context.Context, sec *corev1.Secret, sa string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.created = append(s.created, sec)
	s.sas = append(s.sas, sa)
	return nil
}

type issuer struct {
	ids    []identity.ID
	usages []identity.Usage
}

// testChain is a throwaway certificate valid from an hour ago for two
// hours.
var testChain = func() []byte {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}()

func (i *issuer) Issue(_ context.Context, id identity.ID, u identity.Usage) (*Certificate, error) {
	i.ids = append(i.ids, id)
	i.usages = append(i.usages, u)
	return &Certificate{ChainPEM: testChain, KeyPEM: []byte("key"), TrustPEM: []byte("roots")}, nil
}

func newWebhook() (*Webhook, *secrets, *issuer) {
	s, iss := &secrets{}, &issuer{}
	w := New(Options{
		Settings: inject.Settings{MeshName: "osm", SidecarImage: "envoy", InitImage: "init", LogLevel: "error", ProxyUID: 1500},
		XDSHost:  "osm-xds-edge.osm-system.svc", XDSPort: 15128, XDSServerSAN: "spiffe://cluster.local/osm/xds-edge",
		Namespaces: namespaces{
			"bookstore":   {ObjectMeta: metav1.ObjectMeta{Name: "bookstore", Labels: map[string]string{layout.LabelMonitoredBy: "osm"}}},
			"kube-system": {ObjectMeta: metav1.ObjectMeta{Name: "kube-system"}},
		},
		Secrets: s, Certifier: &Certifier{Issuer: iss, TrustDomain: "cluster.local"}, NewUUID: func() string { return "uuid-1" },
	})
	return w, s, iss
}

func podJSON(ns string, annotations map[string]string) []byte {
	pod := corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "bookstore-1", Namespace: ns, Annotations: annotations},
		Spec:       corev1.PodSpec{ServiceAccountName: "bookstore", Containers: []corev1.Container{{Name: "app", Image: "bookstore"}}},
	}
	b, _ := json.Marshal(pod)
	return b
}

func request(ns string, raw []byte, dryRun bool) *admissionv1.AdmissionRequest {
	return &admissionv1.AdmissionRequest{
		UID: "req-1", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, Operation: admissionv1.Create,
		Namespace: ns, Object: runtime.RawExtension{Raw: raw}, DryRun: &dryRun,
	}
}

func TestAdmitInjectsAndStoresBootstrap(t *testing.T) {
	w, secs, iss := newWebhook()
	resp, res := w.Admit(t.Context(), request("bookstore", podJSON("bookstore", nil), false))
	if !resp.Allowed || res.Outcome != "injected" || resp.PatchType == nil || len(resp.Patch) == 0 {
		t.Fatalf("response %+v, result %+v", resp, res)
	}
	// Admission issues nothing (issue 15, item 7): the store has the
	// certificate issued once the pod exists.
	if len(iss.ids) != 0 {
		t.Fatalf("admission issued certificates for %v", iss.ids)
	}
	if len(secs.created) != 1 || secs.sas[0] != "bookstore" {
		t.Fatalf("%d secrets stored (service accounts %v)", len(secs.created), secs.sas)
	}
	sec := secs.created[0]
	if sec.Name != "envoy-bootstrap-uuid-1" || sec.Namespace != "bookstore" {
		t.Fatalf("secret %s/%s", sec.Namespace, sec.Name)
	}
	for _, f := range []string{bootstrap.FileCert, bootstrap.FileKey, bootstrap.FileCA} {
		if _, ok := sec.Data[f]; ok {
			t.Fatalf("admission put %s into the secret", f)
		}
	}
	// The SDS files the bootstrap reads the certificate through.
	for _, f := range []string{bootstrap.FileSDSCert, bootstrap.FileSDSCA} {
		if len(sec.Data[f]) == 0 {
			t.Fatalf("the secret has no %s", f)
		}
	}
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(sec.Data[bootstrap.FileBootstrap], &b); err != nil || b.GetNode().GetId() != "uuid-1" {
		t.Fatalf("bootstrap node id %q (%v)", b.GetNode().GetId(), err)
	}

	// The patched pod, admitted again, is left alone.
	patch, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatal(err)
	}
	injected, err := patch.Apply(podJSON("bookstore", nil))
	if err != nil {
		t.Fatal(err)
	}
	again, res := w.Admit(t.Context(), request("bookstore", injected, false))
	if !again.Allowed || len(again.Patch) != 0 || res.Outcome != "already-injected" {
		t.Fatalf("second admission: %+v %+v", again, res)
	}
	if len(secs.created) != 1 {
		t.Fatal("second admission created another secret")
	}
}

func TestAdmitDryRunHasNoSideEffect(t *testing.T) {
	w, secs, iss := newWebhook()
	resp, _ := w.Admit(t.Context(), request("bookstore", podJSON("bookstore", nil), true))
	if !resp.Allowed || len(resp.Patch) == 0 {
		t.Fatalf("dry run: %+v", resp)
	}
	if len(secs.created) != 0 || len(iss.ids) != 0 {
		t.Fatalf("dry run created %d secrets and issued %d certificates", len(secs.created), len(iss.ids))
	}
}

func TestAdmitSkipsAndDenies(t *testing.T) {
	w, secs, _ := newWebhook()
	cases := []struct {
		name    string
		req     *admissionv1.AdmissionRequest
		allowed bool
		outcome string
		msg     string
	}{
		{"kube-system", request("kube-system", podJSON("kube-system", nil), false), true, "skipped", "not monitored"},
		{"opted out", request("bookstore", podJSON("bookstore", map[string]string{layout.AnnotationSidecarInjection: "disabled"}), false), true, "skipped", "disabled"},
		{"bad annotation", request("bookstore", podJSON("bookstore", map[string]string{inject.AnnotationOutboundPorts: "redis"}), false), false, "denied", inject.AnnotationOutboundPorts},
		{"unknown namespace", request("nowhere", podJSON("nowhere", nil), false), false, "denied", "namespace nowhere"},
		{"not json", request("bookstore", []byte("{"), false), false, "denied", "decode pod"},
	}
	for _, c := range cases {
		resp, res := w.Admit(t.Context(), c.req)
		if resp.Allowed != c.allowed || res.Outcome != c.outcome || !strings.Contains(res.Reason, c.msg) {
			t.Errorf("%s: allowed=%v outcome=%q reason=%q", c.name, resp.Allowed, res.Outcome, res.Reason)
		}
		if !c.allowed && !strings.Contains(resp.Result.Message, c.msg) {
			t.Errorf("%s: denial message %q does not say %q", c.name, resp.Result.Message, c.msg)
		}
	}
	if len(secs.created) != 0 {
		t.Fatal("a skipped or denied pod got a secret")
	}
}

type panicky struct{}

func (panicky) Admit(context.Context, *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, Result) {
	panic("boom")
}

func post(t *testing.T, h http.Handler, contentType string, body []byte) (*http.Response, *admissionv1.AdmissionReview) {
	t.Helper()
	rec := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPost, "/mutate-pod", bytes.NewReader(body))
	r.Header.Set("Content-Type", contentType)
	h.ServeHTTP(rec, r)
	resp := rec.Result()
	var review admissionv1.AdmissionReview
	if resp.StatusCode == http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		if err := json.Unmarshal(b, &review); err != nil {
			t.Fatalf("response is not an AdmissionReview: %v", err)
		}
	}
	return resp, &review
}

func TestHandlerNegativeInputs(t *testing.T) {
	w, _, _ := newWebhook()
	log := logrus.New()
	log.SetOutput(io.Discard)
	h := &Handler{Admit: w, Log: logrus.NewEntry(log), MaxBody: 1 << 20}

	big := bytes.Repeat([]byte(" "), 2<<20)
	if resp, _ := post(t, h, "application/json", big); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized body: %d, want 413", resp.StatusCode)
	}
	if resp, _ := post(t, h, "text/plain", []byte("{}")); resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("wrong content type: %d, want 415", resp.StatusCode)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/mutate-pod", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d, want 405", rec.Code)
	}
	for name, body := range map[string]string{"malformed": `{"request":`, "nil request": `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`} {
		resp, review := post(t, h, "application/json", []byte(body))
		if resp.StatusCode != http.StatusOK || review.Response == nil || review.Response.Allowed || review.Response.Result.Message == "" {
			t.Errorf("%s: status %d response %+v, want a denial with a message", name, resp.StatusCode, review.Response)
		}
	}
	// A panic below the handler becomes a denial, not a crash.
	ph := &Handler{Admit: panicky{}, Log: logrus.NewEntry(log)}
	review := admissionv1.AdmissionReview{Request: request("bookstore", podJSON("bookstore", nil), false)}
	body, _ := json.Marshal(review)
	resp, out := post(t, ph, "application/json; charset=utf-8", body)
	if resp.StatusCode != http.StatusOK || out.Response == nil || out.Response.Allowed || out.Response.UID != "req-1" {
		t.Fatalf("panic: status %d response %+v", resp.StatusCode, out.Response)
	}
}

func TestAdmitReportsItsPhases(t *testing.T) {
	for _, dryRun := range []bool{false, true} {
		w, _, _ := newWebhook()
		var got []string
		w.o.ObservePhase = func(phase string, d time.Duration) {
			if d < 0 {
				t.Errorf("phase %s took %s", phase, d)
			}
			got = append(got, phase)
		}
		if resp, _ := w.Admit(t.Context(), request("bookstore", podJSON("bookstore", nil), dryRun)); !resp.Allowed {
			t.Fatal(resp.Result.Message)
		}
		want := []string{"decide", "patch", "bootstrap", "store", "encode"}
		if dryRun {
			want = []string{"decide", "patch", "encode"}
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("dry run %v: phases %v, want %v", dryRun, got, want)
		}
	}
}

func TestBootstrapSecretAndCertifyIssueForThePodIdentity(t *testing.T) {
	w, _, iss := newWebhook()
	sec, err := w.BootstrapSecret(t.Context(), "bookstore", "", "uuid-9", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(iss.ids) != 1 || iss.ids[0].String() != "spiffe://cluster.local/ns/bookstore/sa/default" {
		t.Fatalf("issued for %v", iss.ids)
	}
	if string(sec.Data[bootstrap.FileCert]) != string(testChain) || string(sec.Data[bootstrap.FileKey]) != "key" ||
		string(sec.Data[bootstrap.FileCA]) != "roots" || len(sec.Data[bootstrap.FileBootstrap]) == 0 {
		t.Fatalf("secret data %v", sec.Data)
	}
	// The annotations mirror the certificate, for the renewal.
	leaf, _ := Leaf(testChain)
	if sec.Annotations[AnnotationCertNotAfter] != leaf.NotAfter.UTC().Format(time.RFC3339) ||
		sec.Annotations[AnnotationCertNotBefore] != leaf.NotBefore.UTC().Format(time.RFC3339) ||
		sec.Annotations[AnnotationTrust] != TrustHash([]byte("roots")) {
		t.Fatalf("annotations %v", sec.Annotations)
	}
}

// TestAdmitProxyless: a pod annotated openservicemesh.io/proxyless: grpc
// gets the proxyless patch and a Secret marked proxyless holding gRPC's
// bootstrap, which gRPC-Go's xDS bootstrap parser takes; another value is
// refused with a message naming the pod and the annotation.
func TestAdmitProxyless(t *testing.T) {
	w, secs, _ := newWebhook()
	pod := podJSON("bookstore", map[string]string{layout.NodeMetadataProxyless: "grpc"})
	resp, res := w.Admit(t.Context(), request("bookstore", pod, false))
	if !resp.Allowed || res.Outcome != "injected" || len(resp.Patch) == 0 {
		t.Fatalf("response %+v, result %+v", resp, res)
	}
	if strings.Contains(string(resp.Patch), `"name":"`+inject.SidecarName+`"`) || strings.Contains(string(resp.Patch), "initContainers") {
		t.Fatalf("proxyless patch has the sidecar or the init container: %s", resp.Patch)
	}
	if len(secs.created) != 1 || !Proxyless(secs.created[0]) {
		t.Fatalf("secrets stored: %+v", secs.created)
	}
	raw := secs.created[0].Data[bootstrap.FileBootstrap]
	if _, err := xds.NewXDSResolverWithConfigForTesting(raw); err != nil {
		t.Fatalf("gRPC refuses the bootstrap: %v\n%s", err, raw)
	}
	var b struct {
		Node struct {
			ID       string            `json:"id"`
			Metadata map[string]string `json:"metadata"`
		} `json:"node"`
		Providers map[string]struct {
			Plugin string `json:"plugin_name"`
		} `json:"certificate_providers"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	if b.Node.ID != "uuid-1" || b.Node.Metadata[layout.NodeMetadataProxyless] != "grpc" || b.Providers[layout.CertProviderInstance].Plugin != "file_watcher" {
		t.Fatalf("bootstrap %s", raw)
	}

	bad := podJSON("bookstore", map[string]string{layout.NodeMetadataProxyless: "envoy"})
	resp, res = w.Admit(t.Context(), request("bookstore", bad, false))
	if resp.Allowed || resp.Result == nil || res.Outcome != "denied" || !strings.Contains(resp.Result.Message, "bookstore/bookstore-1") ||
		!strings.Contains(resp.Result.Message, "openservicemesh.io/proxyless") || !strings.Contains(resp.Result.Message, `"envoy"`) {
		t.Fatalf("proxyless: envoy: allowed=%v result %+v", resp.Allowed, res)
	}
	if len(secs.created) != 1 {
		t.Fatal("a refused pod stored a Secret")
	}
}

// TestCertifyProxylessIssuesBothCertificates: a proxyless Secret gets the
// xDS client certificate and the service certificate, and the SPIFFE
// bundle of its roots.
func TestCertifyProxylessIssuesBothCertificates(t *testing.T) {
	w, _, iss := newWebhook()
	sec, err := w.BootstrapSecret(t.Context(), "bookstore", "bookstore", "uuid-7", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(iss.usages) != 2 || iss.usages[0] != identity.UsageXDSClient || iss.usages[1] != identity.UsageService {
		t.Fatalf("usages issued %v", iss.usages)
	}
	for _, f := range []string{bootstrap.FileCert, bootstrap.FileKey, bootstrap.FileServiceCert, bootstrap.FileServiceKey, bootstrap.FileCA} {
		if len(sec.Data[f]) == 0 {
			t.Fatalf("no %s in the secret", f)
		}
	}
}
