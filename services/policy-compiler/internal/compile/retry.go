package compile

import (
	"hash"
	"maps"
	"slices"
	"sort"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/policy"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/multimap"
)

// Retry policies (policy.openservicemesh.io/v1alpha1 Retry).
//
// A Retry makes the proxies of its source identity retry their requests to
// its destination Services. The outbound routes and listeners of a service
// port are shared by every client, so a source-specific policy needs
// resources of its own: for each http or grpc port of a destination the
// source reaches, a copy of the port's route with the retry policy on its
// route (RetryRouteName), and a copy of the port's listener whose RDS names
// that route (RetryListenerName). The source's group lists them in place of
// the shared ones; clusters and endpoints stay shared. The listener copy
// has the shared one's address, and a group never lists both.
//
// A Retry change rebuilds only its source's copies and group; a change of
// a destination Service rebuilds the copies of the sources that reach it
// (markClients marks their outbound configuration, compileOutbound their
// copies).
// When two Retries of one source name the same Service, the first by
// namespace/name applies. In permissive mode a group with retry copies
// lists the names of the permissive shards that hold the replaced shared
// names itself (about a sixteenth of the services each), and the other
// shards as their sets.
//
// MeshConfig's spec.featureFlags.enableRetryPolicy false turns every Retry
// off (the objects are still judged); unset means on.
//
// The gRPC flavour (proxyless gRPC, Options.ProxylessGRPC): its API
// listeners are named by the dial target and shared, and each names the
// shared route grpc:ns/svc|port over RDS, so a source cannot be given a
// listener copy. It gets a copy of the route instead, stored as
// GRPCRetryRouteName with the shared route's name inside, and its gRPC
// group aliases the shared name to it (ProxyGroup.aliases): the edge
// serves the copy's content to the source's proxies under the name their
// listener asks for, and the shared route to everyone else (see the edge's
// pool/alias.go). gRPC-Go reads retry_on (only the gRPC status conditions
// cancelled, deadline-exceeded, internal, resource-exhausted and
// unavailable; HTTP conditions such as 5xx have no meaning for a gRPC
// status and are left out), num_retries (at least 1: a Retry with
// numRetries 0 gets no copy) and the backoff's base interval; it ignores
// per_try_timeout, which the copy leaves out. A Retry whose conditions
// include none of gRPC's gets no copy for proxyless clients. A Retry with
// conditions gRPC does not read is accepted with a warning naming them
// (retry_proxyless.go), for Envoy sidecars still retry on all of them.

// RetryRouteName is the name of source id's copy of the route of a service
// port, with its retry policy: "ns/svc|port|retry|srcns/srcsa".
func RetryRouteName(svc model.NN, port int32, id model.Identity) string {
	return ClusterName(svc, port) + "|retry|" + id.String()
}

// GRPCRetryRouteName is the key of source id's copy of the gRPC route of
// a service port: "grpc:ns/svc|port|retry|srcns/srcsa". Its message is
// named GRPCClusterName, the name the source's proxies ask for.
func GRPCRetryRouteName(svc model.NN, port int32, id model.Identity) string {
	return GRPCClusterName(svc, port) + "|retry|" + id.String()
}

// RetryListenerName is the name of source id's copy of the outbound
// listener of a service port, whose RDS names RetryRouteName.
func RetryListenerName(svc model.NN, port int32, id model.Identity) string {
	return "outbound-listener:" + RetryRouteName(svc, port, id)
}

// acceptedRetries are the accepted Retries, indexed by source. A change of
// a destination Service needs no index of its own: its copies exist only
// for sources that reach it, whose outbound configuration the service's
// compile marks (markClients), and compileOutbound marks their copies.
type acceptedRetries struct {
	byName   accepted[*policy.AcceptedRetry]
	bySource map[model.Identity]set[model.NN] // source → its Retries
}

func newAcceptedRetries() acceptedRetries {
	return acceptedRetries{byName: accepted[*policy.AcceptedRetry]{}, bySource: map[model.Identity]set[model.NN]{}}
}

// set replaces the accepted version of nn (nil: none); it returns the one
// it replaced and whether it changed.
func (a *acceptedRetries) set(nn model.NN, r *policy.AcceptedRetry) (*policy.AcceptedRetry, bool) {
	old, changed := a.byName.set(nn, r, r != nil)
	if !changed {
		return old, false
	}
	for _, x := range []*policy.AcceptedRetry{old, r} {
		if x == nil {
			continue
		}
		src := sourceOf(x)
		if x == old {
			multimap.Remove(a.bySource, src, nn)
		} else {
			multimap.Add(a.bySource, src, nn)
		}
	}
	return old, true
}

