package service

import (
	"strings"
	"testing"
	"time"

	"github.com/openservicemesh/osm/libs/cpcert"
)

func validConfig() Config {
	return Config{MeshName: "osm", TrustDomain: "cluster.local", ControlPlaneNamespace: "osm-system",
		CACertFile: "c", CAKeyFile: "k", CATrustFile: "t", WebhookConfigName: "osm-sidecar-injector",
		WebhookServiceName: "osm-injector",
		ServingConfig: ServingConfig{WebhookServicePort: 443, ClusterDomain: "cluster.local",
			Bootstrap: cpcert.Credential{File: "/token", Type: "service-account"}},
		ProxyUID: 1500, CertTTL: 24 * 60 * 60 * 1e9, MaxBody: 1 << 20, KubeQPS: 1, KubeBurst: 1, XDSAddr: "xds:15128",
		Secrets: SecretsConfig{Writers: 4, QueueSize: 1024, OwnerWait: 30 * time.Second, MissingGrace: 30 * time.Second, OrphanGrace: 5 * time.Minute}}
}

func TestServingCertificateFlags(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Config)
		flag string // "" means valid
	}{
		{"from the CA", func(*Config) {}, ""},
		{"from files", func(c *Config) { c.TLSCertFile, c.TLSKeyFile, c.TLSCAFile = "crt", "key", "ca" }, ""},
		{"files without the key", func(c *Config) { c.TLSCertFile = "crt" }, "--tls-key-file"},
		{"key without the file", func(c *Config) { c.TLSKeyFile = "key" }, "--tls-cert-file"},
		{"files without a caBundle", func(c *Config) { c.TLSCertFile, c.TLSKeyFile = "crt", "key" }, "--tls-ca-file"},
		{"caBundle file with a CA certificate", func(c *Config) { c.TLSCAFile = "ca" }, "--tls-ca-file"},
		{"no bootstrap token", func(c *Config) { c.Bootstrap.File = "" }, "--ca-bootstrap-token-file"},
		{"unknown token type", func(c *Config) { c.Bootstrap.Type = "jwt" }, "--ca-bootstrap-token-type"},
		{"no Service", func(c *Config) { c.WebhookServiceName = "" }, "--webhook-service-name"},
		{"bad port", func(c *Config) { c.WebhookServicePort = 0 }, "--webhook-service-port"},
		{"short TTL", func(c *Config) { c.ServingCertTTL = 1e9 }, "--serving-cert-ttl"},
		{"URL host not in the certificate", func(c *Config) { c.WebhookURL = "https://127.0.0.1:9443/mutate-pod" }, "--webhook-url"},
		{"URL at the Service", func(c *Config) { c.WebhookURL = "https://osm-injector.osm-system.svc:9443/mutate-pod" }, ""},
		// The CA client certificate: files, or the certificate from Bootstrap.
		{"CA client certificate from Bootstrap", func(c *Config) { c.CACertFile, c.CAKeyFile = "", "" }, ""},
		{"CA client key without its file", func(c *Config) { c.CACertFile = "" }, "--ca-client-cert-file"},
		{"CA client file without its key", func(c *Config) { c.CAKeyFile = "" }, "--ca-client-key-file"},
		{"serving files and no CA client files", func(c *Config) {
			c.TLSCertFile, c.TLSKeyFile, c.TLSCAFile, c.CACertFile, c.CAKeyFile = "crt", "key", "ca", "", ""
		}, "--ca-client-cert-file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.edit(&c)
			err := c.Validate()
			switch {
			case tc.flag == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.flag != "" && (err == nil || !strings.Contains(err.Error(), tc.flag)):
				t.Fatalf("got %v, want an error naming %s", err, tc.flag)
			}
		})
	}
}

func TestServingDNSNames(t *testing.T) {
	c := validConfig()
	got := strings.Join(c.ServingDNSNames(), " ")
	if got != "osm-injector.osm-system osm-injector.osm-system.svc osm-injector.osm-system.svc.cluster.local" {
		t.Fatalf("names %s", got)
	}
}
