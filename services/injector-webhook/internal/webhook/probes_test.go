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
