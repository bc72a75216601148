// Package compile is the pure compile core of the policy-compiler: it turns
// the observed mesh model into Envoy v3 resources and per-identity proxy
// groups, following OSM's SMI semantics, and does it incrementally.
//
// An Engine owns a model.Model. Apply records an observed change and marks
// what depends on it dirty; Compile rebuilds only the dirty resources and
// returns a Delta of the resources, groups and policy statuses whose content
// changed. Every resource is validated with ValidateAll and serialised once;
// its version is a hash of its bytes. The package does no I/O.
//
// # Layout of the compiled resources
//
//	cluster   ns/svc|port            one per service port: EDS, upstream mTLS with SDS
//	                                 secrets layout.SecretServiceCert and layout.SecretRootCert and
//	                                 a URI SAN match on the identities backing the service;
//	                                 circuit breakers and outlier detection of its
//	                                 UpstreamTrafficSetting (upstream.go)
//	endpoint  ns/svc|port            its ClusterLoadAssignment (ready endpoints, by zone)
//	route     ns/svc|port            http and grpc ports: one virtual host with the
//	                                 service's host names; weighted clusters for a split apex
//	cluster   ns/svc|port|local      static cluster to the application on 127.0.0.1:targetPort
//	listener  outbound-listener      shared by every proxy that reaches a service, both
//	                                 modes: 0.0.0.0:15001, use_original_dst; hands each
//	                                 connection to the listener of its original destination;
//	                                 a default chain closes the rest
//	listener  outbound-listener:ns/svc|port  one per service port with a cluster IP: bound
//	                                 (bind_to_port false) to the cluster IPs; one chain:
//	                                 HCM with RDS (http, grpc) or tcp_proxy (tcp)
//	listener  outbound-listener:ns/svc|port  of a headless service port: bound to its
//	                                 ready endpoints' addresses, tcp_proxy to
//	cluster   ns/svc|port|direct     ORIGINAL_DST with the same mTLS (headless.go)
//	route     ns/svc|port|retry|ns/sa  a Retry source's copy of the route, with the retry
//	                                 policy; listener outbound-listener:<the same> names it
//	                                 (retry.go); the source's group lists both instead
//	listener  inbound-listener:ns/sa   per identity, on 15003: a TLS chain (client
//	                                 certificate required) per local target port, with
//	                                 network RBAC (tcp) or per-route HTTP RBAC (http)
//	                                 built from the TrafficTargets naming the identity
//	cluster   envoy-tracing-cluster  while MeshConfig tracing is on: the trace
//	                                 collector, in every Envoy group; every HTTP
//	                                 connection manager of the Envoy flavour carries
//	                                 the tracing config naming it (tracing.go)
//
// The egress resources (an Egress's sources' listeners, routes and
// clusters, and MeshConfig's enableEgress passthrough) are described in
// egress.go.
//
// A proxy group, one per identity with running pods, lists the names of each
// type that the identity's proxies are served. Clusters, endpoints, routes
// and listeners are shared by every proxy that reaches the service; SDS
// secret names are relative to the proxy, so no cluster names a client
// identity.
//
// Per-service listeners rather than one outbound listener with a filter
// chain per reachable service: every resource stays small (a listener with
// every service's chain passes NATS's 1 MB message limit at ~2,900 services
// in permissive mode), a service change rewrites its own listener only, and
// the listeners are shared like clusters. Sharding the chains of one
// listener by size would keep big resources that every change rewrites,
// and tcp services (the default protocol) would still need one chain each.
//
// With Options.ProxylessGRPC the engine also compiles the gRPC flavour for
// proxyless gRPC workloads (grpc.go, grpcserver.go, grpcflavour.go): its
// own resources per http and grpc service port, server listeners per pod
// IP, and a gRPC group per identity under layout.GRPCGroupKey. The Envoy
// resources and groups are the same with it or without it.
//
// In permissive mode the outbound names of every service (clusters,
// endpoints, routes, listeners) are in name sets permissive-00 …
// permissive-15, sharded by service, and every group lists the sets that
// exist instead of the names (see PermissiveShards): adding a service
// rewrites one set, not every group. SMI mode has no shared sets. gRPC
// groups do the same with the sets grpc-permissive-00 … grpc-permissive-15
// (GRPCPermissiveSetName), and any group whose own names pass
// MaxGroupBytes keeps them in sets of its own.
package compile

import (
	"fmt"
	"slices"
	"sort"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/multimap"
)

// DefaultTrustDomain is used when the MeshConfig names none.
const DefaultTrustDomain = "cluster.local"

