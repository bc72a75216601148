// Package injector wires the injector-webhook service: Kubernetes clients
// and informers, the CA client, the MeshConfig watch, the HTTPS admission
// server, the MutatingWebhookConfiguration it owns, and the bootstrap
// Secret writer and reconciler.
package injector

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/cpcert"
	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/telemetry"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/inject"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/webhook"
)

// MeshConfigGVR is OSM's MeshConfig resource.
var MeshConfigGVR = schema.GroupVersionResource{Group: "config.openservicemesh.io", Version: "v1alpha1", Resource: "meshconfigs"}

// Config is the injector's configuration (its flags).
type Config struct {
	// ServingConfig is the serving certificate's part (serving.go).
	ServingConfig
	Kubeconfig            string
	MeshName              string
	TrustDomain           string
	ControlPlaneNamespace string
	MeshConfigName        string
	ListenAddr            string
	WebhookConfigName     string
	WebhookServiceName    string
	WebhookURL            string
	CAAddr                string
	CAServerName          string
	CACertFile            string
	CAKeyFile             string
	CATrustFile           string
	SidecarImage          string
	InitImage             string
	EnvoyLogLevel         string
	ProxyUID              int
	XDSAddr               string
	XDSServerSAN          string
	CertTTL               time.Duration
	MaxBody               int
	KubeQPS               int
	KubeBurst             int
	Secrets               SecretsConfig
}

// Flags registers the configuration's flags.
func (c *Config) Flags(f *app.Flags) {
	c.ServingConfig.flags(f)
	f.String(&c.Kubeconfig, "kubeconfig", "", "kubeconfig file; empty uses the in-cluster service account")
	f.String(&c.MeshName, "mesh-name", "osm", "mesh name: namespaces labelled openservicemesh.io/monitored-by=<mesh-name> are injected")
	f.String(&c.TrustDomain, "trust-domain", "cluster.local", "SPIFFE trust domain of workload identities")
	f.String(&c.ControlPlaneNamespace, "control-plane-namespace", "osm-system", "namespace of the control plane; never injected")
	f.String(&c.MeshConfigName, "meshconfig-name", "osm-mesh-config", "MeshConfig (in the control-plane namespace) whose sidecar and traffic settings apply")
	f.String(&c.ListenAddr, "listen-addr", ":9443", "HTTPS address of the admission webhook")
	f.String(&c.WebhookConfigName, "webhook-config-name", "osm-sidecar-injector", "MutatingWebhookConfiguration the injector owns; empty leaves it unmanaged")
	f.String(&c.WebhookServiceName, "webhook-service-name", "osm-injector", "Service (in the control-plane namespace) in front of the webhook; the CA-issued serving certificate names it: <name>.<ns>, <name>.<ns>.svc, <name>.<ns>.svc.<cluster-domain>")
	f.String(&c.WebhookURL, "webhook-url", "", "call the webhook at this URL instead of the Service (for local clusters); with a CA-issued certificate its host must be one of the Service's names")
	f.String(&c.CAAddr, "ca-addr", "osm-cert-authority.osm-system.svc:15443", "gRPC address of the cert-authority")
	f.String(&c.CAServerName, "ca-server-name", "", "name to verify the cert-authority's certificate against; empty uses the host of --ca-addr")
	f.String(&c.CACertFile, "ca-client-cert-file", "", "override: client certificate for the cert-authority (the injector's role); by default the injector presents its own certificate from Bootstrap (the serving certificate, which carries the role)")
	f.String(&c.CAKeyFile, "ca-client-key-file", "", "client key for the cert-authority")
	f.String(&c.CATrustFile, "ca-trust-file", "", "roots that verify the cert-authority's serving certificate")
	f.String(&c.SidecarImage, "sidecar-image", "envoyproxy/envoy:v1.36.0", "Envoy image, unless the MeshConfig sets spec.sidecar.image")
	f.String(&c.InitImage, "init-image", "openservicemesh/init:v1.3.0", "init container image with iptables, unless the MeshConfig sets spec.sidecar.initContainerImage")
	f.String(&c.EnvoyLogLevel, "envoy-log-level", "error", "Envoy log level, unless the MeshConfig sets spec.sidecar.logLevel")
	f.Int(&c.ProxyUID, "proxy-uid", 1500, "user id the sidecar runs as; its traffic is not redirected")
	f.String(&c.XDSAddr, "xds-addr", "osm-xds-edge.osm-system.svc.cluster.local:15128", "address of the xds-edge Service that sidecars connect to")
	f.String(&c.XDSServerSAN, "xds-server-san", "", "URI SAN sidecars require of the edges; empty means spiffe://<trust-domain>/osm/xds-edge, the edges' control-plane identity")
	f.Duration(&c.CertTTL, "cert-ttl", 24*time.Hour, "lifetime of the bootstrap client certificates (the CA may shorten it)")
	f.Int(&c.MaxBody, "max-body", webhook.DefaultMaxBody, "largest AdmissionReview body accepted, in bytes; larger ones get 413")
	f.Int(&c.KubeQPS, "kube-api-qps", 200, "Kubernetes API requests per second the injector may make (a Secret create and an owner patch per injected pod)")
	f.Int(&c.KubeBurst, "kube-api-burst", 400, "burst of Kubernetes API requests above --kube-api-qps")
	c.Secrets.Flags(f)
}

