// Package service is the front door of the injector-webhook service: its
// flags and their validation, and the Run wiring that builds the Kubernetes
// and cert-authority clients, obtains the serving certificate, and runs the
// long-running parts under one errgroup: the namespace and MeshConfig
// informers, the bootstrap Secret writer and reconciler, the serving
// certificate renewal and trust bundle watch, the HTTPS admission server
// and the webhook configuration keeper.
package service

import (
	"context"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/libs/cpcert"
	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/kube"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/inject"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/validate"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/webhook"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/webhookconfig"
)

// Name is the service's name: the binary, its --help, and the name of its
// meters.
const Name = "injector-webhook"

// summary is the first paragraph of --help.
const summary = "OSM's sidecar injector: a mutating admission webhook that adds the iptables init container,\n" +
	"the Envoy sidecar and its bootstrap Secret (with a client certificate signed by the\n" +
	"cert-authority) to pods created in namespaces labelled openservicemesh.io/monitored-by.\n\n" +
	"Serving certificate: by default the cert-authority issues it through Bootstrap (credential\n" +
	"--ca-bootstrap-token-file, lifetime --control-plane-cert-ttl) for the webhook Service's DNS\n" +
	"names; it is also the injector's client certificate for the CA. The injector renews it at\n" +
	"half its lifetime and keeps the webhook configuration's caBundle equal to the CA's trust\n" +
	"bundle. --tls-cert-file and --tls-key-file, when set, take precedence: those files are served\n" +
	"and --tls-ca-file becomes the caBundle; the cert-authority is then not asked.\n\n" +
	"Bootstrap Secrets: admission signs and writes nothing. The Secret waits in memory until its pod\n" +
	"exists; its certificate is issued and the Secret written then (the kubelet retries the volume\n" +
	"mount until it exists), so a request for a pod that never appears costs no signature. A reconciler\n" +
	"reissues Secrets lost to a restart, renews each Secret's certificate at half its lifetime and\n" +
	"its ca.crt when the trust bundle changes (the sidecar reloads them through file-based SDS),\n" +
	"makes each Secret owned by its pod so that it is deleted with it, and deletes Secrets left\n" +
	"without a pod (see --bootstrap-*). It acts on one replica only, elected with a Lease\n" +
	"(--leader-elect, --lease-*); the others stand by and take over when the leader stops.\n\n" +
	"Policy validation: on the same listener, at " + validatePath + ", a validating webhook refuses a policy\n" +
	"(TrafficTarget, HTTPRouteGroup, TCPRoute, TrafficSplit, Egress) or MeshConfig that the policy-compiler\n" +
	"would reject, naming the object, the field and the reason in the compiler's words. Its\n" +
	"ValidatingWebhookConfiguration (--validating-webhook-config-name) follows the trust bundle like the\n" +
	"mutating one; --validation-failure-policy is Ignore by default: the compiler checks every object again.\n\n" +
	"The MeshConfig (--mesh-config in --namespace) also sets the injector's own log level\n" +
	"(spec.observability.osmLogLevel) and whether /debug/pprof/ is served on the admin listener\n" +
	"(enableDebugServer), live."

// Options holds the test overrides of the service. The injector's tests
// drive it through its flags alone, so it has no fields; its zero value is
// production.
type Options struct{}

// Spec is the service for app.Main.
func Spec(o Options) app.Spec {
	c := &Config{}
	return app.Spec{
		Name:     Name,
		Summary:  summary,
		Flags:    c.Flags,
		Validate: c.Validate,
		Run:      func(ctx context.Context, rt *app.Runtime) error { return run(ctx, rt, *c, o) },
	}
}