// Options configure an Engine.
type Options struct {
	// MeshName selects the namespaces of this mesh (monitored-by label).
	MeshName string
	// MeshConfig is the MeshConfig object of this mesh.
	MeshConfig model.NN
	// TrustDomain is the SPIFFE trust domain; empty means
	// DefaultTrustDomain.
	TrustDomain string
	// MaxResourceBytes bounds the encoded size of one resource, so that it
	// fits one NATS message with its envelope; 0 means
	// DefaultMaxResourceBytes. A larger resource is reported in
	// Delta.Invalid and not emitted.
	MaxResourceBytes int
	// ProxylessGRPC also emits the gRPC flavour (see grpc.go): its shared
	// resources per http and grpc service port, its server listeners, and
	// a gRPC group per identity (GRPCGroupKey) beside the Envoy one, which
	// stays as it is.
	ProxylessGRPC bool
}

// DefaultMaxResourceBytes leaves room, under NATS's default 1 MiB
// max_payload, for the CompiledResource envelope and message headers.
const DefaultMaxResourceBytes = 1<<20 - 8<<10

// Group is a compiled proxy group.
type Group struct {
	// Identity the group is for.
	Identity model.Identity
	// Group lists the resource names per type URL (generation unset).
	Group *meshv1.ProxyGroup
	// Version is the content hash of Group.
	Version string
	// Flavour is empty for the Envoy group, layout.ProxylessGRPC for the
	// gRPC one.
	Flavour string
}

// Key is the group's key in KV mesh-compiled.
func (g *Group) Key() string {
	if g.Flavour == layout.ProxylessGRPC {
		return layout.GRPCGroupKey(g.Identity.Namespace, g.Identity.Name)
	}
	return layout.GroupKey(g.Identity.Namespace, g.Identity.Name)
}

// Set is a compiled name set: resource names that several proxy groups
// share by listing the set's name.
type Set struct {
	// Set is the names by type URL (generation unset).
	Set *meshv1.NameSet
	// Version is the content hash of Set.
	Version string
}

// Key is the set's key in KV mesh-compiled.
func (s *Set) Key() string { return layout.SetKey(s.Set.GetName()) }

// Delta is what one Compile changed.
type Delta struct {
	// Resources are new or changed resources, sorted by key.
	Resources []*Resource
	// DeletedResources are keys of resources that no longer exist, sorted.
	DeletedResources []string
	// Groups are new or changed proxy groups, sorted by key.
	Groups []*Group
	// DeletedGroups are keys of groups that no longer exist, sorted.
	DeletedGroups []string
	// Sets are new or changed name sets, sorted by key.
	Sets []*Set
	// DeletedSets are keys of name sets that no longer exist, sorted.
	DeletedSets []string
	// Statuses are policy verdicts that changed since the last Compile
	// (time and generation unset); they are copies, the caller's to stamp.
	Statuses []*meshv1.PolicyStatus
	// Kept are the new or changed last accepted versions of rejected
	// policy objects, sorted by key; DeletedKept the keys of those that no
	// longer have one (kept.go). They are written with the generation but
	// are no part of what edges serve.
	Kept        []*Kept
	DeletedKept []string
	// Invalid are resources that failed validation: compiler bugs. They are
	// not in Resources, and the last good version (if any) stays.
	Invalid []error
	// Triggers counts the observed changes, by kind, this compile covers.
	Triggers map[string]int
}

// Empty reports whether the delta writes nothing.
func (d *Delta) Empty() bool {
	return len(d.Resources) == 0 && len(d.DeletedResources) == 0 && len(d.Groups) == 0 && len(d.DeletedGroups) == 0 &&
		len(d.Sets) == 0 && len(d.DeletedSets) == 0
}

type resKey struct{ typ, name string }

// resources holds the compiled resources by type and name.
type resources map[resKey]*Resource

// get is the resource under k, or nil.
func (r resources) get(k resKey) *Resource { return r[k] }

// record stores a valid resource and adds it to d when its version
// changed. It reports that the resource exists.
func (r resources) record(k resKey, res *Resource, d *Delta) bool {
	if old := r[k]; old != nil && old.Version == res.Version {
		return true
	}
	r[k] = res
	d.Resources = append(d.Resources, res)
	return true
}

// drop removes the resource under k, adding its key to d.
func (r resources) drop(k resKey, d *Delta) {
	if res := r[k]; res != nil {
		delete(r, k)
		d.DeletedResources = append(d.DeletedResources, res.Key())
	}
}

