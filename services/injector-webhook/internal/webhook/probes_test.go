package webhook

import (
	"strings"
	"testing"

	"github.com/openservicemesh/osm/services/injector-webhook/internal/bootstrap"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/inject"
)

// TestBootstrapPassesHTTPSAndGRPCProbesThrough: the probes recorded in a
// pod's annotation reach the bootstrap with their protocol, so an HTTPS or
// gRPC probe gets a TCP passthrough listener and an HTTP one an HTTP route.
func TestBootstrapPassesHTTPSAndGRPCProbesThrough(t *testing.T) {
	w, _, _ := newWebhook()
	for _, tc := range []struct {
		protocol    string
		passthrough bool
	}{{inject.ProbeHTTPS, true}, {inject.ProbeGRPC, true}, {"", false}} {
		sec, err := w.BootstrapSecret(t.Context(), "bookstore", "bookstore", "uuid-"+tc.protocol, false, []inject.OriginalProbe{
			{Container: "app", Kind: "readiness", Protocol: tc.protocol, Port: 8443, Path: "/ready", ListenPort: inject.PortReadiness, ProbePath: "/ready"}})
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(string(sec.Data[bootstrap.FileBootstrap]), "envoy.filters.network.tcp_proxy"); got != tc.passthrough {
			t.Errorf("protocol %q: tcp passthrough listener %t, want %t", tc.protocol, got, tc.passthrough)
		}
	}
}

// TestBootstrapServesTCPProbes: a TCP probe recorded in a pod's annotation
// gets the bootstrap's health-check listener and a health-checked cluster
// of the app's port, not a probe listener of its kind.
func TestBootstrapServesTCPProbes(t *testing.T) {
	w, _, _ := newWebhook()
	sec, err := w.BootstrapSecret(t.Context(), "bookstore", "bookstore", "uuid-tcp", false, []inject.OriginalProbe{
		{Container: "cache", Kind: "liveness", Protocol: inject.ProbeTCP, Port: 6379, ListenPort: inject.PortHealthcheck, ProbePath: inject.HealthcheckPath}})
	if err != nil {
		t.Fatal(err)
	}
	b := string(sec.Data[bootstrap.FileBootstrap])
	for _, want := range []string{`"osm-healthcheck"`, "health_check.v3.HealthCheck", `"osm-tcp-probe-6379"`, `"tcpHealthCheck"`} {
		if !strings.Contains(b, want) {
			t.Errorf("bootstrap lacks %s", want)
		}
	}
	if strings.Contains(b, "osm-liveness-probe") {
		t.Error("the TCP liveness probe got the HTTP probe listener")
	}
}