// run builds the parts and runs them until ctx ends or one fails.
// Readiness: the namespace and MeshConfig informers have listed, the
// serving certificate is held (and, from the CA, the trust bundle), the
// admission server listens, and the webhook configuration (when managed)
// has been written.
func run(ctx context.Context, rt *app.Runtime, c Config, _ Options) error {
	log := rt.Log
	kube.BridgeKlog(log)
	kc, err := newKubeClients(c)
	if err != nil {
		return err
	}
	// The CA is verified against --ca-trust-file and the trust bundle
	// watched last, both read at each connection, so the injector reaches
	// a CA that a root rotation switched to the new root.
	var watched atomic.Pointer[cpcert.Bundle]
	c.CA.ExtraRoots = func() []byte {
		if b := watched.Load(); b != nil {
			roots, _ := b.RootsPEM()
			return roots
		}
		return nil
	}
	ca, err := dialCAs(rt, c)
	if err != nil {
		return err
	}
	// The trust bundle: the webhook configuration's caBundle (with a
	// CA-issued serving certificate) and the bootstrap Secrets' ca.crt.
	bundle := cpcert.NewBundle(cav1.NewCertificateAuthorityServiceClient(ca.sign), log, 0, 0)
	watched.Store(bundle)
	serving, err := servingTLS(ctx, log, c, ca, bundle)
	if err != nil {
		return err
	}
	meter := rt.Meter()
	m, err := newAdmissionMetrics(meter)
	if err != nil {
		return err
	}
	cert := newCertifier(ctx, c, m, ca, bundle)
	writer, err := newWriter(meter, kc.typed, cert, c.Secrets)
	if err != nil {
		return err
	}

	namespaces := newNamespaceCache(kc.typed)
	base := baseSettings(c)
	wh, err := newWebhook(c, base, m, namespaces, writer, cert)
	if err != nil {
		return err
	}
	rec, err := newReconciler(meter, log, kc.typed, kc.metadata, wh, writer, cert, bundle, c.Secrets)
	if err != nil {
		return err
	}
	lead, err := newLeader(meter, c.Secrets.Election, kc.typed, c.ControlPlane.Namespace, c.ControlPlane.PodName, rec, log)
	if err != nil {
		return err
	}
	meshConfig, err := newMeshConfigWatch(kc.dynamic, c.ControlPlane.Namespace, c.ControlPlane.MeshConfig, base, wh, log)
	if err != nil {
		return err
	}
	if is, ok := cert.Issuer.(lifetimeSetter); ok {
		meshConfig.lifetime = is // proxyless pods' service certificates
	}
	meshConfig.observe = rt.ApplyObservability // log level, pprof
	handler := &webhook.Handler{Admit: wh, Log: log, MaxBody: int64(c.MaxBody),
		Observe: func(outcome string, d time.Duration) {
			attrs := metric.WithAttributes(attribute.String("outcome", outcome))
			m.admissions.Add(ctx, 1, attrs)
			m.latency.Record(ctx, d.Seconds(), attrs)
		}}
	validator := &webhook.Handler{Log: log, MaxBody: int64(c.MaxBody),
		Admit: validate.New(validate.Options{MeshConfigNamespace: c.ControlPlane.Namespace, MeshConfigName: c.ControlPlane.MeshConfig}),
		Observe: func(outcome string, d time.Duration) {
			attrs := metric.WithAttributes(attribute.String("outcome", outcome))
			m.validations.Add(ctx, 1, attrs)
			m.validationLatency.Record(ctx, d.Seconds(), attrs)
		}}
	srv := newAdmissionServer(c.ListenAddr, map[string]http.Handler{admissionPath: handler, validatePath: validator}, serving.tls, log)

	// The admission server's check comes first: it fails until the parts
	// run, so /readyz cannot pass while the others are being registered.
	checks := []check{{"webhook", srv.Check}, {"namespaces", namespaces.Check}, {"meshconfig", meshConfig.Check}}
	checks = append(checks, serving.checks...)
	serverDone := make(chan struct{})
	parts := []part{
		{name: "namespace informer", p: namespaces},
		{name: "meshconfig watch", p: meshConfig},
		{name: "bootstrap secret reconciler", p: rec},
		{name: "bootstrap secret leader election", p: lead},
		// The writer stops only after the admission server has: the
		// Secrets of the last admissions are flushed too.
		{name: "bootstrap secret writer", p: stopsAfter{p: writer, after: serverDone}},
		// It listens once what admission reads has been listed.
		{name: "admission server", done: serverDone,
			p: startsAfter{p: srv, after: []<-chan struct{}{namespaces.Synced(), meshConfig.Synced()}}},
	}
	parts = append(parts, serving.parts...)
	parts = append(parts, part{name: "trust bundle watch", p: bundle})
	if c.WebhookConfigName != "" || c.ValidatingConfigName != "" {
		keeper := newKeeper(c, kc, serving, log)
		checks = append(checks, check{"webhook-configuration", keeper.Check})
		// The apiserver calls the webhooks (injection failing closed)
		// from the first write on, so the keeper starts once the server
		// listens.
		parts = append(parts, part{name: "webhook configuration keeper",
			p: startsAfter{p: keeper, after: []<-chan struct{}{srv.Serving()}}})
	}
	for _, ch := range checks {
		rt.Health.AddReadyCheck(ch.name, ch.fn)
	}
	rt.Health.Started()
	return runParts(ctx, parts...)
}

