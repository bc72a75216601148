package compile

import (
	"fmt"
	"net/netip"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
)

// Headless services (clusterIP: None) have no address of their own: DNS
// answers with the endpoints' addresses (pod-0.svc.ns.svc.cluster.local is
// pod-0's IP), and a client connects to one endpoint on purpose. Each port
// of one then compiles, besides its EDS cluster and ClusterLoadAssignment:
//
//	cluster   ns/svc|port|direct       ORIGINAL_DST: the connection goes to the
//	                                   address the client dialled, with the
//	                                   same upstream mTLS and SAN match on the
//	                                   service's identities as ns/svc|port
//	listener  outbound-listener:ns/svc|port  bound (bind_to_port false) to every
//	                                   ready endpoint's address and port, one
//	                                   tcp_proxy chain to ns/svc|port|direct;
//	                                   absent while the port has no endpoint
//
// Clients reach it as they reach any service (a TrafficTarget to one of its
// identities, or permissive mode), and the destination's inbound listener
// checks access as for any service. The listener is a plain TCP proxy for
// every protocol: a client that named one endpoint must reach that one,
// not whichever the service's route balances to.
//
// An endpoint change rewrites the port's ClusterLoadAssignment and this
// listener, both as large as the port's endpoints, and nothing else: the
// names the clients' groups list stay the same until the port's first
// endpoint appears or its last one goes.
//
// Not handled yet: two headless services with the same endpoint address
// and port (the same pods, the same target port) give two listeners on one
// address, which Envoy refuses as duplicates for a proxy that reaches both.

// DirectClusterName is the ORIGINAL_DST cluster of a headless service
// port: "ns/svc|port|direct".
func DirectClusterName(svc model.NN, port int32) string {
	return ClusterName(svc, port) + "|direct"
}

// buildDirectCluster is the ORIGINAL_DST cluster of a headless service
// port: the upstream mTLS of its EDS cluster, to the dialled address.
func buildDirectCluster(sp servicePort, ids []model.Identity, trustDomain string, tp *tlsv3.TlsParameters, up *Upstream) (*Resource, error) {
	c, err := upstreamCluster(sp, ids, trustDomain, tp, up)
	if err != nil {
		return nil, err
	}
	c.Name = DirectClusterName(sp.svc, sp.port)
	c.AltStatName = c.Name
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}
	c.EdsClusterConfig = nil
	c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
	return newResource(layout.TypeCluster, c.Name, c)
}

// headlessAddrs are the distinct addresses (ip, port) of eps, sorted by ip
// then port (eps is sorted by zone first).
func headlessAddrs(eps []endpointAddr) []endpointAddr {
	out := make([]endpointAddr, 0, len(eps))
	for _, ep := range eps {
		out = append(out, endpointAddr{ip: ep.ip, port: ep.port})
	}
	slices.SortFunc(out, func(a, b endpointAddr) int {
		if a.ip != b.ip {
			if a.ip < b.ip {
				return -1
			}
			return 1
		}
		return int(a.port - b.port)
	})
	return slices.Compact(out)
}

// buildHeadlessListener is the outbound listener of a headless service
// port, on the addresses of its ready endpoints eps; nil when it has none.
func buildHeadlessListener(sp servicePort, eps []endpointAddr) (*Resource, error) {
	name := ServiceListenerName(sp.svc, sp.port)
	var addrs []*corev3.Address
	for _, ep := range headlessAddrs(eps) {
		a, err := netip.ParseAddr(ep.ip)
		if err != nil {
			continue
		}
		addrs = append(addrs, socketAddress(a.String(), ep.port))
	}
	if len(addrs) == 0 {
		return nil, nil
	}
	stat := "outbound:" + sp.cluster()
	t, err := typed(&tcpproxyv3.TcpProxy{StatPrefix: stat, ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: DirectClusterName(sp.svc, sp.port)}})
	if err != nil {
		return nil, fmt.Errorf("listener %s: %w", name, err)
	}
	l := &listenerv3.Listener{
		Name:             name,
		Address:          addrs[0],
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		BindToPort:       wrapperspb.Bool(false),
		FilterChains: []*listenerv3.FilterChain{{Name: stat, Filters: []*listenerv3.Filter{{
			Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: t},
		}}}},
	}
	for _, a := range addrs[1:] {
		l.AdditionalAddresses = append(l.AdditionalAddresses, &listenerv3.AdditionalAddress{Address: a})
	}
	return newResource(layout.TypeListener, name, l)
}

// compileHeadlessEndpoints rebuilds the listener of the headless port sp
// after an endpoint change. It reports false when the listener appears or
// goes: the service's names change, so the caller compiles it whole.
func (e *Engine) compileHeadlessEndpoints(sp servicePort, eps []endpointAddr, d *Delta) bool {
	name := ServiceListenerName(sp.svc, sp.port)
	l, err := buildHeadlessListener(sp, eps)
	_, had := slices.BinarySearch(e.svcs.frag(sp.svc).listeners, name)
	if err == nil && (l != nil) != had {
		return false
	}
	if err != nil || l != nil {
		e.put(d, layout.TypeListener, name)(l, err)
	}
	return true
}
