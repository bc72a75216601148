package compile

import (
	"net/netip"
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
		s := e.goodSplit[name]
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
	ports := e.servicePorts(nn)
	ids := e.m.ServiceIdentities(nn)
	td := e.trustDomain()
	var keys []resKey
	frag := &svcFrag{key: svcKey(nn)}
	keep := func(k resKey, ok bool) bool {
		if ok {
			keys = append(keys, k)
		}
		return ok
	}
	for _, sp := range ports {
		split := e.splitFor(sp)
		if keep(e.put(d, layout.TypeCluster, sp.cluster())(buildCluster(sp, ids, td))) {
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
		l, err := buildServiceListener(sp, split)
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
	for _, names := range [][]string{frag.clusters, frag.endpoints, frag.routes, frag.locals, frag.listeners} {
		sort.Strings(names)
	}
	// Resources the service no longer has.
	kept := map[resKey]bool{}
	for _, k := range keys {
		kept[k] = true
	}
	for _, k := range e.svcRes[nn] {
		if !kept[k] {
			e.drop(k, d)
		}
	}
	_, existed := e.svcPorts[nn]
	if len(ports) == 0 {
		delete(e.svcRes, nn)
		delete(e.svcPorts, nn)
		delete(e.svcFrags, nn)
		delete(e.svcIDs, nn)
	} else {
		e.svcRes[nn], e.svcPorts[nn], e.svcFrags[nn], e.svcIDs[nn] = keys, ports, frag, ids
	}
	if existed != (len(ports) > 0) {
		e.allSvcs = nil
	}
	e.dirtyShards.add(permissiveShard(nn))
	e.markClients(nn)
	for id := range e.inBackers[nn] {
		e.dirtyIn.add(id)
	}
	for _, id := range ids {
		e.dirtyIn.add(id)
	}
}

// markClients marks dirty the outbound config of every identity that
// reached nn at the last compile or may reach it now.
func (e *Engine) markClients(nn model.NN) {
	for id := range e.reachers[nn] {
		e.dirtyOut.add(id)
	}
	if e.m.Permissive() {
		e.allOut = true // once per compile, not once per service
		return
	}
	svcs := []model.NN{nn}
	for _, name := range e.m.SplitsForApex(nn) {
		if s := e.goodSplit[name]; s != nil {
			for _, b := range s.Backends {
				svcs = append(svcs, b.Service)
			}
		}
	}
	for _, s := range svcs {
		for _, dest := range e.m.ServiceIdentities(s) {
			for src := range e.destSrcs[dest] {
				e.dirtyOut.add(src)
			}
		}
	}
}

// compileEndpoints rebuilds only the ClusterLoadAssignments of a service.
func (e *Engine) compileEndpoints(nn model.NN, d *Delta) {
	for _, sp := range e.svcPorts[nn] {
		e.put(d, layout.TypeEndpoint, sp.cluster())(buildCLA(sp, e.endpoints(sp)))
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
}

func svcKey(nn model.NN) string { return nn.Namespace + "/" + nn.Name + "|" }