// Engine compiles a mesh model incrementally. It is not safe for concurrent
// use. It composes parts that each own their state: the dirty set of the
// next Compile, the accepted policies, the compiled resources and
// services, what each identity reaches and serves, and the proxy groups
// with their name sets.
type Engine struct {
	opts Options
	m    *model.Model

	dirty  dirtySet
	pol    policies
	res    resources
	svcs   services
	reach  reachIndex
	groups groups
	// bare are the services that claim each bare gRPC target name.
	bare bareNames
	// retries are the retry routes and listeners of each source identity
	// (its zero value is empty).
	retries retryRoutes
	// egress is the Egress part (egress.go).
	egress egressState
	// ups are the UpstreamTrafficSettings (upstream.go).
	ups upstreams
	// ing are the IngressBackends (ingress.go).
	ing ingresses
	// headless are the endpoint addresses of the headless ports, with
	// their owners (headless.go).
	headless headlessOwners
	// tracing is the HTTP connection managers' tracing config of the
	// current MeshConfig, built once per MeshConfig version; nil while
	// tracing is off (tracing.go).
	tracing *hcmv3.HttpConnectionManager_Tracing
}

// New returns an Engine with an empty model.
func New(o Options) *Engine {
	return &Engine{
		opts:   o,
		m:      model.New(o.MeshName, o.MeshConfig),
		dirty:  newDirtySet(),
		pol:    newPolicies(),
		res:    resources{},
		svcs:   newServices(),
		reach:  newReachIndex(),
		groups: newGroups(),
		bare:   bareNames{},
		egress: newEgressState(),
		ups:    newUpstreams(),
		ing:    newIngresses(),

		headless: newHeadlessOwners(),
	}
}

// Model is the engine's mesh model, for reading.
func (e *Engine) Model() *model.Model { return e.m }

// Pending reports whether changes were applied since the last Compile.
func (e *Engine) Pending() bool { return e.dirty.pending() }

// ApplyKey applies one mesh-observed KV entry: value is its protobuf
// encoding, or nil for a deleted key.
func (e *Engine) ApplyKey(key string, value []byte) error {
	if key == bus.FenceKey {
		return nil // the writer's term, no part of the mesh
	}
	if key == layout.SyncKey {
		if value == nil {
			e.m.SetSync(nil)
			return nil
		}
		s := &meshv1.SyncMarker{}
		if err := proto.Unmarshal(value, s); err != nil {
			return fmt.Errorf("decode %s: %w", key, err)
		}
		e.m.SetSync(s)
		return nil
	}
	o, err := layout.ParseObserved(key)
	if err != nil {
		return err
	}
	var msg proto.Message
	if value != nil {
		msg = model.NewMessage(o.Kind)
		if msg == nil {
			return fmt.Errorf("key %s: unknown kind %q", key, o.Kind)
		}
		if err := proto.Unmarshal(value, msg); err != nil {
			return fmt.Errorf("decode %s: %w", key, err)
		}
	}
	return e.Apply(o.Kind, o.Namespace, o.Name, msg)
}

// Apply records an observed object (nil value: deleted) and marks what
// depends on it dirty.
func (e *Engine) Apply(kind, namespace, name string, value proto.Message) error {
	nn := model.NN{Namespace: namespace, Name: name}
	if kind == layout.KindMeshConfig && nn != e.opts.MeshConfig {
		return nil // another mesh's MeshConfig
	}
	var beforeSvcs []model.NN
	var beforeID *model.Identity
	wasMeshed := false
	switch kind {
	case layout.KindNamespace:
		wasMeshed = e.m.Meshed(name)
	case layout.KindPod:
		if id, svcs, ok := e.m.PodBacking(nn); ok {
			beforeSvcs, beforeID = svcs, &id
		}
	case layout.KindEndpointSlice:
		if old := e.m.SliceServiceOf(nn); old != nil {
			beforeSvcs = append(beforeSvcs, *old)
		}
	}
	if _, err := e.m.Apply(kind, namespace, name, value); err != nil {
		return err
	}
	e.dirty.observed(kind)
	switch kind {
	case layout.KindNamespace:
		e.namespaceChanged(name, wasMeshed)
	case layout.KindMeshConfig:
		e.dirty.everything()
	case layout.KindService:
		e.dirty.service(nn)
		e.upstreamServiceChanged(nn)
	case layout.KindEndpointSlice:
		if now := e.m.SliceServiceOf(nn); now != nil {
			beforeSvcs = append(beforeSvcs, *now)
		}
		for _, svc := range beforeSvcs {
			e.dirty.endpoints(svc)
			e.ingressSourceChanged(svc)
			// A slice also resolves named target ports.
			if !sameTargets(e.svcs.ports(svc), e.servicePorts(svc)) {
				e.dirty.service(svc)
			}
		}
	case layout.KindPod:
		e.podChanged(nn, beforeSvcs, beforeID)
	case layout.KindEgress:
		e.egress.changed(nn)
	case layout.KindUpstreamTrafficSetting:
		e.upstreamObserved(nn)
	case layout.KindIngressBackend:
		e.ingressObserved(nn)
	case layout.KindServiceAccount:
		// A group exists only while its ServiceAccount does: the edge
		// serves no certificate, and keeps no stream, for an identity the
		// compiled mesh no longer holds.
		e.dirty.proxy(model.Identity{Namespace: namespace, Name: name})
	default:
		e.dirty.policy(kind, nn)
	}
	return nil
}

