package bootstrap

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	healthcheckv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/health_check/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// tcpProbes are a pod's probes with TCP ones: two kinds on one port share
// a cluster, a third port gets its own; an HTTP probe keeps its listener.
func tcpProbes() []Probe {
	return []Probe{
		{Kind: "liveness", ListenPort: 15904, ProbePath: "/osm-healthcheck", Port: 6379, TCP: true},
		{Kind: "readiness", ListenPort: 15904, ProbePath: "/osm-healthcheck", Port: 6379, TCP: true},
		{Kind: "startup", ListenPort: 15904, ProbePath: "/osm-healthcheck", Port: 5432, TCP: true},
		{Kind: "liveness", ListenPort: 15901, ProbePath: "/osm-liveness-probe", Port: 14001, Path: "/healthz"},
	}
}

// TestTCPProbeHealthcheckGolden: the pod's TCP probes get one listener on
// 15904 whose health_check filters answer GET /osm-healthcheck with header
// Original-Tcp-Port: <port> from the health of a local cluster of that
// port, checked by a connect-only TCP health check every second (also
// without traffic); anything else gets the route's 404.
func TestTCPProbeHealthcheckGolden(t *testing.T) {
	c := config()
	c.Probes = tcpProbes()
	b, err := Build(c) // Build runs ValidateAll
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "tcpprobes.bootstrap.json")
	if *update {
		out, err := Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, append(out, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	var want bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(raw, &want); err != nil {
		t.Fatalf("golden file does not parse as a Bootstrap: %v", err)
	}
	if !proto.Equal(b, &want) {
		got, _ := Marshal(b)
		t.Errorf("bootstrap differs from %s:\n%s", path, got)
	}

	// The clusters: one per probed port, on loopback, connect-only checks.
	checked := map[string]uint32{}
	for _, cl := range b.GetStaticResources().GetClusters() {
		if len(cl.GetHealthChecks()) == 0 {
			continue
		}
		hc := cl.GetHealthChecks()[0]
		tcp := hc.GetTcpHealthCheck()
		if tcp == nil || tcp.GetSend() != nil || len(tcp.GetReceive()) != 0 {
			t.Fatalf("cluster %s: health check %v, want a connect-only TCP check", cl.GetName(), hc)
		}
		if hc.GetNoTrafficInterval().AsDuration() != hc.GetInterval().AsDuration() || hc.GetInterval().AsDuration() > tcpProbeInterval ||
			hc.GetHealthyThreshold().GetValue() != 1 || hc.GetUnhealthyThreshold().GetValue() != 1 {
			t.Fatalf("cluster %s: health check timing %v", cl.GetName(), hc)
		}
		sa := cl.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
		if sa.GetAddress() != "127.0.0.1" {
			t.Fatalf("cluster %s checks %s", cl.GetName(), sa.GetAddress())
		}
		checked[cl.GetName()] = sa.GetPortValue()
	}
	if len(checked) != 2 || checked["osm-tcp-probe-6379"] != 6379 || checked["osm-tcp-probe-5432"] != 5432 {
		t.Fatalf("health-checked clusters %v, want osm-tcp-probe-5432 and osm-tcp-probe-6379", checked)
	}

	// The listener: one health_check filter per port, naming its cluster.
	hcm := healthcheckHCM(t, b)
	byPort := map[string]string{}
	for _, f := range hcm.GetHttpFilters() {
		var hc healthcheckv3.HealthCheck
		if f.GetTypedConfig().UnmarshalTo(&hc) != nil {
			continue
		}
		if hc.GetPassThroughMode().GetValue() || hc.GetPassThroughMode() == nil {
			t.Fatalf("filter %s passes requests through", f.GetName())
		}
		var port, path string
		for _, h := range hc.GetHeaders() {
			switch h.GetName() {
			case ":path":
				path = h.GetStringMatch().GetExact()
			case "original-tcp-port":
				port = h.GetStringMatch().GetExact()
			}
		}
		if path != "/osm-healthcheck" || len(hc.GetClusterMinHealthyPercentages()) != 1 ||
			hc.GetClusterMinHealthyPercentages()["osm-tcp-probe-"+port].GetValue() != 100 {
			t.Fatalf("filter %s: path %q port %q clusters %v", f.GetName(), path, port, hc.GetClusterMinHealthyPercentages())
		}
		byPort[port] = f.GetName()
	}
	if len(byPort) != 2 || byPort["6379"] == "" || byPort["5432"] == "" {
		t.Fatalf("health_check filters by port %v", byPort)
	}
	filters := hcm.GetHttpFilters()
	if last := filters[len(filters)-1].GetName(); last != "envoy.filters.http.router" {
		t.Fatalf("last filter %s, want the router", last)
	}
	routes := hcm.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()
	if len(routes) != 1 || routes[0].GetDirectResponse().GetStatus() != 404 {
		t.Fatalf("routes %v, want one 404 for requests no filter answers", routes)
	}

	// The renderer's cache keeps a TCP probe apart from an HTTP one.
	r := NewRenderer(4)
	c.ProxyUUID = "a"
	withTCP, err := r.Render(c)
	if err != nil {
		t.Fatal(err)
	}
	c.Probes = []Probe{{Kind: "liveness", ListenPort: 15904, ProbePath: "/osm-healthcheck", Port: 6379}}
	proxied, err := r.Render(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(withTCP) == string(proxied) {
		t.Fatal("the renderer served a TCP probe's bootstrap for an HTTP one")
	}
}

// TestTCPProbesShareOneListener: TCP probes served on different ports or
// paths cannot share the listener, and the error names the probe.
func TestTCPProbesShareOneListener(t *testing.T) {
	c := config()
	c.Probes = tcpProbes()
	c.Probes[2].ListenPort = 15905
	if _, err := Build(c); err == nil || !strings.Contains(err.Error(), "tcp probe startup") {
		t.Fatalf("err = %v, want one naming the startup probe", err)
	}
}

func healthcheckHCM(t *testing.T, b *bootstrapv3.Bootstrap) *hcmv3.HttpConnectionManager {
	t.Helper()
	for _, l := range b.GetStaticResources().GetListeners() {
		if l.GetName() != "osm-healthcheck" {
			continue
		}
		if p := l.GetAddress().GetSocketAddress().GetPortValue(); p != 15904 {
			t.Fatalf("health-check listener on %d", p)
		}
		var hcm hcmv3.HttpConnectionManager
		if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
			t.Fatal(err)
		}
		if err := hcm.ValidateAll(); err != nil {
			t.Fatal(err)
		}
		return &hcm
	}
	t.Fatal("no osm-healthcheck listener")
	return nil
}
