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
//	                                 secrets SecretIdentityCert and SecretTrustBundle and
//	                                 a URI SAN match on the identities backing the service
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
//	listener  inbound-listener:ns/sa   per identity, on 15003: a TLS chain (client
//	                                 certificate required) per local target port, with
//	                                 network RBAC (tcp) or per-route HTTP RBAC (http)
//	                                 built from the TrafficTargets naming the identity
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
// listener by size was the alternative; it keeps big resources that every
// change rewrites, and tcp services (the default protocol) still need one
// chain each.
//
// In permissive mode the outbound names of every service (clusters,
// endpoints, routes, listeners) are in name sets permissive-00 …
// permissive-15, sharded by service, and every group lists the sets that
// exist instead of the names (see PermissiveShards): adding a service
// rewrites one set, not every group. SMI mode has no sets.
package compile

import (
	"fmt"
	"slices"
	"sort"

	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
)

// DefaultTrustDomain is used when the MeshConfig names none.
const DefaultTrustDomain = "cluster.local"

// Options configure an Engine.
type Options struct {
	// MeshName selects the namespaces of this mesh (monitored-by label).
	MeshName string
	// MeshConfig is the MeshConfig object of this mesh.
	MeshConfig model.NN
	// TrustDomain is the SPIFFE trust domain when the MeshConfig sets none;
	// empty means DefaultTrustDomain.
	TrustDomain string
	// MaxResourceBytes bounds the encoded size of one resource, so that it
	// fits one NATS message with its envelope; 0 means
	// DefaultMaxResourceBytes. A larger resource is reported in
	// Delta.Invalid and not emitted.
	MaxResourceBytes int
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
}

// Key is the group's key in KV mesh-compiled.
func (g *Group) Key() string { return layout.GroupKey(g.Identity.Namespace, g.Identity.Name) }

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
	// (time and generation unset).
	Statuses []*meshv1.PolicyStatus
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

type policyKey struct {
	kind string
	nn   model.NN
}

type set[K comparable] map[K]struct{}

func (s set[K]) add(k K) { s[k] = struct{}{} }

// Engine compiles a mesh model incrementally. It is not safe for concurrent
// use.
type Engine struct {
	opts Options
	m    *model.Model

	// What the changes applied since the last Compile made dirty.
	all                           bool // recompile everything (namespace or MeshConfig change)
	allOut                        bool // a service changed in permissive mode: every identity's outbound config
	dirtySvc, dirtyEP             set[model.NN]
	dirtyOut, dirtyIn, dirtyGroup set[model.Identity]
	dirtyTT, dirtyHRG, dirtyTCP   set[model.NN]
	dirtySplit                    set[model.NN]
	triggers                      map[string]int

	// Policies: the last accepted version of each, the last verdict, and
	// the indexes the accepted TrafficTargets and splits induce.
	goodHRG     map[model.NN]map[string]HTTPMatch
	goodTCP     map[model.NN]TCPMatch
	goodTT      map[model.NN]*Target
	goodSplit   map[model.NN]*Split
	verdicts    map[policyKey]*meshv1.PolicyStatus
	destTTs     map[model.Identity]set[model.NN]          // destination → its TrafficTargets
	srcDests    map[model.Identity]map[model.Identity]int // source → destinations it may reach
	destSrcs    map[model.Identity]map[model.Identity]int // destination → allowed sources
	backendApex map[model.NN]set[model.NN]                // split backend → apexes

	// Compiled output and what each part was built from, so a change can
	// find what depends on it.
	res         map[resKey]*Resource
	svcRes      map[model.NN][]resKey            // service → its resources
	svcPorts    map[model.NN][]servicePort       // compiled (meshed) services
	svcFrags    map[model.NN]*svcFrag            // service → chains and names it contributes
	svcIDs      map[model.NN][]model.Identity    // service → identities its SANs name
	allSvcs     []svcRef                         // every compiled service, by key; nil when stale
	dirtyShards set[int]                         // permissive name sets to rebuild
	reach       map[model.Identity][]svcRef      // identity → services it reaches
	reachers    map[model.NN]set[model.Identity] // service → identities reaching it (SMI mode)
	indexed     map[model.Identity]bool          // reach[id] is in reachers
	inSvcs      map[model.Identity][]model.NN    // identity → services it serves
	inBackers   map[model.NN]set[model.Identity] // service → identities serving it
	groups      map[model.Identity]*Group
	sets        map[string]*Set
}

