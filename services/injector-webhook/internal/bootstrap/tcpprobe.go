package bootstrap

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	healthcheckv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/health_check/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// HeaderOriginalTCPPort is the header of a rewritten TCP probe that names
// the app's port, as OSM names it.
const HeaderOriginalTCPPort = "Original-Tcp-Port"

// Names of the health-check listener and of its clusters.
const (
	listenerHealthcheck = "osm-healthcheck"
	clusterTCPProbe     = "osm-tcp-probe-" // + the app's port
)

// How often the sidecar connects to each probed port, and how long a
// connection may take. The kubelet's answer is at most this old.
const (
	tcpProbeInterval = time.Second
	tcpProbeTimeout  = time.Second
)

// TCPProbeCluster is the name of the cluster whose health answers the TCP
// probes of the app's port.
func TCPProbeCluster(port uint32) string {
	return clusterTCPProbe + strconv.FormatUint(uint64(port), 10)
}

// tcpProbeResources returns the health-check listener serving probes, all
// TCP, and its clusters: one per probed port.
//
// A TCP probe asks whether the app accepts connections on its port, so
// the answer must come from a connection to that port, made when asked or
// shortly before. Envoy has two ways to give it:
//
//   - an HTTP route per port to a STATIC cluster of the app's port, as the
//     HTTP probes have: but the router then sends the kubelet's GET to the
//     app and answers with the app's reply, so a healthy Redis or Postgres,
//     which does not answer HTTP, would fail (a 503 for the reset or the
//     bytes that do not parse), and a connection that succeeds cannot be
//     told apart from one that fails;
//   - the health_check HTTP filter, which answers locally from a cluster's
//     health, over clusters that Envoy itself checks actively with a
//     connect-only TCP health check (no send, no receive payload): healthy
//     exactly while a connection to the app's port succeeds.
//
// We use the second, as OSM's osm-healthcheck container did by hand (dial,
// 200 or 404), without a container of our own: one health_check filter per
// probed port, matching the path and the HeaderOriginalTCPPort header, and
// asking 100% of that port's cluster (its one host) to be healthy; a
// request no filter matches gets a 404 from the route. The checks run every
// tcpProbeInterval, with both thresholds at 1, so the kubelet sees the
// result of a connection at most that old and its own failureThreshold and
// successThreshold decide; until the first check the host is unhealthy, so
// a probe fails rather than passes before Envoy has looked. The cluster
// never carries traffic, so no_traffic_interval (60 s by default, and
// overriding interval) is set to the interval too.
func tcpProbeResources(probes []Probe) (*listenerv3.Listener, []*clusterv3.Cluster, error) {
	listen, path := probes[0].ListenPort, probes[0].ProbePath
	var ports []uint32
	for _, p := range probes {
		if p.ListenPort != listen || p.ProbePath != path {
			return nil, nil, fmt.Errorf("tcp probe %s: served on port %d path %q, but another TCP probe on port %d path %q: all share one health-check listener",
				p.Kind, p.ListenPort, p.ProbePath, listen, path)
		}
		if p.Port == 0 || p.Port > 65535 {
			return nil, nil, fmt.Errorf("tcp probe %s: port %d is outside 1-65535", p.Kind, p.Port)
		}
		if !slices.Contains(ports, p.Port) {
			ports = append(ports, p.Port)
		}
	}
	slices.Sort(ports)

	var filters []*hcmv3.HttpFilter
	var clusters []*clusterv3.Cluster
	for _, port := range ports {
		name := TCPProbeCluster(port)
		hc := &healthcheckv3.HealthCheck{
			PassThroughMode: wrapperspb.Bool(false),
			Headers: []*routev3.HeaderMatcher{
				exactHeader(":path", path),
				exactHeader(strings.ToLower(HeaderOriginalTCPPort), strconv.FormatUint(uint64(port), 10)),
			},
			ClusterMinHealthyPercentages: map[string]*typev3.Percent{name: {Value: 100}},
		}
		if err := hc.ValidateAll(); err != nil {
			return nil, nil, fmt.Errorf("listener %s: health check of port %d: %w", listenerHealthcheck, port, err)
		}
		a, err := anypb.New(hc)
		if err != nil {
			return nil, nil, err
		}
		// Filter names only need to differ; Envoy finds the filter by
		// its typed config.
		filters = append(filters, &hcmv3.HttpFilter{Name: "osm-health-check-" + strconv.FormatUint(uint64(port), 10), ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}})

		cl := staticCluster(name, port)
		cl.HealthChecks = []*corev3.HealthCheck{{
			Timeout:            durationpb.New(tcpProbeTimeout),
			Interval:           durationpb.New(tcpProbeInterval),
			NoTrafficInterval:  durationpb.New(tcpProbeInterval),
			UnhealthyThreshold: wrapperspb.UInt32(1),
			HealthyThreshold:   wrapperspb.UInt32(1),
			HealthChecker:      &corev3.HealthCheck_TcpHealthCheck_{TcpHealthCheck: &corev3.HealthCheck_TcpHealthCheck{}},
		}}
		clusters = append(clusters, cl)
	}
	router, err := anypb.New(&routerv3.Router{})
	if err != nil {
		return nil, nil, err
	}
	filters = append(filters, &hcmv3.HttpFilter{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}})
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: listenerHealthcheck,
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: listenerHealthcheck,
			VirtualHosts: []*routev3.VirtualHost{{
				Name:    listenerHealthcheck,
				Domains: []string{"*"},
				Routes: []*routev3.Route{{
					Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
						Status: 404,
						Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{
							InlineString: fmt.Sprintf("no TCP probe of the port in header %s here; the probed ports are %v\n", HeaderOriginalTCPPort, ports)}},
					}},
				}},
			}},
		}},
		HttpFilters: filters,
	}
	if err := hcm.ValidateAll(); err != nil {
		return nil, nil, fmt.Errorf("listener %s: %w", listenerHealthcheck, err)
	}
	hcmAny, err := anypb.New(hcm)
	if err != nil {
		return nil, nil, err
	}
	l := &listenerv3.Listener{
		Name: listenerHealthcheck,
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "0.0.0.0", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: listen}}}},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcmAny},
		}}}},
	}
	return l, clusters, nil
}

func exactHeader(name, value string) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
		StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: value}}}}
}
