package compile

import (
	"fmt"
	"net"
	"net/netip"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/multimap"
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
// Two headless ports may list the same endpoint address and port (two
// headless Services selecting the same pods on the same target port, or two
// ports of one Service with the same target port). Envoy refuses two
// listeners on one address, even unbound ones, so each address:port has one
// owner: the claiming port of the Service first by namespace, then name,
// then by service port. Only the owner's listener holds the address; a
// connection to it reaches the same pod through the owner's direct cluster.
// The other Services are accepted with a warning naming the port
// (spec.ports[i]), the address and its owner (a Warning Event on the
// Service). headlessOwners indexes the claims by address, so a change
// rebuilds only the listeners whose owned addresses change: when the owner
// goes, the next claimant's listener takes the address over.

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

// headlessAddrs are the distinct addresses (ip, in its canonical form, and port) of
// eps, sorted by ip then port (eps is sorted by zone first).
func headlessAddrs(eps []endpointAddr) []endpointAddr {
	out := make([]endpointAddr, 0, len(eps))
	for _, ep := range eps {
		if a, err := netip.ParseAddr(ep.ip); err == nil {
			out = append(out, endpointAddr{ip: a.String(), port: ep.port})
		}
	}
	slices.SortFunc(out, cmpAddr)
	return slices.Compact(out)
}

// buildHeadlessListener is the outbound listener of a headless service
// port, on the addresses addrs (sorted, distinct) it owns; nil when it owns
// none.
func buildHeadlessListener(sp servicePort, owned []endpointAddr) (*Resource, error) {
	name := ServiceListenerName(sp.svc, sp.port)
	var addrs []*corev3.Address
	for _, ep := range owned {
		addrs = append(addrs, socketAddress(ep.ip, ep.port))
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

// compileHeadlessEndpoints records the claims of the headless port sp
// after an endpoint change and rebuilds its listener. It reports false
// when the listener appears or goes: the service's names change, so the
// caller compiles it whole.
func (e *Engine) compileHeadlessEndpoints(sp servicePort, eps []endpointAddr, d *Delta) bool {
	e.claimHeadless(sp, eps)
	return e.compileHeadlessListener(sp, d)
}

// compileHeadlessListener rebuilds the listener of the compiled headless
// port sp on the addresses it owns. It reports false when the listener
// appears or goes, and then leaves it to a compile of the whole service.
func (e *Engine) compileHeadlessListener(sp servicePort, d *Delta) bool {
	name := ServiceListenerName(sp.svc, sp.port)
	l, err := buildHeadlessListener(sp, e.headless.owned(portOf(sp)))
	_, had := slices.BinarySearch(e.svcs.frag(sp.svc).listeners, name)
	if err == nil && (l != nil) != had {
		return false
	}
	if err != nil || l != nil {
		e.put(d, layout.TypeListener, name)(l, err)
	}
	return true
}

// headlessPort is one port of a headless service.
type headlessPort struct {
	svc  model.NN
	port int32
}

func portOf(sp servicePort) headlessPort { return headlessPort{sp.svc, sp.port} }

// Less orders claimants: the first one owns a shared address.
func (p headlessPort) Less(q headlessPort) bool {
	if p.svc != q.svc {
		if p.svc.Namespace != q.svc.Namespace {
			return p.svc.Namespace < q.svc.Namespace
		}
		return p.svc.Name < q.svc.Name
	}
	return p.port < q.port
}

// headlessOwners indexes the endpoint addresses (ip, port; no zone) that
// the compiled headless ports claim.
type headlessOwners struct {
	// claims are each port's addresses, sorted and distinct.
	claims map[headlessPort][]endpointAddr
	// byAddr are the ports claiming each address, in claimant order: the
	// first owns it.
	byAddr map[endpointAddr][]headlessPort
}

func newHeadlessOwners() headlessOwners {
	return headlessOwners{claims: map[headlessPort][]endpointAddr{}, byAddr: map[endpointAddr][]headlessPort{}}
}

// set replaces the claims of p with addrs (sorted, distinct; none: p is
// gone) and calls moved for every other port that gained or lost the
// ownership of an address.
func (h *headlessOwners) set(p headlessPort, addrs []endpointAddr, moved func(headlessPort)) {
	old := h.claims[p]
	if slices.Equal(old, addrs) {
		return
	}
	in := func(list []endpointAddr, a endpointAddr) bool {
		_, ok := slices.BinarySearchFunc(list, a, cmpAddr)
		return ok
	}
	for _, a := range old {
		if in(addrs, a) {
			continue
		}
		ps := h.byAddr[a]
		i := slices.Index(ps, p)
		ps = slices.Delete(ps, i, i+1)
		if i == 0 && len(ps) > 0 {
			moved(ps[0])
		}
		if len(ps) == 0 {
			delete(h.byAddr, a)
		} else {
			h.byAddr[a] = ps
		}
	}
	for _, a := range addrs {
		if in(old, a) {
			continue
		}
		ps := h.byAddr[a]
		i := 0
		for i < len(ps) && ps[i].Less(p) {
			i++
		}
		if i == 0 && len(ps) > 0 {
			moved(ps[0])
		}
		h.byAddr[a] = slices.Insert(ps, i, p)
	}
	if len(addrs) == 0 {
		delete(h.claims, p)
	} else {
		h.claims[p] = addrs
	}
}

// owned are the addresses p claims and owns, sorted.
func (h *headlessOwners) owned(p headlessPort) []endpointAddr {
	var out []endpointAddr
	for _, a := range h.claims[p] {
		if h.byAddr[a][0] == p {
			out = append(out, a)
		}
	}
	return out
}

// conflict is an address p claims that another port owns.
type conflict struct {
	addr  endpointAddr
	owner headlessPort
}

// lost are the addresses p claims and another port owns, sorted.
func (h *headlessOwners) lost(p headlessPort) []conflict {
	var out []conflict
	for _, a := range h.claims[p] {
		if o := h.byAddr[a][0]; o != p {
			out = append(out, conflict{a, o})
		}
	}
	return out
}

func cmpAddr(a, b endpointAddr) int {
	if a.ip != b.ip {
		if a.ip < b.ip {
			return -1
		}
		return 1
	}
	return int(a.port - b.port)
}

// claimHeadless records the addresses of the ready endpoints eps of the
// headless port sp (none: the port is gone or no longer headless), and
// marks the listeners of the ports whose owned addresses this moves.
func (e *Engine) claimHeadless(sp servicePort, eps []endpointAddr) {
	var addrs []endpointAddr
	if sp.headless {
		addrs = headlessAddrs(eps)
	}
	e.headless.set(portOf(sp), addrs, func(q headlessPort) { e.dirty.headless.add(q) })
	e.dirty.review.add(sp.svc)
}

// compileMovedHeadless rebuilds the listeners of the headless ports whose
// owned addresses moved, and reviews the services whose ports lost or won
// back an address.
func (e *Engine) compileMovedHeadless(d *Delta) {
	for len(e.dirty.headless) > 0 {
		for _, p := range multimap.Sorted(e.dirty.headless) {
			delete(e.dirty.headless, p)
			e.dirty.review.add(p.svc)
			for _, sp := range e.svcs.ports(p.svc) {
				if sp.port == p.port && sp.headless && !e.compileHeadlessListener(sp, d) {
					e.compileService(p.svc, d)
				}
			}
		}
	}
	for _, nn := range multimap.Sorted(e.dirty.review) {
		e.reviewService(nn, d)
	}
}

// headlessWarning is the warning on the Service nn whose headless ports
// lost addresses to other ports; nil when none did.
func (e *Engine) headlessWarning(nn model.NN, svc *meshv1.Service) *Rejection {
	for _, sp := range e.svcs.ports(nn) {
		if !sp.headless {
			continue
		}
		lost := e.headless.lost(portOf(sp))
		if len(lost) == 0 {
			continue
		}
		i := slices.IndexFunc(svc.GetPorts(), func(p *meshv1.ServicePort) bool { return p.GetPort() == sp.port })
		c := lost[0]
		more := ""
		if len(lost) > 1 {
			more = fmt.Sprintf(" (and %d more of its addresses)", len(lost)-1)
		}
		return reject(ReasonHeadlessAddressTaken, fmt.Sprintf("spec.ports[%d]", i),
			"port %d's endpoint %s is also an endpoint of port %d of headless Service %s, which serves it%s: Envoy takes one listener per address, and a Service sorting first by namespace, name and port owns it",
			sp.port, net.JoinHostPort(c.addr.ip, fmt.Sprint(c.addr.port)), c.owner.port, c.owner.svc, more)
	}
	return nil
}

// ReasonHeadlessAddressTaken warns that an endpoint address of a headless
// Service's port is served by another headless Service's listener.
const ReasonHeadlessAddressTaken = "HeadlessAddressTaken"