func sourceOf(r *policy.AcceptedRetry) model.Identity { return model.Identity(r.Source) }

// ValidateRetry checks a Retry on its own (libs/policy's rules, the
// webhook's).
func ValidateRetry(nn model.NN, r *meshv1.Retry) (*policy.AcceptedRetry, *Rejection) {
	return policy.Retry(nn.Namespace, r)
}

// compileRetryPolicies validates the dirty Retries and marks the sources
// whose accepted Retries changed.
func (e *Engine) compileRetryPolicies(d *Delta) {
	for _, nn := range multimap.Sorted(e.dirty.retry) {
		r, ok := reviewWarn(&e.pol, d, layout.KindRetry, nn, e.m.Retry(nn), ValidateRetry, e.retryWarning)
		if !ok {
			continue
		}
		if old, changed := e.pol.retries.set(nn, r); changed {
			for _, x := range []*policy.AcceptedRetry{old, r} {
				if x != nil {
					e.dirty.retrySrc.add(sourceOf(x))
				}
			}
		}
	}
}

// retryVariants are the retry copies of one source identity.
type retryVariants struct {
	keys []resKey
	// over maps a shared route or listener name to the source's copy.
	over map[string]string
	// shards are the permissive name sets holding the shared names that
	// over replaces.
	shards set[int]
	// grpcAlias maps a shared gRPC route name to the source's copy, which
	// its gRPC group serves under that name; grpcSvcs are their services.
	grpcAlias map[string]string
	grpcSvcs  set[model.NN]
}

// retryShards splits a permissive group with retry copies: the sets of
// the shards that hold none of the names its copies replace, and the
// services of the others, whose names the group lists itself.
func (e *Engine) retryShards(id model.Identity, reach []svcRef) ([]string, []svcRef) {
	v := e.retries.byID[id]
	var sets []string
	for i := range PermissiveShards {
		if _, own := v.shards[i]; !own && e.groups.set(PermissiveSetName(i)) != nil {
			sets = append(sets, PermissiveSetName(i))
		}
	}
	var refs []svcRef
	for _, s := range reach {
		if _, own := v.shards[permissiveShard(s.nn)]; own {
			refs = append(refs, s)
		}
	}
	return sets, refs
}

// retryRoutes holds the retry copies of each source identity; the zero
// value holds none.
type retryRoutes struct {
	byID map[model.Identity]*retryVariants
	// grpcBySvc are the sources with a gRPC copy of a service's route,
	// rebuilt when its shared gRPC route is (markGRPCRetries).
	grpcBySvc map[model.NN]set[model.Identity]
}

// grpcAliases are the route aliases of id's gRPC group; nil when none.
func (r *retryRoutes) grpcAliases(id model.Identity) map[string]*meshv1.ResourceAliases {
	v := r.byID[id]
	if v == nil || len(v.grpcAlias) == 0 {
		return nil
	}
	return map[string]*meshv1.ResourceAliases{TypeURL(layout.TypeRoute): {Names: v.grpcAlias}}
}

// markGRPCRetries marks the sources with gRPC copies of nn's routes, whose
// matches compileGRPCRoutes just rebuilt.
func (e *Engine) markGRPCRetries(nn model.NN) {
	for id := range e.retries.grpcBySvc[nn] {
		e.dirty.retrySrc.add(id)
	}
}

// overrides maps the shared names id's group lists to id's copies; nil
// when it has none.
func (r *retryRoutes) overrides(id model.Identity) map[string]string {
	if v := r.byID[id]; v != nil {
		return v.over
	}
	return nil
}

// retryEnabled reports MeshConfig's spec.featureFlags.enableRetryPolicy.
func (e *Engine) retryEnabled() bool { return policy.RetryPolicyEnabled(e.m.MeshConfig()) }

// reaches reports whether id reached svc at its last compileOutbound.
func (e *Engine) reaches(id model.Identity, svc model.NN) bool {
	if !e.svcs.has(svc) {
		return false
	}
	refs := e.reach.reached(id)
	key := e.svcs.frag(svc).key
	i := sort.Search(len(refs), func(i int) bool { return refs[i].key >= key })
	return i < len(refs) && refs[i].nn == svc
}