// namespaceChanged marks what a Namespace change touched. Only whether the
// namespace belongs to the mesh (model.Meshed) shapes the output: when it
// flips, every Service of the namespace (and, through them, their clients,
// apexes and permissive name sets) and every identity with pods there (its
// reach, inbound listener and group) are rebuilt; its other edits change
// nothing. The cost grows with the namespace, not with the mesh.
func (e *Engine) namespaceChanged(name string, wasMeshed bool) {
	if e.m.Meshed(name) == wasMeshed {
		return
	}
	for _, svc := range e.m.ServicesIn(name) {
		e.dirty.service(svc)
	}
	for _, id := range e.m.IdentitiesIn(name) {
		e.dirty.proxy(id)
	}
}

// podChanged marks what a pod change touched: the services whose set of
// backing identities differs from what was compiled, and the identities
// whose group appears or disappears.
func (e *Engine) podChanged(nn model.NN, before []model.NN, beforeID *model.Identity) {
	id, after, ok := e.m.PodBacking(nn)
	for _, svc := range append(before, after...) {
		if !slices.Equal(e.svcs.ids(svc), e.m.ServiceIdentities(svc)) {
			e.dirty.service(svc)
		}
	}
	ids := []model.Identity{}
	if beforeID != nil {
		ids = append(ids, *beforeID)
	}
	if ok {
		ids = append(ids, id)
	}
	for _, id := range ids {
		if e.opts.ProxylessGRPC {
			e.dirty.inbound(id) // its pod IPs name its gRPC server listeners
		}
		want := e.m.HasPods(id) && e.m.Meshed(id.Namespace) && e.m.HasServiceAccount(id)
		if have := e.groups.get(id) != nil; want != have {
			e.dirty.proxy(id)
		}
	}
}

func (e *Engine) maxBytes() int {
	if e.opts.MaxResourceBytes > 0 {
		return e.opts.MaxResourceBytes
	}
	return DefaultMaxResourceBytes
}

// trustDomain is --trust-domain, the one every component was installed
// with (the MeshConfig has no trust domain: see CertificateSpec).
func (e *Engine) trustDomain() string {
	if e.opts.TrustDomain != "" {
		return e.opts.TrustDomain
	}
	return DefaultTrustDomain
}

// Compile rebuilds what the changes applied since the last Compile made
// dirty and returns what changed.
func (e *Engine) Compile() *Delta {
	d := &Delta{Triggers: e.dirty.triggers}
	if e.dirty.all {
		e.markAll()
		e.compileTracing(d)
	}
	e.compilePolicies(d)
	// A backend's ports and existence shape its apexes' routes.
	for s := range e.dirty.svc {
		for apex := range e.pol.apexesOf(s) {
			e.dirty.service(apex)
		}
	}
	for _, s := range multimap.Sorted(e.dirty.svc) {
		e.compileService(s, d)
	}
	e.compileUpstreamServices(d)
	for _, s := range multimap.Sorted(e.dirty.ep) {
		if _, done := e.dirty.svc[s]; !done {
			e.compileEndpoints(s, d)
		}
	}
	e.compileMovedHeadless(d)
	e.compileBareListeners(d)
	for _, s := range multimap.Sorted(e.dirty.grpcRoute) {
		if _, done := e.dirty.svc[s]; !done && e.svcs.has(s) {
			e.compileGRPCRoutes(s, d)
		}
	}
	e.compileShared(d)
	if e.dirty.allOut {
		for _, id := range e.m.Identities() {
			e.dirty.outbound(id)
		}
	}
	for _, id := range multimap.Sorted(e.dirty.out) {
		e.compileOutbound(id)
	}
	for _, id := range multimap.Sorted(e.dirty.retrySrc) {
		e.compileRetries(id, d)
	}
	for _, id := range multimap.Sorted(e.dirty.in) {
		e.compileInbound(id, d)
	}
	e.compileEgress(d)
	e.compileOutboundListener(d)
	for _, id := range multimap.Sorted(e.dirty.grp) {
		e.compileGroup(id, d)
	}
	e.recordKept(d)
	e.dirty.reset()
	sortByKey(d.Resources)
	sort.Strings(d.DeletedResources)
	sortByKey(d.Groups)
	sort.Strings(d.DeletedGroups)
	sortByKey(d.Sets)
	sort.Strings(d.DeletedSets)
	return d
}

