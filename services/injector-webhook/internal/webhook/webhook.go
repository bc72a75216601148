// Package webhook is the injector's admission logic and its HTTPS handler:
// it decides whether to inject a pod, builds the patch and hands the pod's
// bootstrap Secret, without a certificate yet, to a SecretStore.
//
// Admission signs nothing and writes nothing. The kube-apiserver is not the
// only client that can reach the webhook's listener, and a forged
// AdmissionReview must cost no key, no CA signature and no Secret: the
// store (package secrets) holds the Secret in memory until the pod it was
// made for has been stored, and only then has a Certifier issue its
// certificate and writes it. A Secret whose pod never appears is dropped,
// unsigned. The reconciler (package reconcile) repairs what a crash leaves
// behind and renews the certificates. The bootstrap is still rendered here
// (bootstrap.Renderer: built, validated and serialized once per workload
// shape), so an invalid one denies the pod.
package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	sigsjson "sigs.k8s.io/json"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/bootstrap"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/inject"
)

// Certificate is an issued certificate with its key and the roots to trust.
type Certificate struct {
	ChainPEM, KeyPEM, TrustPEM []byte
}

// NamespaceGetter reads a namespace (from an informer cache).
type NamespaceGetter interface {
	Get(ctx context.Context, name string) (*corev1.Namespace, error)
}

// SecretStore takes a bootstrap Secret that has no certificate yet, for a
// pod running as service account sa. It returns before the Secret exists:
// the certificate is issued, and the Secret written, once the pod does.
type SecretStore interface {
	Store(ctx context.Context, s *corev1.Secret, sa string) error
}

// Labels of the bootstrap Secrets the injector makes.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "osm-injector"
)

// Options configure a Webhook.
type Options struct {
	Settings inject.Settings
	// XDSHost, XDSPort and XDSServerSAN locate and authenticate the edges.
	XDSHost      string
	XDSPort      uint32
	XDSServerSAN string
	Namespaces   NamespaceGetter
	Secrets      SecretStore
	// Certifier issues the certificates of the Secrets BootstrapSecret
	// makes (the reconciler's); admission issues none.
	Certifier *Certifier
	// NewUUID makes proxy UUIDs; nil uses random UUIDs.
	NewUUID func() string
	// ObservePhase, when set, is told how long each step of an injecting
	// admission took: "decide" (decode the pod, read its namespace,
	// decide), "patch" (build the patch), "bootstrap" (render the Envoy
	// bootstrap and the Secret), "store" (hand the Secret over) and
	// "encode" (the patch as JSON).
	ObservePhase func(phase string, d time.Duration)
}

// Webhook admits pods.
type Webhook struct {
	o         Options
	settings  atomic.Pointer[inject.Settings]
	bootstrap *bootstrap.Renderer
	// sds are the SDS files every bootstrap Secret carries, or sdsErr.
	sds    map[string][]byte
	sdsErr error
}

// New returns a Webhook.
func New(o Options) *Webhook {
	if o.NewUUID == nil {
		o.NewUUID = uuid.NewString
	}
	// One template per workload shape (namespace, service account,
	// probes) in use; a miss costs one bootstrap build.
	w := &Webhook{o: o, bootstrap: bootstrap.NewRenderer(4096)}
	w.sds, w.sdsErr = bootstrap.SDSFiles(inject.BootstrapMount)
	w.SetSettings(o.Settings)
	return w
}

// SetSettings replaces the injection settings (when the MeshConfig changes);
// admissions already running keep the settings they started with.
func (w *Webhook) SetSettings(s inject.Settings) { w.settings.Store(&s) }

// Result is the outcome of one admission, for logging and metrics.
type Result struct {
	// Outcome is "injected", "skipped", "already-injected" or "denied".
	Outcome string
	// Reason explains a skip or a denial.
	Reason string
}

func deny(uid string, msg string) (*admissionv1.AdmissionResponse, Result) {
	return &admissionv1.AdmissionResponse{UID: types.UID(uid), Allowed: false,
		Result: &metav1.Status{Status: metav1.StatusFailure, Message: msg, Reason: metav1.StatusReasonBadRequest, Code: 400}}, Result{"denied", msg}
}

