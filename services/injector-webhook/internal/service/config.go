package service

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/kube"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/webhook"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/webhookconfig"
)

// Kubernetes API rate defaults: each injected pod costs a Secret create
// (and, without an owner, an ownerReference patch), and client-go's
// default of 5 requests per second would time admissions out under load.
const (
	defaultKubeQPS   = 200
	defaultKubeBurst = 400
)

// Config is the injector's configuration (its flags).
type Config struct {
	// ServingConfig is the serving certificate's part (serving.go).
	ServingConfig
	// ControlPlane is --namespace, --mesh-name, --mesh-config,
	// --trust-domain and --cluster-domain.
	ControlPlane app.ControlPlane
	// Kube is --kubeconfig, --kube-api-qps and --kube-api-burst.
	Kube kube.Client
	// CA is the cert-authority client (--ca-*), with the Bootstrap
	// credential and --control-plane-cert-ttl of the serving certificate.
	CA                caclient.Config
	ListenAddr        string
	WebhookConfigName string
	// ValidatingConfigName and ValidationFailurePolicy are the policy
	// kinds' ValidatingWebhookConfiguration.
	ValidatingConfigName    string
	ValidationFailurePolicy string
	WebhookServiceName      string
	WebhookURL              string
	SidecarImage            string
	InitImage               string
	EnvoyLogLevel           string
	ProxyUID                int
	XDSAddr                 string
	XDSServerSAN            string
	CertTTL                 time.Duration
	MaxBody                 int
	Secrets                 SecretsConfig
}

// Flags registers the configuration's flags.
func (c *Config) Flags(f *app.Flags) {
	c.ControlPlane.Flags(f, app.CPNamespace|app.CPPodName|app.CPMeshName|app.CPMeshConfig|app.CPTrustDomain|app.CPClusterDomain)
	f.Deprecated("control-plane-namespace", "namespace")
	f.Deprecated("meshconfig-name", "mesh-config")
	c.Kube.Flags(f, defaultKubeQPS, defaultKubeBurst)
	c.CA.Flags(f)
	f.Deprecated("serving-cert-ttl", "control-plane-cert-ttl")
	c.ServingConfig.flags(f)
	f.String(&c.ListenAddr, "listen-addr", ":9443", "HTTPS address of the admission webhook")
	f.String(&c.WebhookConfigName, "webhook-config-name", "osm-sidecar-injector", "MutatingWebhookConfiguration the injector owns; empty leaves it unmanaged")
	f.String(&c.ValidatingConfigName, "validating-webhook-config-name", "osm-policy-validator", "ValidatingWebhookConfiguration of the policy kinds (SMI and MeshConfig) the injector owns, served at "+validatePath+" on --listen-addr; empty leaves it unmanaged (the path is served either way)")
	f.String(&c.ValidationFailurePolicy, "validation-failure-policy", string(webhookconfig.DefaultValidationFailurePolicy), "failurePolicy of the policy validation webhook: Ignore (an object the webhook could not judge is admitted, and the policy-compiler rejects it if invalid) or Fail (policy edits are refused while the injector is unreachable)")
	f.String(&c.WebhookServiceName, "webhook-service-name", "osm-injector", "Service (in --namespace) in front of the webhook; the CA-issued serving certificate names it: <name>.<ns>, <name>.<ns>.svc, <name>.<ns>.svc.<cluster-domain>")
	f.String(&c.WebhookURL, "webhook-url", "", "call the injection webhook at this URL instead of the Service (for local clusters), and the policy validation webhook at the same host and port on "+validatePath+"; with a CA-issued certificate its host must be one of the Service's names")
	f.String(&c.SidecarImage, "sidecar-image", "envoyproxy/envoy:v1.36.0", "Envoy image, unless the MeshConfig sets spec.sidecar.image")
	f.String(&c.InitImage, "init-image", "openservicemesh/init:v1.3.0", "init container image with iptables, unless the MeshConfig sets spec.sidecar.initContainerImage")
	f.String(&c.EnvoyLogLevel, "envoy-log-level", "error", "Envoy log level, unless the MeshConfig sets spec.sidecar.logLevel")
	f.Int(&c.ProxyUID, "proxy-uid", 1500, "user id the sidecar runs as; its traffic is not redirected")
	f.String(&c.XDSAddr, "xds-addr", "osm-xds-edge.osm-system.svc.cluster.local:15128", "address of the xds-edge Service that sidecars connect to")
	f.String(&c.XDSServerSAN, "xds-server-san", "", "URI SAN sidecars require of the edges; empty means spiffe://<trust-domain>/osm/xds-edge, the edges' control-plane identity")
	f.Duration(&c.CertTTL, "cert-ttl", 24*time.Hour, "lifetime of the bootstrap xDS client certificates, and of a proxyless gRPC pod's service certificate while the MeshConfig (--mesh-config) sets no spec.certificate.serviceCertValidityDuration, which wins for those (the CA may shorten it)")
	f.Int(&c.MaxBody, "max-body", webhook.DefaultMaxBody, "largest AdmissionReview body accepted, in bytes; larger ones get 413")
	c.Secrets.Flags(f)
}

// Validate checks the configuration; errors name the flag.
func (c *Config) Validate() error {
	for _, validate := range []func() error{c.ControlPlane.Validate, c.Kube.Validate, c.CA.Validate} {
		if err := validate(); err != nil {
			return err
		}
	}
	if !c.CA.HasClientCertFile() && c.ServesFromFiles() {
		return app.FlagError("ca-client-cert-file", "is required with --tls-cert-file: without a certificate from the cert-authority, the injector has nothing else to present to it")
	}
	if err := c.validateServing(); err != nil {
		return err
	}
	switch c.ValidationFailurePolicy {
	case "Ignore", "Fail":
	default:
		return app.FlagError("validation-failure-policy", "must be Ignore or Fail, got %q", c.ValidationFailurePolicy)
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
