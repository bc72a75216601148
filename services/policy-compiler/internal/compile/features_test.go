package compile

import (
	"slices"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

func TestProtocolOf(t *testing.T) {
	cases := []struct {
		app, name string
		want      Protocol
	}{
		{"http", "", ProtocolHTTP}, {"HTTP", "tcp-x", ProtocolHTTP}, {"grpc", "", ProtocolGRPC},
		{"kubernetes.io/h2c", "", ProtocolGRPC}, {"tcp", "http", ProtocolTCP}, {"", "http-web", ProtocolHTTP},
		{"", "grpc", ProtocolGRPC}, {"", "mysql", ProtocolTCP}, {"", "", ProtocolTCP}, {"mongo", "", ProtocolTCP},
	}
	for _, c := range cases {
		if got := ProtocolOf(c.app, c.name); got != c.want {
			t.Errorf("ProtocolOf(%q, %q) = %s, want %s", c.app, c.name, got, c.want)
		}
	}
}

// outboundFilter returns the filter of the outbound listener of the
// service port whose cluster is cluster, after checking that client is
// served that listener.
func outboundFilter(t *testing.T, e *Engine, client model.Identity, cluster string) *listenerv3.Filter {
	t.Helper()
	name := "outbound-listener:" + cluster
	if !slices.Contains(groupNames(t, e, client, resourcev3.ListenerType), name) {
		t.Fatalf("%s is not served %s", client, name)
	}
	l := decode(t, e, layout.TypeListener, name, &listenerv3.Listener{})
	if fcs := l.GetFilterChains(); len(fcs) != 1 || fcs[0].GetName() != "outbound:"+cluster {
		t.Fatalf("listener %s chains = %v, want one named outbound:%s", name, fcs, cluster)
	}
	return l.GetFilterChains()[0].GetFilters()[0]
}

func TestGRPCAndTCPSplit(t *testing.T) {
	e := bookstore(t, false)
	grpc := synth.Port{Number: 9000, Name: "api", AppProtocol: "grpc"}
	tcp := synth.Port{Number: 3306, Name: "mysql", AppProtocol: "tcp"}
	apply(t, e,
		synth.Service("bookwarehouse", "mysql", "10.96.20.2", map[string]string{"app": "mysql"}, tcp, grpc),
		synth.Service("bookwarehouse", "mysql-v2", "10.96.20.3", map[string]string{"app": "mysql-v2"}, tcp),
		synth.Pod("bookwarehouse", "mysql-v2-0", "mysql", "10.244.3.21", map[string]string{"app": "mysql-v2"}),
		synth.TrafficSplit("bookwarehouse", "mysql-split", "mysql", synth.Backend{Service: "mysql", Weight: 9}, synth.Backend{Service: "mysql-v2", Weight: 1}),
	)
	c := decode(t, e, layout.TypeCluster, "bookwarehouse/mysql|9000", &clusterv3.Cluster{})
	if _, ok := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]; !ok {
		t.Error("the grpc cluster lacks HTTP/2 protocol options")
	}
	wh := id("bookwarehouse", "bookwarehouse")
	f := outboundFilter(t, e, wh, "bookwarehouse/mysql|9000")
	if h := unpack(t, f.GetTypedConfig(), &hcmv3.HttpConnectionManager{}); h.GetRds().GetRouteConfigName() != "bookwarehouse/mysql|9000" {
		t.Errorf("grpc chain RDS = %q", h.GetRds().GetRouteConfigName())
	}
	// mysql is a split apex (and its own backend) over TCP: weighted tcp_proxy.
	f = outboundFilter(t, e, wh, "bookwarehouse/mysql|3306")
	tp := unpack(t, f.GetTypedConfig(), &tcpproxyv3.TcpProxy{})
	var got []string
	for _, w := range tp.GetWeightedClusters().GetClusters() {
		got = append(got, w.GetName())
	}
	if !slices.Equal(got, []string{"bookwarehouse/mysql|3306", "bookwarehouse/mysql-v2|3306"}) {
		t.Errorf("tcp split clusters = %v", got)
	}
}

func TestHeadlessExternalNameAndNamedTargetPort(t *testing.T) {
	e := bookstore(t, false)
	headless := synth.Service("bookwarehouse", "mysql", "", map[string]string{"app": "mysql"}, synth.Port{Number: 3306, Name: "mysql", AppProtocol: "tcp"})
	headless.Msg.(*meshv1.Service).ClusterIps = nil
	headless.Msg.(*meshv1.Service).Headless = true
	ext := synth.Service("bookwarehouse", "payments", "", nil, synth.Port{Number: 443, Name: "https"})
	ext.Msg.(*meshv1.Service).Type = "ExternalName"
	named := synth.Service("bookwarehouse", "bookwarehouse", "10.96.20.1", map[string]string{"app": "bookwarehouse"}, synth.Port{Number: 80, Name: "bookwarehouse-port", AppProtocol: "http"})
	named.Msg.(*meshv1.Service).Ports[0].TargetPort = &meshv1.ServicePort_TargetPortName{TargetPortName: "web"}
	apply(t, e, headless, ext, named)

	// Headless: a cluster and endpoints, and an outbound listener on the
	// endpoints' addresses (headless.go; TestHeadlessService).
	wh := id("bookwarehouse", "bookwarehouse")
	if !slices.Contains(groupNames(t, e, wh, resourcev3.ClusterType), "bookwarehouse/mysql|3306") {
		t.Error("headless mysql has no cluster")
	}
	hl := decode(t, e, layout.TypeListener, ServiceListenerName(model.NN{Namespace: "bookwarehouse", Name: "mysql"}, 3306), &listenerv3.Listener{})
	if a := hl.GetAddress().GetSocketAddress(); a.GetAddress() != "10.244.3.20" || a.GetPortValue() != 3306 {
		t.Errorf("headless listener on %v, want the endpoint 10.244.3.20:3306", a)
	}
	if e.Resource(layout.TypeCluster, "bookwarehouse/payments|443") != nil {
		t.Error("an ExternalName service was compiled")
	}
	// The named targetPort resolves through the slice (port 14001).
	l := decode(t, e, layout.TypeListener, InboundListenerName(wh), &listenerv3.Listener{})
	if p := l.GetFilterChains()[0].GetFilterChainMatch().GetDestinationPort().GetValue(); p != 14001 {
		t.Errorf("inbound port = %d, want 14001 from the slice", p)
	}
	local := decode(t, e, layout.TypeCluster, "bookwarehouse/bookwarehouse|80|local", &clusterv3.Cluster{})
	if p := local.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetPortValue(); p != 14001 {
		t.Errorf("local cluster port = %d", p)
	}
}