func allow(uid string, outcome, reason string) (*admissionv1.AdmissionResponse, Result) {
	return &admissionv1.AdmissionResponse{UID: types.UID(uid), Allowed: true}, Result{outcome, reason}
}

// Admit handles one AdmissionRequest for a pod.
func (w *Webhook) Admit(ctx context.Context, req *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, Result) {
	uid := string(req.UID)
	t := time.Now()
	if req.Kind.Group != "" || req.Kind.Kind != "Pod" || req.Operation != admissionv1.Create {
		return allow(uid, "skipped", fmt.Sprintf("%s %s is not a pod creation", req.Operation, req.Kind.Kind))
	}
	var pod corev1.Pod
	// Case-sensitive, as the JSON patch paths are: "speC" is not "spec".
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(req.Object.Raw, &pod); err != nil {
		return deny(uid, fmt.Sprintf("osm injector: decode pod: %v", err))
	}
	nsName := req.Namespace
	if nsName == "" {
		nsName = pod.Namespace
	}
	ns, err := w.o.Namespaces.Get(ctx, nsName)
	if err != nil {
		return deny(uid, fmt.Sprintf("osm injector: namespace %s: %v", nsName, err))
	}
	settings := *w.settings.Load()
	d, err := inject.Decide(settings, ns, &pod)
	if err != nil {
		return deny(uid, "osm injector: "+err.Error())
	}
	if !d.Inject {
		return allow(uid, "skipped", d.Reason)
	}
	if inject.Injected(&pod) {
		return allow(uid, "already-injected", "the pod already has the sidecar")
	}
	if len(pod.Spec.Containers) == 0 {
		return deny(uid, fmt.Sprintf("osm injector: pod %s/%s: spec.containers is empty", nsName, podName(&pod)))
	}
	proxyless, err := inject.Proxyless(&pod)
	if err != nil {
		return deny(uid, fmt.Sprintf("osm injector: pod %s/%s: %v", nsName, podName(&pod), err))
	}
	t = w.phase("decide", t)
	proxyUUID := w.o.NewUUID()
	build := func(r inject.Request) (inject.Result, error) { return inject.Build(settings, r) }
	if proxyless {
		build = inject.BuildProxyless
	}
	res, err := build(inject.Request{Pod: &pod, Namespace: ns, ProxyUUID: proxyUUID})
	if err != nil {
		return deny(uid, fmt.Sprintf("osm injector: pod %s/%s: %v", nsName, podName(&pod), err))
	}
	if !hasKey(req.Object.Raw, "metadata") {
		// The patch sets labels and annotations under /metadata.
		res.Ops = append([]inject.Op{{Op: "add", Path: "/metadata", Value: map[string]any{}}}, res.Ops...)
	}
	t = w.phase("patch", t)
	// A dry run must have no side effect: the patch is computed and no
	// Secret is stored.
	if req.DryRun == nil || !*req.DryRun {
		if t, err = w.storeBootstrap(ctx, t, nsName, &pod, proxyUUID, proxyless, res); err != nil {
			return deny(uid, fmt.Sprintf("osm injector: pod %s/%s: %v", nsName, podName(&pod), err))
		}
	}
	patch, err := json.Marshal(res.Ops)
	if err != nil {
		return deny(uid, fmt.Sprintf("osm injector: encode patch: %v", err))
	}
	w.phase("encode", t)
	pt := admissionv1.PatchTypeJSONPatch
	return &admissionv1.AdmissionResponse{UID: types.UID(uid), Allowed: true, Patch: patch, PatchType: &pt},
		Result{"injected", d.Reason}
}

func podName(p *corev1.Pod) string {
	if p.Name != "" {
		return p.Name
	}
	return p.GenerateName + "<generated>"
}

// phase reports the step that started at start and returns now, the start
// of the next.
func (w *Webhook) phase(name string, start time.Time) time.Time {
	now := time.Now()
	if w.o.ObservePhase != nil {
		w.o.ObservePhase(name, now.Sub(start))
	}
	return now
}