// check is a named readiness check.
type check struct {
	name string
	fn   app.Check
}

// baseSettings are the injection settings from the flags, which a
// MeshConfig overrides field by field.
func baseSettings(c Config) inject.Settings {
	return inject.Settings{
		MeshName: c.ControlPlane.MeshName, SidecarImage: c.SidecarImage, InitImage: c.InitImage,
		LogLevel: c.EnvoyLogLevel, ProxyUID: int64(c.ProxyUID),
	}
}

// newCertifier returns what issues the bootstrap certificates, over
// ca.sign, with the roots of bundle.
func newCertifier(ctx context.Context, c Config, m *admissionMetrics, ca *caConns, bundle *cpcert.Bundle) *webhook.Certifier {
	return &webhook.Certifier{
		Issuer:      &webhook.CAIssuer{Client: cav1.NewCertificateAuthorityServiceClient(ca.sign), TTL: c.CertTTL, Roots: bundle.RootsPEM},
		TrustDomain: c.ControlPlane.TrustDomain,
		Observe: func(d time.Duration, err error) {
			m.issuance.Record(ctx, d.Seconds(), metric.WithAttributes(attribute.Bool("error", err != nil)))
		},
	}
}

// newWebhook returns the admission logic: it reads namespaces from ns and
// hands Secrets, without certificates, to store; cert issues the
// certificates of the Secrets the reconciler recreates.
func newWebhook(c Config, base inject.Settings, m *admissionMetrics,
	ns webhook.NamespaceGetter, store webhook.SecretStore, cert *webhook.Certifier) (*webhook.Webhook, error) {
	host, port, err := xdsHostPort(c.XDSAddr)
	if err != nil {
		return nil, app.FlagError("xds-addr", "%v", err)
	}
	san := c.XDSServerSAN
	if san == "" {
		san = identity.ControlPlaneURI(c.ControlPlane.TrustDomain, identity.RoleXDSEdge).String()
	}
	return webhook.New(webhook.Options{
		Settings: base,
		XDSHost:  host, XDSPort: port, XDSServerSAN: san,
		Namespaces: ns,
		Secrets:    store,
		Certifier:  cert,
		ObservePhase: func(phase string, d time.Duration) {
			m.phases.Record(context.Background(), d.Seconds(), metric.WithAttributes(attribute.String("phase", phase)))
		},
	}), nil
}

// newKeeper returns the keeper of --webhook-config-name and
// --validating-webhook-config-name, whose caBundle follows the serving
// certificate's.
func newKeeper(c Config, kc *kubeClients, serving *serving, log *logrus.Entry) *webhookconfig.Keeper {
	return webhookconfig.NewKeeper(webhookconfig.KeeperOptions{Client: kc.typed,
		Config: webhookconfig.Options{Name: c.WebhookConfigName, MeshName: c.ControlPlane.MeshName,
			ControlPlaneNamespace: c.ControlPlane.Namespace, ServiceNamespace: c.ControlPlane.Namespace,
			ServiceName: c.WebhookServiceName, ServicePort: int32(c.WebhookServicePort), Path: admissionPath, URL: c.WebhookURL},
		Validating: webhookconfig.ValidatingOptions{Name: c.ValidatingConfigName, MeshName: c.ControlPlane.MeshName,
			ControlPlaneNamespace: c.ControlPlane.Namespace, ServiceNamespace: c.ControlPlane.Namespace,
			ServiceName: c.WebhookServiceName, ServicePort: int32(c.WebhookServicePort), Path: validatePath,
			URL: urlAt(c.WebhookURL, validatePath), FailurePolicy: admissionregistrationv1.FailurePolicyType(c.ValidationFailurePolicy)},
		CABundle: serving.caBundle, Changed: serving.bundleChanged, Log: log})
}

// urlAt is --webhook-url (the injection webhook's URL) with its path
// replaced by path, for the validating webhook on the same listener.
// Empty stays empty.
func urlAt(webhookURL, path string) string {
	if webhookURL == "" {
		return ""
	}
	u, err := url.Parse(webhookURL)
	if err != nil {
		return webhookURL // refused by Validate already
	}
	u.Path = path
	return u.String()
}
