package service

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/webhook"
)

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

// xdsHostPort splits --xds-addr into the host and port the bootstrap
// names.
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
