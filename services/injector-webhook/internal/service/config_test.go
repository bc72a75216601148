package service

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/kube"
)

// validConfig is a valid configuration whose files (the CA's trust and
// client files "t", "c" and "k", the Bootstrap token "token", and the
// serving files "crt", "key" and "ca" that cases set) exist in the test's
// working directory, a fresh one.
func validConfig(t *testing.T) Config {
	t.Helper()
	t.Chdir(t.TempDir())
	for _, f := range []string{"t", "c", "k", "token", "crt", "key", "ca"} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return Config{
		ControlPlane: app.ControlPlane{MeshName: "osm", TrustDomain: "cluster.local", Namespace: "osm-system", ClusterDomain: "cluster.local"},
		Kube:         kube.Client{QPS: 1, Burst: 1},
		CA: caclient.Config{Addr: caclient.DefaultAddr, CertFile: "c", KeyFile: "k", TrustFile: "t",
			Credential: caclient.Credential{File: "token", Type: "service-account"}},
		WebhookConfigName: "osm-sidecar-injector", ValidatingConfigName: "osm-policy-validator", ValidationFailurePolicy: "Ignore",
		WebhookServiceName: "osm-injector",
		ServingConfig:      ServingConfig{WebhookServicePort: 443},
		ProxyUID:           1500, CertTTL: 24 * 60 * 60 * 1e9, MaxBody: 1 << 20, XDSAddr: "xds:15128",
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
		{"no bootstrap token", func(c *Config) { c.CA.Credential.File = "" }, "--ca-bootstrap-token-file"},
		{"unknown token type", func(c *Config) { c.CA.Credential.Type = "jwt" }, "--ca-bootstrap-token-type"},
		{"no Service", func(c *Config) { c.WebhookServiceName = "" }, "--webhook-service-name"},
		{"bad port", func(c *Config) { c.WebhookServicePort = 0 }, "--webhook-service-port"},
		{"short TTL", func(c *Config) { c.CA.OwnCertTTL = 1e9 }, "--control-plane-cert-ttl"},
		{"URL host not in the certificate", func(c *Config) { c.WebhookURL = "https://127.0.0.1:9443/mutate-pod" }, "--webhook-url"},
		{"URL at the Service", func(c *Config) { c.WebhookURL = "https://osm-injector.osm-system.svc:9443/mutate-pod" }, ""},
		{"validation failing closed", func(c *Config) { c.ValidationFailurePolicy = "Fail" }, ""},
		{"unknown validation failure policy", func(c *Config) { c.ValidationFailurePolicy = "fail" }, "--validation-failure-policy"},
		// The CA client certificate: files, or the certificate from Bootstrap.
		{"CA client certificate from Bootstrap", func(c *Config) { c.CA.CertFile, c.CA.KeyFile = "", "" }, ""},
		{"CA client key without its file", func(c *Config) { c.CA.CertFile = "" }, "--ca-client-cert-file"},
		{"CA client file without its key", func(c *Config) { c.CA.KeyFile = "" }, "--ca-client-key-file"},
		{"serving files and no CA client files", func(c *Config) {
			c.TLSCertFile, c.TLSKeyFile, c.TLSCAFile, c.CA.CertFile, c.CA.KeyFile = "crt", "key", "ca", "", ""
		}, "--ca-client-cert-file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig(t)
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
	c := validConfig(t)
	got := strings.Join(c.ServingDNSNames(), " ")
	if got != "osm-injector.osm-system osm-injector.osm-system.svc osm-injector.osm-system.svc.cluster.local" {
		t.Fatalf("names %s", got)
	}
}
