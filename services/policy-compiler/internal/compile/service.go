package compile

import (
	"iter"
	"maps"
	"net/netip"
	"slices"
	"sort"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
)

// servicePorts are the compiled ports of a service: none when the service
// is absent, outside the mesh, or of type ExternalName. Only TCP ports count.
func (e *Engine) servicePorts(nn model.NN) []servicePort {
	svc := e.m.Service(nn)
	if svc == nil || !e.m.Meshed(nn.Namespace) || svc.GetType() == "ExternalName" {
		return nil
	}
	if selectorlessRejection(nn, svc) != nil {
		return nil // refused (selectorless.go): no cluster, no certificate accepted
	}
	slices := e.m.EndpointSlices(nn)
	var out []servicePort
	for _, p := range svc.GetPorts() {
		if p.GetProtocol() != "" && p.GetProtocol() != "TCP" {
			continue
		}
		sp := servicePort{
			svc:        nn,
			port:       p.GetPort(),
			name:       p.GetName(),
			protocol:   ProtocolOf(p.GetAppProtocol(), p.GetName()),
			targetPort: p.GetPort(),
			clusterIPs: svc.GetClusterIps(),
			headless:   svc.GetHeadless(),
		}
		sp.clusterName = ClusterName(nn, sp.port)
		if n := p.GetTargetPortNumber(); n != 0 {
			sp.targetPort = n
		}
		// The slices carry the resolved number of a named target port.
	resolve:
		for _, s := range slices {
			for _, ep := range s.GetPorts() {
				if ep.GetName() == p.GetName() && ep.Port != nil {
					sp.targetPort = ep.GetPort()
					break resolve
				}
			}
		}
		out = append(out, sp)
	}
	return out
}

func sameTargets(a, b []servicePort) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].port != b[i].port || a[i].targetPort != b[i].targetPort {
			return false
		}
	}
	return true
}

// endpoints are the ready endpoints of one service port, sorted.
func (e *Engine) endpoints(sp servicePort) []endpointAddr {
	var out []endpointAddr
	for _, s := range e.m.EndpointSlices(sp.svc) {
		port := int32(-1)
		for _, p := range s.GetPorts() {
			if p.GetName() == sp.name {
				port = sp.targetPort
				if p.Port != nil {
					port = p.GetPort()
				}
				break
			}
		}
		if port < 0 {
			continue
		}
		for _, ep := range s.GetEndpoints() {
			c := ep.GetConditions()
			if len(ep.GetAddresses()) == 0 || !c.GetReady() || c.GetTerminating() {
				continue
			}
			if _, err := netip.ParseAddr(ep.GetAddresses()[0]); err != nil {
				continue // FQDN slices are not supported
			}
			out = append(out, endpointAddr{zone: ep.GetZone(), ip: ep.GetAddresses()[0], port: port})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.zone != b.zone {
			return a.zone < b.zone
		}
		if a.ip != b.ip {
			return a.ip < b.ip
		}
		return a.port < b.port
	})
	return dedupe(out)
}

// splitFor is the weighted clusters that replace sp's cluster when sp's
// service is the apex of an accepted TrafficSplit; nil otherwise.
func (e *Engine) splitFor(sp servicePort) []weighted {
	for _, name := range e.m.SplitsForApex(sp.svc) {
		s := e.pol.split(name)
		if s == nil || s.Apex != sp.svc {
			continue
		}
		var out []weighted
		for _, b := range s.Backends {
			if b.Weight == 0 {
				continue
			}
			for _, bp := range e.servicePorts(b.Service) {
				if bp.port == sp.port {
					out = append(out, weighted{cluster: ClusterName(b.Service, bp.port), weight: b.Weight})
					break
				}
			}
		}
		return out
	}
	return nil
}