// markAll marks everything the model holds, and everything compiled, dirty.
func (e *Engine) markAll() {
	for i := range PermissiveShards {
		e.dirty.shard(i)
	}
	for _, s := range e.m.ServiceNames() {
		e.dirty.service(s)
	}
	for s := range e.svcs.names() {
		e.dirty.service(s)
	}
	for _, id := range e.m.Identities() {
		e.dirty.proxy(id)
	}
	for id := range e.groups.identities() {
		e.dirty.proxy(id)
	}
	for id := range e.retries.byID {
		e.dirty.retrySrc.add(id)
	}
	for kind, names := range map[string][]model.NN{
		layout.KindHTTPRouteGroup: e.m.HTTPRouteGroupNames(),
		layout.KindTCPRoute:       e.m.TCPRouteNames(),
		layout.KindTrafficTarget:  e.m.TrafficTargetNames(),
		layout.KindTrafficSplit:   e.m.TrafficSplitNames(),
		layout.KindRetry:          e.m.RetryNames(),

		layout.KindUpstreamTrafficSetting: e.m.ObjectNames(layout.KindUpstreamTrafficSetting),
		layout.KindIngressBackend:         e.m.ObjectNames(layout.KindIngressBackend),
	} {
		for _, nn := range names {
			e.dirty.policy(kind, nn)
		}
	}
}

// put records the resource of type typ named name that a builder
// returned, and adds it to the delta when its version changed. It is
// curried so that a builder's two results feed it directly:
// e.put(d, typ, name)(buildCluster(...)). It reports the key and whether the
// resource exists: a failed build is reported in d.Invalid and keeps the
// last good version.
func (e *Engine) put(d *Delta, typ, name string) func(*Resource, error) (resKey, bool) {
	return func(r *Resource, err error) (resKey, bool) {
		k := resKey{typ, name}
		if err == nil && len(r.Bytes) > e.maxBytes() {
			err = fmt.Errorf("%s %s is %d bytes, over the %d-byte limit of one message", typ, name, len(r.Bytes), e.maxBytes())
		}
		if err != nil {
			d.Invalid = append(d.Invalid, err)
			return k, e.res.get(k) != nil
		}
		return k, e.res.record(k, r, d)
	}
}

// Resources returns every current resource, sorted by key.
func (e *Engine) Resources() []*Resource { return sortedValues(e.res) }

// Groups returns every current proxy group, sorted by key.
func (e *Engine) Groups() []*Group {
	out := append(sortedValues(e.groups.byID), sortedValues(e.groups.grpc)...)
	sortByKey(out)
	return out
}

// Sets returns every current name set, sorted by key.
func (e *Engine) Sets() []*Set { return sortedValues(e.groups.sets) }

// Set returns the current name set called name, or nil.
func (e *Engine) Set(name string) *Set { return e.groups.set(name) }

// GroupNames returns the names of typeURL the proxies of id are served: the
// group's own and those of the sets it lists, sorted, without duplicates.
func (e *Engine) GroupNames(id model.Identity, typeURL string) []string {
	return e.groups.names(id, typeURL)
}

// Resource returns a current resource, or nil.
func (e *Engine) Resource(typ, name string) *Resource { return e.res.get(resKey{typ, name}) }

// Group returns the current proxy group of id, or nil.
func (e *Engine) Group(id model.Identity) *Group { return e.groups.get(id) }

// Rejected counts the policy objects whose latest verdict is a rejection.
func (e *Engine) Rejected() int { return e.pol.rejected() }

// keyed is a compiled value with a key in KV mesh-compiled.
type keyed interface{ Key() string }

// sortByKey sorts compiled values by key.
func sortByKey[V keyed](vs []V) {
	sort.Slice(vs, func(i, j int) bool { return vs[i].Key() < vs[j].Key() })
}

// sortedValues lists the values of mp, sorted by key.
func sortedValues[K comparable, V keyed](mp map[K]V) []V {
	out := make([]V, 0, len(mp))
	for _, v := range mp {
		out = append(out, v)
	}
	sortByKey(out)
	return out
}
