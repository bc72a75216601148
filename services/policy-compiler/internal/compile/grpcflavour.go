package compile

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/multimap"
)

// The gRPC flavour in the incremental compile (Options.ProxylessGRPC): a
// service port's gRPC resources are rebuilt with its Envoy ones, an
// identity's server listeners with its inbound listener, and its gRPC group
// with its Envoy group, from the same dirty marks. Its names are shared
// the way an Envoy group's are: in permissive mode through the gRPC
// permissive name sets, and a group too large keeps its names in sets of
// its own.

// compileGRPCPort builds the gRPC cluster, assignment, route and API
// listeners of sp, recording the names that exist in n.
func (e *Engine) compileGRPCPort(sp servicePort, ids []model.Identity, split []weighted, d *Delta, keep func(resKey, bool) bool, n *reachNames) {
	name := GRPCClusterName(sp.svc, sp.port)
	if keep(e.put(d, layout.TypeCluster, name)(buildGRPCCluster(sp, ids, e.trustDomain(), e.ups.forService(sp.svc)))) {
		n.clusters = append(n.clusters, name)
	}
	if keep(e.put(d, layout.TypeEndpoint, name)(buildGRPCCLA(sp, e.endpoints(sp)))) {
		n.endpoints = append(n.endpoints, name)
	}
	matches, all := e.grpcClientMatches(sp, ids)
	if keep(e.put(d, layout.TypeRoute, name)(buildGRPCRoute(sp, split, matches, all))) {
		n.routes = append(n.routes, name)
	}
	for _, l := range GRPCListenerNames(sp.svc, sp.port) {
		if keep(e.put(d, layout.TypeListener, l)(buildGRPCListener(l, name))) {
			n.listeners = append(n.listeners, l)
		}
	}
}

// bareNames holds, per bare gRPC target name ("<svc>:<port>"), the
// services with an http or grpc port that claim it.
type bareNames map[string]set[model.NN]

// owner is the one service that claims name, or the zero NN when none or
// several do.
func (b bareNames) owner(name string) model.NN {
	if len(b[name]) != 1 {
		return model.NN{}
	}
	for nn := range b[name] {
		return nn
	}
	return model.NN{}
}

// claimBare moves nn's claims from its old ports to its new ones, marking
// the names whose claimants change. The claims are kept with the flavour
// off too, for GRPCClient.
func (e *Engine) claimBare(nn model.NN, old, cur []servicePort) {
	names := func(ps []servicePort) map[string]bool {
		out := map[string]bool{}
		for _, sp := range ps {
			if sp.protocol.IsHTTP() {
				out[GRPCBareName(nn, sp.port)] = true
			}
		}
		return out
	}
	was, is := names(old), names(cur)
	for name := range was {
		if !is[name] {
			multimap.Remove(e.bare, name, nn)
			e.dirty.bare.add(name)
		}
	}
	for name := range is {
		if !was[name] {
			multimap.Add(e.bare, name, nn)
			e.dirty.bare.add(name)
		}
	}
}

// compileBareListeners rebuilds the bare-name API listeners whose
// claimants changed: one exists while exactly one service claims its
// name. The clients of every claimant are marked, since their groups list
// it only while it is their service's.
func (e *Engine) compileBareListeners(d *Delta) {
	if !e.opts.ProxylessGRPC {
		return
	}
	for _, name := range slices.Sorted(maps.Keys(e.dirty.bare)) {
		k := resKey{layout.TypeListener, name}
		owner := e.bare.owner(name)
		if owner == (model.NN{}) {
			e.res.drop(k, d)
		} else {
			_, port, _ := strings.Cut(name, ":")
			p, _ := strconv.ParseInt(port, 10, 32)
			e.put(d, k.typ, k.name)(buildGRPCListener(name, GRPCClusterName(owner, int32(p))))
		}
		// A service that left the name marked its own clients when it
		// was compiled.
		for nn := range e.bare[name] {
			e.markClients(nn)
		}
	}
}

// bareListeners are the bare-name API listeners of nn's ports that exist
// (nn is their one claimant).
func (e *Engine) bareListeners(nn model.NN) []string {
	var out []string
	for _, sp := range e.svcs.ports(nn) {
		name := GRPCBareName(nn, sp.port)
		if sp.protocol.IsHTTP() && e.bare.owner(name) == nn && e.res.get(resKey{layout.TypeListener, name}) != nil {
			out = append(out, name)
		}
	}
	return out
}

// compileGRPCRoutes rebuilds the gRPC routes of nn, whose matches come
// from the TrafficTargets of its identities (and, for a split apex, of its
// backends'): a target change marks them (markGRPCRoutes).
func (e *Engine) compileGRPCRoutes(nn model.NN, d *Delta) {
	for _, sp := range e.svcs.ports(nn) {
		if sp.protocol.IsHTTP() {
			matches, all := e.grpcClientMatches(sp, e.svcs.ids(nn))
			e.put(d, layout.TypeRoute, GRPCClusterName(sp.svc, sp.port))(buildGRPCRoute(sp, e.splitFor(sp), matches, all))
		}
	}
	e.markGRPCRetries(nn)
}

// markGRPCRoutes marks the gRPC routes that carry the matches of the
// TrafficTargets naming dest: those of the services dest serves and of
// their apexes.
func (e *Engine) markGRPCRoutes(dest model.Identity) {
	if !e.opts.ProxylessGRPC {
		return
	}
	for _, s := range e.m.IdentityServices(dest) {
		e.dirty.grpcRoute.add(s)
		for apex := range e.pol.apexesOf(s) {
			e.dirty.grpcRoute.add(apex)
		}
	}
}