// Validate checks the configuration; errors name the flag.
func (c *Config) Validate() error {
	for _, f := range []struct{ name, v string }{
		{"ca-trust-file", c.CATrustFile},
		{"mesh-name", c.MeshName}, {"trust-domain", c.TrustDomain}, {"control-plane-namespace", c.ControlPlaneNamespace},
	} {
		if f.v == "" {
			return app.FlagError(f.name, "is required")
		}
	}
	if (c.CACertFile == "") != (c.CAKeyFile == "") {
		if c.CACertFile == "" {
			return app.FlagError("ca-client-cert-file", "is required with --ca-client-key-file")
		}
		return app.FlagError("ca-client-key-file", "is required with --ca-client-cert-file")
	}
	if c.CACertFile == "" && c.ServesFromFiles() {
		return app.FlagError("ca-client-cert-file", "is required with --tls-cert-file: without a certificate from the cert-authority, the injector has nothing else to present to it")
	}
	if err := c.validateServing(); err != nil {
		return err
	}
	if c.ProxyUID <= 0 {
		return app.FlagError("proxy-uid", "must be positive, got %d", c.ProxyUID)
	}
	if c.CertTTL < time.Minute {
		return app.FlagError("cert-ttl", "must be at least 1m, got %s", c.CertTTL)
	}
	if c.MaxBody < 4096 {
		return app.FlagError("max-body", "must be at least 4096 bytes, got %d", c.MaxBody)
	}
	if c.KubeQPS < 1 {
		return app.FlagError("kube-api-qps", "must be at least 1, got %d", c.KubeQPS)
	}
	if c.KubeBurst < c.KubeQPS {
		return app.FlagError("kube-api-burst", "must be at least --kube-api-qps (%d), got %d", c.KubeQPS, c.KubeBurst)
	}
	if _, _, err := xdsHostPort(c.XDSAddr); err != nil {
		return app.FlagError("xds-addr", "%v", err)
	}
	return c.Secrets.Validate()
}

func xdsHostPort(addr string) (string, uint32, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return "", 0, fmt.Errorf("port %q is not 1-65535", port)
	}
	return host, uint32(p), nil
}