// compileRetries rebuilds the retry copies of source id from its accepted
// Retries and what it reaches, drops the ones it no longer has, and marks
// its group.
func (e *Engine) compileRetries(id model.Identity, d *Delta) {
	cur := &retryVariants{over: map[string]string{}, shards: set[int]{}, grpcAlias: map[string]string{}, grpcSvcs: set[model.NN]{}}
	if e.retryEnabled() && e.m.HasPods(id) && e.m.Meshed(id.Namespace) {
		claimed := set[model.NN]{}
		for _, rn := range multimap.Sorted(e.pol.retries.bySource[id]) {
			r := e.pol.retries.byName[rn]
			for _, dst := range r.Destinations {
				svc := model.NN(dst)
				if _, dup := claimed[svc]; dup || !e.reaches(id, svc) {
					continue
				}
				claimed.add(svc)
				cur.shards.add(permissiveShard(svc))
				e.compileRetryPorts(id, svc, r.Policy, cur, d)
			}
		}
	}
	kept := map[resKey]bool{}
	for _, k := range cur.keys {
		kept[k] = true
	}
	if old := e.retries.byID[id]; old != nil {
		for _, k := range old.keys {
			if !kept[k] {
				e.res.drop(k, d)
			}
		}
		for svc := range old.grpcSvcs {
			multimap.Remove(e.retries.grpcBySvc, svc, id)
		}
	}
	for svc := range cur.grpcSvcs {
		if e.retries.grpcBySvc == nil {
			e.retries.grpcBySvc = map[model.NN]set[model.Identity]{}
		}
		multimap.Add(e.retries.grpcBySvc, svc, id)
	}
	if len(cur.keys) == 0 && len(cur.grpcSvcs) == 0 {
		delete(e.retries.byID, id)
	} else {
		if e.retries.byID == nil {
			e.retries.byID = map[model.Identity]*retryVariants{}
		}
		e.retries.byID[id] = cur
	}
	e.dirty.group(id)
}

// compileRetryPorts builds id's copies of the route and listener of each
// http or grpc port of svc.
func (e *Engine) compileRetryPorts(id model.Identity, svc model.NN, p policy.RetryPolicy, cur *retryVariants, d *Delta) {
	frag := e.svcs.frag(svc)
	for _, sp := range e.svcs.ports(svc) {
		if !sp.protocol.IsHTTP() {
			continue
		}
		split := e.splitFor(sp)
		if e.opts.ProxylessGRPC {
			e.compileGRPCRetryPort(id, sp, split, p, cur, d)
		}
		if !slices.Contains(frag.routes, sp.cluster()) {
			continue
		}
		route := RetryRouteName(svc, sp.port, id)
		k, ok := e.put(d, layout.TypeRoute, route)(buildRetryRoute(sp, split, route, p))
		if !ok {
			continue
		}
		cur.keys = append(cur.keys, k)
		cur.over[sp.cluster()] = route
		shared := ServiceListenerName(svc, sp.port)
		if !slices.Contains(frag.listeners, shared) {
			continue
		}
		name := RetryListenerName(svc, sp.port, id)
		l, err := buildServiceListenerAs(sp, split, name, route, e.tracing)
		if l == nil && err == nil {
			continue
		}
		if k, ok := e.put(d, layout.TypeListener, name)(l, err); ok {
			cur.keys = append(cur.keys, k)
			cur.over[shared] = name
		}
	}
}

// buildRetryRoute is the route of sp (buildOutboundRoute's) named name,
// with the retry policy on its route.
func buildRetryRoute(sp servicePort, split []weighted, name string, p policy.RetryPolicy) (*Resource, error) {
	rc := outboundRouteConfig(sp, split)
	rc.Name = name
	for _, vh := range rc.VirtualHosts {
		for _, r := range vh.Routes {
			if a := r.GetRoute(); a != nil {
				a.RetryPolicy = envoyRetryPolicy(p)
			}
		}
	}
	return newResource(layout.TypeRoute, rc.Name, rc)
}