// compileGRPCServers rebuilds the gRPC server listeners of id and drops
// those it no longer has.
func (e *Engine) compileGRPCServers(id model.Identity, d *Delta) {
	res, err := e.grpcServers(id)
	if err != nil {
		d.Invalid = append(d.Invalid, err)
		return // the last good listeners stay
	}
	var names []string
	for _, r := range res {
		if _, ok := e.put(d, r.Type, r.Name)(r, nil); ok {
			names = append(names, r.Name)
		}
	}
	for _, old := range e.groups.grpcServers[id] {
		if !slices.Contains(names, old) {
			e.res.drop(resKey{layout.TypeListener, old}, d)
		}
	}
	if len(names) == 0 {
		delete(e.groups.grpcServers, id)
	} else {
		e.groups.grpcServers[id] = names
	}
}

// dropGRPCServers drops every gRPC server listener of id.
func (e *Engine) dropGRPCServers(id model.Identity, d *Delta) {
	for _, old := range e.groups.grpcServers[id] {
		e.res.drop(resKey{layout.TypeListener, old}, d)
	}
	delete(e.groups.grpcServers, id)
}

// GRPCPermissiveSetName is the name of gRPC permissive name set shard i:
// in permissive mode the gRPC names of every service (clusters,
// assignments, routes, qualified API listeners) are in these sets, sharded
// as the Envoy names are (permissiveShard), and every gRPC group lists
// them instead of copying the names, so a group's size does not grow with
// the mesh.
func GRPCPermissiveSetName(i int) string { return fmt.Sprintf("grpc-permissive-%02d", i) }

// grpcSpillSetName is the name of the i-th own name set of id's gRPC
// group; '@' is in no ServiceAccount name, so it is no Envoy group's.
func grpcSpillSetName(id model.Identity, i int) string {
	return fmt.Sprintf("group/%s/%s@%s/%02d", id.Namespace, id.Name, layout.ProxylessGRPC, i)
}

// grpcNames collects the gRPC names of the services in refs.
func (e *Engine) grpcNames(refs []svcRef) *reachNames {
	n := &reachNames{}
	for _, s := range refs {
		g := &e.svcs.frag(s.nn).grpc
		n.clusters = append(n.clusters, g.clusters...)
		n.endpoints = append(n.endpoints, g.endpoints...)
		n.routes = append(n.routes, g.routes...)
		n.listeners = append(n.listeners, g.listeners...)
	}
	return n
}

// compileGRPCGroup rebuilds the gRPC group of id: the gRPC names of the
// services it reaches (in permissive mode, the gRPC permissive sets), the
// bare-name listeners of those in its namespace, and its server
// listeners. A group whose own names pass MaxGroupBytes keeps them in name
// sets of its own, as an Envoy group does.
func (e *Engine) compileGRPCGroup(id model.Identity, d *Delta) {
	var n reachNames
	var sets []string
	reach := e.reach.reached(id)
	if e.m.Permissive() {
		if len(reach) > 0 {
			sets = e.groups.existing(GRPCPermissiveSetName)
		}
	} else {
		n = *e.grpcNames(reach)
	}
	for _, s := range reach {
		if s.nn.Namespace == id.Namespace {
			n.listeners = append(n.listeners, e.bareListeners(s.nn)...)
		}
	}
	n.listeners = append(n.listeners, e.groups.grpcServers[id]...)
	own := map[string][]string{
		layout.TypeCluster:  n.clusters,
		layout.TypeEndpoint: n.endpoints,
		layout.TypeRoute:    n.routes,
		layout.TypeListener: n.listeners,
	}
	for typ, names := range own {
		sort.Strings(names)
		own[typ] = slices.Compact(names)
	}
	spill := func(byType map[string][]string) []string {
		return e.groups.spillAs(func(i int) string { return grpcSpillSetName(id, i) }, e.groups.grpcSpilled, id, byType, d)
	}
	if namesSize(own) > MaxGroupBytes {
		sets = append(slices.Clone(sets), spill(own)...)
		own = nil
	} else {
		spill(nil)
	}
	g := &meshv1.ProxyGroup{
		Identity:  &meshv1.Identity{Namespace: id.Namespace, ServiceAccount: id.Name},
		Resources: map[string]*meshv1.ResourceNames{},
		Sets:      sets,
	}
	for typ, names := range own {
		if len(names) > 0 {
			g.Resources[TypeURL(typ)] = &meshv1.ResourceNames{Names: names}
		}
	}
	g.Aliases = e.retries.grpcAliases(id)
	grp := &Group{Identity: id, Group: g, Version: GroupVersion(g), Flavour: layout.ProxylessGRPC}
	if old := e.groups.grpc[id]; old != nil && old.Version == grp.Version {
		return
	}
	e.groups.grpc[id] = grp
	d.Groups = append(d.Groups, grp)
}

// GRPCGroupNames lists the names of typeURL the gRPC group of id serves:
// its own and those of the sets it lists, sorted.
func (e *Engine) GRPCGroupNames(id model.Identity, typeURL string) []string {
	return e.groups.namesOf(e.groups.grpc[id], typeURL)
}

// dropGRPCGroup removes the gRPC group of id, adding its key to d.
func (e *Engine) dropGRPCGroup(id model.Identity, d *Delta) {
	e.groups.spillAs(func(i int) string { return grpcSpillSetName(id, i) }, e.groups.grpcSpilled, id, nil, d)
	if grp := e.groups.grpc[id]; grp != nil {
		delete(e.groups.grpc, id)
		d.DeletedGroups = append(d.DeletedGroups, grp.Key())
	}
}

// GRPCGroup returns the gRPC-flavour group of id, or nil.
func (e *Engine) GRPCGroup(id model.Identity) *Group { return e.groups.grpc[id] }