// New returns an Engine with an empty model.
func New(o Options) *Engine {
	e := &Engine{
		opts:        o,
		m:           model.New(o.MeshName, o.MeshConfig),
		goodHRG:     map[model.NN]map[string]HTTPMatch{},
		goodTCP:     map[model.NN]TCPMatch{},
		goodTT:      map[model.NN]*Target{},
		goodSplit:   map[model.NN]*Split{},
		verdicts:    map[policyKey]*meshv1.PolicyStatus{},
		destTTs:     map[model.Identity]set[model.NN]{},
		srcDests:    map[model.Identity]map[model.Identity]int{},
		destSrcs:    map[model.Identity]map[model.Identity]int{},
		backendApex: map[model.NN]set[model.NN]{},
		res:         map[resKey]*Resource{},
		svcRes:      map[model.NN][]resKey{},
		svcPorts:    map[model.NN][]servicePort{},
		svcFrags:    map[model.NN]*svcFrag{},
		svcIDs:      map[model.NN][]model.Identity{},
		reach:       map[model.Identity][]svcRef{},
		reachers:    map[model.NN]set[model.Identity]{},
		indexed:     map[model.Identity]bool{},
		inSvcs:      map[model.Identity][]model.NN{},
		inBackers:   map[model.NN]set[model.Identity]{},
		groups:      map[model.Identity]*Group{},
		sets:        map[string]*Set{},
		dirtyShards: set[int]{},
	}
	e.resetDirty()
	return e
}

func (e *Engine) resetDirty() {
	e.all, e.allOut = false, false
	e.dirtySvc, e.dirtyEP = set[model.NN]{}, set[model.NN]{}
	e.dirtyOut, e.dirtyIn, e.dirtyGroup = set[model.Identity]{}, set[model.Identity]{}, set[model.Identity]{}
	e.dirtyTT, e.dirtyHRG, e.dirtyTCP, e.dirtySplit = set[model.NN]{}, set[model.NN]{}, set[model.NN]{}, set[model.NN]{}
	e.triggers = map[string]int{}
}

// Model is the engine's mesh model, for reading.
func (e *Engine) Model() *model.Model { return e.m }

// Pending reports whether changes were applied since the last Compile.
func (e *Engine) Pending() bool { return len(e.triggers) > 0 }

// ApplyKey applies one mesh-observed KV entry: value is its protobuf
// encoding, or nil for a deleted key.
func (e *Engine) ApplyKey(key string, value []byte) error {
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
	switch kind {
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
	e.triggers[kind]++
	switch kind {
	case layout.KindNamespace, layout.KindMeshConfig:
		e.all = true
	case layout.KindService:
		e.dirtySvc.add(nn)
	case layout.KindEndpointSlice:
		if now := e.m.SliceServiceOf(nn); now != nil {
			beforeSvcs = append(beforeSvcs, *now)
		}
		for _, svc := range beforeSvcs {
			e.dirtyEP.add(svc)
			// A slice also resolves named target ports.
			if !sameTargets(e.svcPorts[svc], e.servicePorts(svc)) {
				e.dirtySvc.add(svc)
			}
		}
	case layout.KindPod:
		e.podChanged(nn, beforeSvcs, beforeID)
	case layout.KindTrafficTarget:
		e.dirtyTT.add(nn)
	case layout.KindHTTPRouteGroup:
		e.dirtyHRG.add(nn)
	case layout.KindTCPRoute:
		e.dirtyTCP.add(nn)
	case layout.KindTrafficSplit:
		e.dirtySplit.add(nn)
	}
	return nil
}

// podServices are the services a pod is counted in.
func (e *Engine) podServices(nn model.NN) []model.NN {
	_, svcs, _ := e.m.PodBacking(nn)
	return svcs
}

// podChanged marks what a pod change touched: the services whose set of
// backing identities differs from what was compiled, and the identities
// whose group appears or disappears.
func (e *Engine) podChanged(nn model.NN, before []model.NN, beforeID *model.Identity) {
	after := e.podServices(nn)
	for _, svc := range append(before, after...) {
		if !slices.Equal(e.svcIDs[svc], e.m.ServiceIdentities(svc)) {
			e.dirtySvc.add(svc)
		}
	}
	ids := []model.Identity{}
	if beforeID != nil {
		ids = append(ids, *beforeID)
	}
	if id, _, ok := e.m.PodBacking(nn); ok {
		ids = append(ids, id)
	}
	for _, id := range ids {
		want := e.m.HasPods(id) && e.m.Meshed(id.Namespace)
		if _, have := e.groups[id]; want != have {
			e.dirtyOut.add(id)
			e.dirtyIn.add(id)
			e.dirtyGroup.add(id)
		}
	}
}

func (e *Engine) maxBytes() int {
	if e.opts.MaxResourceBytes > 0 {
		return e.opts.MaxResourceBytes
	}
	return DefaultMaxResourceBytes
}

func (e *Engine) trustDomain() string {
	if td := e.m.MeshConfig().GetCertificate().GetTrustDomain(); td != "" {
		return td
	}
	if e.opts.TrustDomain != "" {
		return e.opts.TrustDomain
	}
	return DefaultTrustDomain
}

// Compile rebuilds what the changes applied since the last Compile made
// dirty and returns what changed.
func (e *Engine) Compile() *Delta {
	d := &Delta{Triggers: e.triggers}
	if e.all {
		e.markAll()
	}
	e.compilePolicies(d)
	// A backend's ports and existence shape its apexes' routes.
	for s := range e.dirtySvc {
		for apex := range e.backendApex[s] {
			e.dirtySvc.add(apex)
		}
	}
	for _, s := range sortedNN(e.dirtySvc) {
		e.compileService(s, d)
	}
	for _, s := range sortedNN(e.dirtyEP) {
		if _, done := e.dirtySvc[s]; !done {
			e.compileEndpoints(s, d)
		}
	}
	e.compileShared(d)
	if e.allOut {
		for _, id := range e.m.Identities() {
			e.dirtyOut.add(id)
		}
	}
	for _, id := range sortedIDs(e.dirtyOut) {
		e.compileOutbound(id)
	}
	for _, id := range sortedIDs(e.dirtyIn) {
		e.compileInbound(id, d)
	}
	for _, id := range sortedIDs(e.dirtyGroup) {
		e.compileGroup(id, d)
	}
	e.resetDirty()
	sort.Slice(d.Resources, func(i, j int) bool { return d.Resources[i].Key() < d.Resources[j].Key() })
	sort.Strings(d.DeletedResources)
	sort.Slice(d.Groups, func(i, j int) bool { return d.Groups[i].Key() < d.Groups[j].Key() })
	sort.Strings(d.DeletedGroups)
	sort.Slice(d.Sets, func(i, j int) bool { return d.Sets[i].Key() < d.Sets[j].Key() })
	sort.Strings(d.DeletedSets)
	return d
}

func (e *Engine) markAll() {
	for i := range PermissiveShards {
		e.dirtyShards.add(i)
	}
	for _, s := range e.m.ServiceNames() {
		e.dirtySvc.add(s)
	}
	for s := range e.svcPorts {
		e.dirtySvc.add(s)
	}
	ids := e.m.Identities()
	for id := range e.groups {
		ids = append(ids, id)
	}
	for _, id := range ids {
		e.dirtyOut.add(id)
		e.dirtyIn.add(id)
		e.dirtyGroup.add(id)
	}
	for _, nn := range e.m.HTTPRouteGroupNames() {
		e.dirtyHRG.add(nn)
	}
	for _, nn := range e.m.TCPRouteNames() {
		e.dirtyTCP.add(nn)
	}
	for _, nn := range e.m.TrafficTargetNames() {
		e.dirtyTT.add(nn)
	}
	for _, nn := range e.m.TrafficSplitNames() {
		e.dirtySplit.add(nn)
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
			return k, e.res[k] != nil
		}
		return k, e.record(k, r, d)
	}
}