// compileService rebuilds every resource of one service, and marks the
// proxies whose listeners or groups embed it.
func (e *Engine) compileService(nn model.NN, d *Delta) {
	e.dirty.review.add(nn) // judged once the headless owners settle
	ports := e.servicePorts(nn)
	ids := e.m.ServiceIdentities(nn)
	td, tp := e.trustDomain(), e.tlsParams()
	up := e.ups.forService(nn)
	cs := &compiledService{ports: ports, ids: ids, frag: svcFrag{key: svcKey(nn)}}
	frag := &cs.frag
	keep := func(k resKey, ok bool) bool {
		if ok {
			cs.keys = append(cs.keys, k)
		}
		return ok
	}
	for _, sp := range ports {
		split := e.splitFor(sp)
		if keep(e.put(d, layout.TypeCluster, sp.cluster())(buildCluster(sp, ids, td, tp, up))) {
			frag.clusters = append(frag.clusters, sp.cluster())
		}
		if keep(e.put(d, layout.TypeEndpoint, sp.cluster())(buildCLA(sp, e.endpoints(sp)))) {
			frag.endpoints = append(frag.endpoints, sp.cluster())
		}
		if keep(e.put(d, layout.TypeCluster, LocalClusterName(nn, sp.port))(buildLocalCluster(sp))) {
			frag.locals = append(frag.locals, LocalClusterName(nn, sp.port))
		}
		if sp.protocol.IsHTTP() && keep(e.put(d, layout.TypeRoute, sp.cluster())(buildOutboundRoute(sp, split))) {
			frag.routes = append(frag.routes, sp.cluster())
		}
		if e.opts.ProxylessGRPC && sp.protocol.IsHTTP() {
			e.compileGRPCPort(sp, ids, split, d, keep, &frag.grpc)
		}
		if sp.headless && keep(e.put(d, layout.TypeCluster, DirectClusterName(nn, sp.port))(buildDirectCluster(sp, ids, td, tp, up))) {
			frag.clusters = append(frag.clusters, DirectClusterName(nn, sp.port))
		}
		var l *Resource
		var err error
		if sp.headless {
			e.claimHeadless(sp, e.endpoints(sp))
			l, err = buildHeadlessListener(sp, e.headless.owned(portOf(sp)))
		} else {
			l, err = buildServiceListener(sp, split, e.tracing)
		}
		switch {
		case err != nil:
			// Reported, and the last good listener (if any) kept.
			if keep(e.put(d, layout.TypeListener, ServiceListenerName(nn, sp.port))(nil, err)) {
				frag.listeners = append(frag.listeners, ServiceListenerName(nn, sp.port))
			}
		case l != nil && keep(e.put(d, layout.TypeListener, l.Name)(l, nil)):
			frag.listeners = append(frag.listeners, l.Name)
		}
	}
	for _, names := range [][]string{frag.clusters, frag.endpoints, frag.routes, frag.locals, frag.listeners,
		frag.grpc.clusters, frag.grpc.endpoints, frag.grpc.routes, frag.grpc.listeners} {
		sort.Strings(names)
	}
	// Resources the service no longer has.
	if old := e.svcs.get(nn); old != nil {
		kept := map[resKey]bool{}
		for _, k := range cs.keys {
			kept[k] = true
		}
		for _, k := range old.keys {
			if !kept[k] {
				e.res.drop(k, d)
			}
		}
	}
	var oldPorts []servicePort
	if old := e.svcs.get(nn); old != nil {
		oldPorts = old.ports
	}
	for _, op := range oldPorts {
		// Headless ports the service no longer has give up their addresses.
		if op.headless && !slices.ContainsFunc(ports, func(sp servicePort) bool { return sp.headless && sp.port == op.port }) {
			e.claimHeadless(servicePort{svc: nn, port: op.port}, nil)
		}
	}
	e.claimBare(nn, oldPorts, ports)
	e.svcs.set(nn, cs)
	e.dirty.shard(permissiveShard(nn))
	e.markClients(nn)
	for id := range e.reach.backersOf(nn) {
		e.dirty.inbound(id)
	}
	for _, id := range ids {
		e.dirty.inbound(id)
	}
}

// markClients marks dirty the outbound config of every identity that
// reached nn at the last compile or may reach it now.
func (e *Engine) markClients(nn model.NN) {
	for id := range e.reach.reachersOf(nn) {
		e.dirty.outbound(id)
	}
	if e.m.Permissive() {
		e.dirty.everyOutbound() // once per compile, not once per service
		return
	}
	svcs := []model.NN{nn}
	for _, name := range e.m.SplitsForApex(nn) {
		if s := e.pol.split(name); s != nil {
			for _, b := range s.Backends {
				svcs = append(svcs, b.Service)
			}
		}
	}
	for _, s := range svcs {
		for _, dest := range e.m.ServiceIdentities(s) {
			for src := range e.pol.sourcesOf(dest) {
				e.dirty.outbound(src)
			}
		}
	}
}

