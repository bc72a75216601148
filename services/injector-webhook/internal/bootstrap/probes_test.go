package bootstrap

import (
	"os"
	"path/filepath"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// TestProbeListenersGolden covers each probe protocol: an HTTP liveness
// probe is proxied to the app's path, an HTTPS readiness probe and a gRPC
// startup probe are passed through, unread, to the app's port.
func TestProbeListenersGolden(t *testing.T) {
	c := config()
	c.Probes = []Probe{
		{Kind: "liveness", ListenPort: 15901, ProbePath: "/osm-liveness-probe", Port: 14001, Path: "/healthz"},
		{Kind: "readiness", ListenPort: 15902, ProbePath: "/ready", Port: 8443, Path: "/ready", Passthrough: true},
		{Kind: "startup", ListenPort: 15903, Port: 9090, Passthrough: true},
	}
	b, err := Build(c) // Build runs ValidateAll
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "probes.bootstrap.json")
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

	listeners := map[string]uint32{}
	for _, l := range b.GetStaticResources().GetListeners() {
		f := l.GetFilterChains()[0].GetFilters()[0]
		if f.GetName() != "envoy.filters.network.tcp_proxy" {
			continue
		}
		var tcp tcpproxyv3.TcpProxy
		if err := f.GetTypedConfig().UnmarshalTo(&tcp); err != nil {
			t.Fatal(err)
		}
		if err := tcp.ValidateAll(); err != nil || tcp.GetCluster() != l.GetName() {
			t.Fatalf("listener %s: tcp proxy to %q (%v)", l.GetName(), tcp.GetCluster(), err)
		}
		listeners[l.GetName()] = l.GetAddress().GetSocketAddress().GetPortValue()
	}
	if len(listeners) != 2 || listeners["osm-readiness-probe"] != 15902 || listeners["osm-startup-probe"] != 15903 {
		t.Fatalf("passthrough listeners %v, want readiness on 15902 and startup on 15903", listeners)
	}
	clusterPorts := map[string]uint32{}
	for _, cl := range b.GetStaticResources().GetClusters() {
		clusterPorts[cl.GetName()] = cl.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetPortValue()
	}
	if clusterPorts["osm-readiness-probe"] != 8443 || clusterPorts["osm-startup-probe"] != 9090 || clusterPorts["osm-liveness-probe"] != 14001 {
		t.Fatalf("probe clusters %v", clusterPorts)
	}

	// The renderer's cache keeps an HTTP and a passthrough probe apart.
	r := NewRenderer(4)
	c.ProxyUUID = "a"
	passthrough, err := r.Render(c)
	if err != nil {
		t.Fatal(err)
	}
	c.Probes[1].Passthrough = false
	proxied, err := r.Render(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(passthrough) == string(proxied) {
		t.Fatal("the renderer served a passthrough probe's bootstrap for a proxied one")
	}
}