// record stores a valid resource; it is in the delta if its version changed.
func (e *Engine) record(k resKey, r *Resource, d *Delta) bool {
	if old := e.res[k]; old != nil && old.Version == r.Version {
		return true
	}
	e.res[k] = r
	d.Resources = append(d.Resources, r)
	return true
}

func (e *Engine) drop(k resKey, d *Delta) {
	if r := e.res[k]; r != nil {
		delete(e.res, k)
		d.DeletedResources = append(d.DeletedResources, r.Key())
	}
}

// Resources returns every current resource, sorted by key.
func (e *Engine) Resources() []*Resource {
	out := make([]*Resource, 0, len(e.res))
	for _, r := range e.res {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}

// Groups returns every current proxy group, sorted by key.
func (e *Engine) Groups() []*Group {
	out := make([]*Group, 0, len(e.groups))
	for _, g := range e.groups {
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}

// Sets returns every current name set, sorted by key.
func (e *Engine) Sets() []*Set {
	out := make([]*Set, 0, len(e.sets))
	for _, s := range e.sets {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}

// Set returns the current name set called name, or nil.
func (e *Engine) Set(name string) *Set { return e.sets[name] }

// GroupNames returns the names of typeURL the proxies of id are served: the
// group's own and those of the sets it lists, sorted, without duplicates.
func (e *Engine) GroupNames(id model.Identity, typeURL string) []string {
	g := e.groups[id]
	if g == nil {
		return nil
	}
	names := slices.Clone(g.Group.GetResources()[typeURL].GetNames())
	for _, name := range g.Group.GetSets() {
		if s := e.sets[name]; s != nil {
			names = append(names, s.Set.GetResources()[typeURL].GetNames()...)
		}
	}
	sort.Strings(names)
	return slices.Compact(names)
}

// Resource returns a current resource, or nil.
func (e *Engine) Resource(typ, name string) *Resource { return e.res[resKey{typ, name}] }

// Group returns the current proxy group of id, or nil.
func (e *Engine) Group(id model.Identity) *Group { return e.groups[id] }

func sortedNN(s set[model.NN]) []model.NN {
	out := make([]model.NN, 0, len(s))
	for k := range s {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}

func sortedIDs(s set[model.Identity]) []model.Identity {
	out := make([]model.Identity, 0, len(s))
	for k := range s {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}