// storeBootstrap renders the pod's bootstrap Secret, without a
// certificate, and hands it to the store.
func (w *Webhook) storeBootstrap(ctx context.Context, t time.Time, ns string, pod *corev1.Pod, proxyUUID string, proxyless bool, res inject.Result) (time.Time, error) {
	sa := serviceAccount(pod.Spec.ServiceAccountName)
	secret, err := w.secret(ns, sa, proxyUUID, proxyless, res.Probes)
	if err != nil {
		return t, err
	}
	t = w.phase("bootstrap", t)
	err = w.o.Secrets.Store(ctx, secret, sa)
	return w.phase("store", t), err
}

// BootstrapSecret issues the certificates for the identity of service
// account sa in namespace ns and returns the bootstrap Secret of proxy
// proxyUUID, whose sidecar serves probes, or, when proxyless, of a
// proxyless gRPC pod. The reconciler calls it to replace a Secret that was
// never written, for a pod that exists.
func (w *Webhook) BootstrapSecret(ctx context.Context, ns, sa, proxyUUID string, proxyless bool, probes []inject.OriginalProbe) (*corev1.Secret, error) {
	sa = serviceAccount(sa)
	secret, err := w.secret(ns, sa, proxyUUID, proxyless, probes)
	if err != nil {
		return nil, err
	}
	if err := w.o.Certifier.Certify(ctx, secret, sa); err != nil {
		return nil, err
	}
	return secret, nil
}

func serviceAccount(sa string) string {
	if sa == "" {
		return "default"
	}
	return sa
}

// secret returns the bootstrap Secret of proxy proxyUUID, its bootstrap
// rendered and validated, without a certificate.
func (w *Webhook) secret(ns, sa, proxyUUID string, proxyless bool, probes []inject.OriginalProbe) (*corev1.Secret, error) {
	if proxyless {
		return w.grpcSecret(ns, sa, proxyUUID)
	}
	bprobes := make([]bootstrap.Probe, len(probes))
	for i, p := range probes {
		bprobes[i] = bootstrap.Probe{Kind: p.Kind, ListenPort: uint32(p.ListenPort), ProbePath: p.ProbePath, Port: uint32(p.Port), Path: p.Path,
			Passthrough: p.Protocol == inject.ProbeHTTPS || p.Protocol == inject.ProbeGRPC, TCP: p.Protocol == inject.ProbeTCP}
	}
	raw, err := w.bootstrap.Render(bootstrap.Config{
		ProxyUUID: proxyUUID, Namespace: ns, ServiceAccount: sa,
		XDSHost: w.o.XDSHost, XDSPort: w.o.XDSPort, XDSServerSAN: w.o.XDSServerSAN,
		ConfigDir: inject.BootstrapMount, AdminPort: inject.PortAdmin, MetricsPort: inject.PortMetrics, Probes: bprobes,
	})
	if err != nil {
		return nil, err
	}
	if w.sdsErr != nil {
		return nil, w.sdsErr
	}
	data := map[string][]byte{bootstrap.FileBootstrap: raw}
	for name, b := range w.sds {
		data[name] = b // shared and never modified
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: inject.BootstrapSecretName(proxyUUID), Namespace: ns,
			Labels: map[string]string{layout.LabelProxyUUID: proxyUUID, LabelManagedBy: ManagedBy},
		},
		Type: corev1.SecretTypeOpaque,
		Data: data,
	}, nil
}

// grpcSecret returns the bootstrap Secret of a proxyless gRPC pod, with
// gRPC's bootstrap and without certificates: those come from Certify, and
// the SPIFFE bundle with them.
func (w *Webhook) grpcSecret(ns, sa, proxyUUID string) (*corev1.Secret, error) {
	raw, err := bootstrap.GRPC(bootstrap.GRPCConfig{
		ProxyUUID: proxyUUID, Namespace: ns, ServiceAccount: sa,
		XDSHost: w.o.XDSHost, XDSPort: w.o.XDSPort, ConfigDir: inject.ProxylessMount,
	})
	if err != nil {
		return nil, err
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: inject.BootstrapSecretName(proxyUUID), Namespace: ns,
			Labels: map[string]string{layout.LabelProxyUUID: proxyUUID, LabelManagedBy: ManagedBy, LabelProxyless: layout.ProxylessGRPC},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{bootstrap.FileBootstrap: raw},
	}, nil
}

// hasKey reports whether the JSON object raw has key at its top level.
func hasKey(raw []byte, key string) bool {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return false
	}
	_, ok := top[key]
	return ok
}