// Run serves admissions until ctx ends.
func Run(ctx context.Context, rt *app.Runtime, c Config) error {
	log := rt.Log
	restCfg, err := restConfig(c.Kubeconfig)
	if err != nil {
		return err
	}
	// client-go's default of 5 requests per second would throttle the
	// Secret creations and time admissions out under load.
	restCfg.QPS, restCfg.Burst = float32(c.KubeQPS), c.KubeBurst
	// Built-in types go as protobuf: the pod informer decodes every
	// injected pod, on the cores admission runs on, and JSON costs several
	// times as much. (Custom resources, through dyn, stay JSON.)
	protoCfg := rest.CopyConfig(restCfg)
	protoCfg.ContentType = "application/vnd.kubernetes.protobuf"
	protoCfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	cs, err := kubernetes.NewForConfig(protoCfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubernetes dynamic client: %w", err)
	}
	// Bootstrap and the trust-bundle watch need no client certificate; the
	// serving certificate they yield is what the injector presents to the
	// CA for Sign (unless --ca-client-cert-file overrides it), so it is
	// obtained before anything can sign.
	bootConn, err := dialCA(c, false, nil)
	if err != nil {
		return err
	}
	rt.OnShutdown("ca-bootstrap-client", func(context.Context) error { return bootConn.Close() })
	var own atomic.Pointer[cpcert.Cert] // set by servingTLS before anything uses caConn
	caConn, err := dialCA(c, true, func(i *tls.CertificateRequestInfo) (*tls.Certificate, error) {
		if cert := own.Load(); cert != nil {
			return cert.GetClientCertificate(i)
		}
		return &tls.Certificate{}, nil
	})
	if err != nil {
		return err
	}
	rt.OnShutdown("ca-client", func(context.Context) error { return caConn.Close() })
	serving, err := servingTLS(ctx, rt, c, bootConn, caConn, &own)
	if err != nil {
		return err
	}

	meter := rt.Telemetry.Meter("osm/injector-webhook")
	admissions, _ := meter.Int64Counter("osm_injector_admissions", metric.WithDescription("admission reviews handled, by outcome"))
	latency, _ := meter.Float64Histogram("osm_injector_admission_seconds", metric.WithDescription("admission latency"),
		metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(telemetry.LatencyBuckets...))
	issuance, _ := meter.Float64Histogram("osm_injector_cert_issuance_seconds", metric.WithDescription("bootstrap certificate issuance latency"),
		metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(telemetry.LatencyBuckets...))
	phases, _ := meter.Float64Histogram("osm_injector_admission_phase_seconds",
		metric.WithDescription("time of each step of an injecting admission: decide, patch, issue, bootstrap, store, encode"),
		metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(telemetry.LatencyBuckets...))

	writer, err := newWriter(meter, cs, c.Secrets)
	if err != nil {
		return err
	}
	host, port, _ := xdsHostPort(c.XDSAddr)
	san := c.XDSServerSAN
	if san == "" {
		san = identity.ControlPlaneURI(c.TrustDomain, identity.RoleXDSEdge).String()
	}
	base := inject.Settings{
		MeshName: c.MeshName, SidecarImage: c.SidecarImage, InitImage: c.InitImage,
		LogLevel: c.EnvoyLogLevel, ProxyUID: int64(c.ProxyUID),
	}
	factory := informers.NewSharedInformerFactory(cs, 10*time.Minute)
	nsInformer := factory.Core().V1().Namespaces()
	nsLister := nsInformer.Lister()
	wh := webhook.New(webhook.Options{
		Settings: base, TrustDomain: c.TrustDomain,
		XDSHost: host, XDSPort: port, XDSServerSAN: san,
		Namespaces: namespaceGetter{nsLister},
		Secrets:    writer,
		Issuer:     &webhook.CAIssuer{Client: cav1.NewCertificateAuthorityServiceClient(caConn), TTL: c.CertTTL},
		Observe: func(d time.Duration, err error) {
			issuance.Record(ctx, d.Seconds(), metric.WithAttributes(attribute.Bool("error", err != nil)))
		},
		ObservePhase: func(phase string, d time.Duration) {
			phases.Record(ctx, d.Seconds(), metric.WithAttributes(attribute.String("phase", phase)))
		},
	})
	// The writer outlives ctx: it is stopped, and its queue flushed, after
	// the admission server has stopped taking requests (the deferred calls
	// run after srv.Shutdown, this one last).
	writerCtx, stopWriter := context.WithCancel(context.WithoutCancel(ctx))
	writerDone := make(chan error, 1)
	go func() { writerDone <- writer.Start(writerCtx) }()
	defer func() {
		stopWriter()
		if err := <-writerDone; err != nil {
			log.WithError(err).Warn("bootstrap secret writer stopped with secrets unwritten")
		}
	}()
	md, err := metadata.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubernetes metadata client: %w", err)
	}
	rec, err := newReconciler(meter, log, cs, md, wh, writer, c.Secrets)
	if err != nil {
		return err
	}
	// Its own context, so that an early return (say, --listen-addr in use)
	// stops it too.
	recCtx, stopRec := context.WithCancel(ctx)
	recDone := make(chan error, 1)
	go func() { recDone <- rec.Start(recCtx) }()
	defer func() {
		stopRec()
		if err := <-recDone; err != nil {
			log.WithError(err).Warn("bootstrap secret reconciler stopped")
		}
	}()

	mcFactory := dynamicinformer.NewFilteredDynamicSharedInformerFactory(dyn, 10*time.Minute, c.ControlPlaneNamespace, nil)
	mcInformer := mcFactory.ForResource(MeshConfigGVR).Informer()
	apply := func(obj any) {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok || u.GetName() != c.MeshConfigName {
			return
		}
		s, err := base.WithMeshConfig(u)
		if err != nil {
			log.WithError(err).WithField("name", u.GetName()).Warn("meshconfig rejected; keeping the previous injection settings")
			return
		}
		wh.SetSettings(s)
		log.WithFields(logrus.Fields{"name": u.GetName(), "sidecar_image": s.SidecarImage}).Info("injection settings updated from meshconfig")
	}
	_, err = mcInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    apply,
		UpdateFunc: func(_, obj any) { apply(obj) },
		DeleteFunc: func(obj any) {
			if u, ok := obj.(*unstructured.Unstructured); ok && u.GetName() == c.MeshConfigName {
				wh.SetSettings(base)
				log.WithField("name", u.GetName()).Info("meshconfig deleted; injection settings back to the flags")
			}
		},
	})
	if err != nil {
		return err
	}
	// Shutdown waits for the informers, which stop with infCtx: cancel it
	// first, or an early return (say, --listen-addr in use) hangs here.
	infCtx, stopInformers := context.WithCancel(ctx)
	factory.Start(infCtx.Done())
	mcFactory.Start(infCtx.Done())
	defer factory.Shutdown()
	defer mcFactory.Shutdown()
	defer stopInformers()
	var synced atomic.Bool
	rt.Health.AddReadyCheck("informers", func(context.Context) error {
		if !synced.Load() {
			return errors.New("namespace and meshconfig informers not synced")
		}
		return nil
	})
	if !cache.WaitForCacheSync(ctx.Done(), nsInformer.Informer().HasSynced, mcInformer.HasSynced) {
		return ctx.Err()
	}
	synced.Store(true)

	handler := &webhook.Handler{Admit: wh, Log: log, MaxBody: int64(c.MaxBody),
		Observe: func(outcome string, d time.Duration) {
			attrs := metric.WithAttributes(attribute.String("outcome", outcome))
			admissions.Add(ctx, 1, attrs)
			latency.Record(ctx, d.Seconds(), attrs)
		}}
	mux := http.NewServeMux()
	mux.Handle("/mutate-pod", handler)
	ln, err := net.Listen("tcp", c.ListenAddr)
	if err != nil {
		return app.FlagError("listen-addr", "cannot listen: %v", err)
	}
	srv := &http.Server{Handler: mux, TLSConfig: serving.tls, ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout: 10 * time.Second, WriteTimeout: 15 * time.Second, MaxHeaderBytes: 64 << 10}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.ServeTLS(ln, "", "") }()
	log.WithField("listen_addr", ln.Addr().String()).Info("admission webhook serving")
	rt.Health.AddReadyCheck("webhook", func(context.Context) error { return nil })

	if c.WebhookConfigName != "" {
		go keepWebhookConfig(ctx, log, cs, c, serving.caBundle, serving.bundleChanged)
	}
	select {
	case err := <-serveErr:
		return fmt.Errorf("webhook server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, app.FlagError("kubeconfig", "not in a cluster and no kubeconfig given: %v", err)
		}
		return cfg, nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, app.FlagError("kubeconfig", "%v", err)
	}
	return cfg, nil
}