// envoyRetryPolicy is OSM's mapping of a Retry's policy: retry_on,
// num_retries, per_try_timeout and the backoff's base interval (Envoy's
// maximum interval is 10 times it).
func envoyRetryPolicy(p policy.RetryPolicy) *routev3.RetryPolicy {
	rp := &routev3.RetryPolicy{RetryOn: strings.Join(p.RetryOn, ",")}
	if p.NumRetries != nil {
		rp.NumRetries = wrapperspb.UInt32(*p.NumRetries)
	}
	if p.PerTryTimeout > 0 {
		rp.PerTryTimeout = durationpb.New(p.PerTryTimeout)
	}
	if p.BackoffBase > 0 {
		rp.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(p.BackoffBase)}
	}
	return rp
}

// withOverrides replaces in sorted names those over maps, keeping them
// sorted.
func withOverrides(names []string, over map[string]string) []string {
	if len(over) == 0 {
		return names
	}
	out := make([]string, len(names))
	changed := false
	for i, n := range names {
		if v, ok := over[n]; ok {
			n, changed = v, true
		}
		out[i] = n
	}
	if !changed {
		return names
	}
	sort.Strings(out)
	return out
}

// compileGRPCRetryPort builds id's copy of the gRPC route of sp, with the
// retry policy gRPC reads, and records the alias its gRPC group serves it
// under.
func (e *Engine) compileGRPCRetryPort(id model.Identity, sp servicePort, split []weighted, p policy.RetryPolicy, cur *retryVariants, d *Delta) {
	shared := GRPCClusterName(sp.svc, sp.port)
	rp := grpcRetryPolicy(p)
	if rp == nil || !slices.Contains(e.svcs.frag(sp.svc).grpc.routes, shared) {
		return
	}
	// Followed while it has no copy too: new matches may give it one.
	cur.grpcSvcs.add(sp.svc)
	matches, all := e.grpcClientMatches(sp, e.svcs.ids(sp.svc))
	if !all && len(matches) == 0 {
		return // every call is refused at the client: nothing to retry
	}
	key := GRPCRetryRouteName(sp.svc, sp.port, id)
	k, ok := e.put(d, layout.TypeRoute, key)(buildGRPCRetryRoute(sp, split, matches, all, key, rp))
	if !ok {
		return
	}
	cur.keys = append(cur.keys, k)
	cur.grpcAlias[shared] = key
}

// buildGRPCRetryRoute is the gRPC route of sp (buildGRPCRoute's, named as
// the shared one) stored as key, with rp on every route that forwards (not
// on the last route that refuses the calls no match allows).
func buildGRPCRetryRoute(sp servicePort, split []weighted, matches []HTTPMatch, all bool, key string, rp *routev3.RetryPolicy) (*Resource, error) {
	rc, err := grpcRouteConfig(sp, split, matches, all)
	if err != nil {
		return nil, err
	}
	for _, vh := range rc.VirtualHosts {
		for _, r := range vh.Routes {
			if a := r.GetRoute(); a != nil && r.Name != "deny" {
				a.RetryPolicy = rp
			}
		}
	}
	return newResource(layout.TypeRoute, key, rc)
}

// grpcRetryPolicy is the retry policy gRPC-Go reads (gRFC A44) of a
// Retry's: its gRPC status conditions only, num_retries (gRPC refuses 0)
// and the backoff's base interval; per_try_timeout is left out, gRPC
// ignores it. Nil when nothing is left to retry on.
func grpcRetryPolicy(p policy.RetryPolicy) *routev3.RetryPolicy {
	var on []string
	for _, c := range p.RetryOn {
		if slices.Contains(policy.RetryOnGRPC, c) {
			on = append(on, c)
		}
	}
	if len(on) == 0 || (p.NumRetries != nil && *p.NumRetries == 0) {
		return nil
	}
	rp := &routev3.RetryPolicy{RetryOn: strings.Join(on, ",")}
	if p.NumRetries != nil {
		rp.NumRetries = wrapperspb.UInt32(*p.NumRetries)
	}
	if p.BackoffBase > 0 {
		rp.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(p.BackoffBase)}
	}
	return rp
}

// hashAliases adds a group's aliases to its version; nothing when it has
// none, so the versions of groups without aliases are unchanged.
func hashAliases(h hash.Hash, byType map[string]*meshv1.ResourceAliases) {
	if len(byType) == 0 {
		return
	}
	h.Write([]byte("aliases\x00"))
	for _, t := range slices.Sorted(maps.Keys(byType)) {
		h.Write([]byte(t + "\x00"))
		m := byType[t].GetNames()
		for _, n := range slices.Sorted(maps.Keys(m)) {
			h.Write([]byte(n + "\x00" + m[n] + "\x00"))
		}
	}
}