// compileEndpoints rebuilds only the ClusterLoadAssignments of a service.
// A headless port's listener is rebuilt too; when it appears or goes, the
// whole service is.
func (e *Engine) compileEndpoints(nn model.NN, d *Delta) {
	for _, sp := range e.svcs.ports(nn) {
		eps := e.endpoints(sp)
		if sp.headless && !e.compileHeadlessEndpoints(sp, eps, d) {
			e.compileService(nn, d)
			return
		}
		e.put(d, layout.TypeEndpoint, sp.cluster())(buildCLA(sp, eps))
		if e.opts.ProxylessGRPC && sp.protocol.IsHTTP() {
			e.put(d, layout.TypeEndpoint, GRPCClusterName(sp.svc, sp.port))(buildGRPCCLA(sp, eps))
		}
	}
}

// svcFrag is what a compiled service contributes to the proxies that reach
// or serve it: the names of its resources, each list sorted. locals are
// served to the proxies that serve the service, the rest to its clients.
type svcFrag struct {
	// key orders services so that their names concatenate in sorted order:
	// "ns/name|" (names never contain '|').
	key                                            string
	clusters, endpoints, routes, listeners, locals []string
	// grpc are the names of its gRPC flavour (Options.ProxylessGRPC).
	grpc reachNames
}

func svcKey(nn model.NN) string { return nn.Namespace + "/" + nn.Name + "|" }

// svcRef is a compiled service and its ordering key.
type svcRef struct {
	nn  model.NN
	key string
}

func sortRefs(refs []svcRef) {
	sort.Slice(refs, func(i, j int) bool { return refs[i].key < refs[j].key })
}

// compiledService is what one compiled service was built from and what it
// contributes, so that a change can find what depends on it.
type compiledService struct {
	keys  []resKey         // its resources
	ports []servicePort    // its compiled ports
	ids   []model.Identity // the identities its SANs name
	frag  svcFrag          // the names it contributes to proxies
}

// services holds the compiled (meshed) services: those with at least one
// compiled port.
type services struct {
	byName map[model.NN]*compiledService
	all    []svcRef // every compiled service, by key; nil when stale
}

func newServices() services {
	return services{byName: map[model.NN]*compiledService{}}
}

// get is the compiled service nn, or nil.
func (s *services) get(nn model.NN) *compiledService { return s.byName[nn] }

// has reports whether nn is compiled.
func (s *services) has(nn model.NN) bool {
	_, ok := s.byName[nn]
	return ok
}

// count is the number of compiled services.
func (s *services) count() int { return len(s.byName) }

// ports are the compiled ports of nn; none when it is not compiled.
func (s *services) ports(nn model.NN) []servicePort {
	if cs := s.byName[nn]; cs != nil {
		return cs.ports
	}
	return nil
}

// ids are the identities the SANs of nn name at its last compile.
func (s *services) ids(nn model.NN) []model.Identity {
	if cs := s.byName[nn]; cs != nil {
		return cs.ids
	}
	return nil
}

// frag is what nn contributes to proxies; nn must be compiled.
func (s *services) frag(nn model.NN) *svcFrag { return &s.byName[nn].frag }

// set records the compile of nn; one without ports removes nn.
func (s *services) set(nn model.NN, cs *compiledService) {
	_, existed := s.byName[nn]
	if len(cs.ports) == 0 {
		delete(s.byName, nn)
	} else {
		s.byName[nn] = cs
	}
	if existed != (len(cs.ports) > 0) {
		s.all = nil
	}
}

// names iterates over the compiled services, in no order.
func (s *services) names() iter.Seq[model.NN] { return maps.Keys(s.byName) }

// every lists every compiled service, by key.
func (s *services) every() []svcRef {
	if s.all == nil {
		s.all = make([]svcRef, 0, len(s.byName))
		for nn, cs := range s.byName {
			s.all = append(s.all, svcRef{nn, cs.frag.key})
		}
		sortRefs(s.all)
	}
	return s.all
}