// dialCA connects to the cert-authority. For signing (and the bundle
// watch) it presents --ca-client-cert-file when set, else the certificate
// own returns; for Bootstrap (signing false), nothing.
func dialCA(c Config, signing bool, own func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) (*grpc.ClientConn, error) {
	tc, err := caclient.TLSFromFile(c.CATrustFile, c.CAServerName)
	if err != nil {
		return nil, app.FlagError("ca-trust-file", "%v", err)
	}
	switch {
	case !signing:
	case c.CACertFile != "":
		pair, err := tls.LoadX509KeyPair(c.CACertFile, c.CAKeyFile)
		if err != nil {
			return nil, app.FlagError("ca-client-cert-file", "%v", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	case own != nil:
		tc.GetClientCertificate = own
	default:
		return nil, app.FlagError("ca-client-cert-file", "is required: the serving certificate comes from files, so there is no certificate from the cert-authority to present")
	}
	conn, err := grpc.NewClient(c.CAAddr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		return nil, app.FlagError("ca-addr", "%v", err)
	}
	return conn, nil
}

// namespaceGetter reads namespaces from the informer cache.
type namespaceGetter struct{ l corelisters.NamespaceLister }

func (g namespaceGetter) Get(_ context.Context, name string) (*corev1.Namespace, error) {
	return g.l.Get(name)
}
