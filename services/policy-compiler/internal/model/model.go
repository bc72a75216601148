// Package model is the policy-compiler's in-memory view of KV mesh-observed:
// the latest value of every observed object, plus the indexes the compile
// core needs to find what depends on a change (service → endpoint slices,
// service ↔ backing identities, policy → referenced routes).
//
// The model is pure data: it does no I/O and is not safe for concurrent use.
package model

import (
	"fmt"
	"maps"
	"slices"
	"sort"

	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/multimap"
)

// NN is the namespace and name of a namespaced object.
type NN struct {
	// Namespace and Name of the object.
	Namespace, Name string
}

// String is "namespace/name".
func (n NN) String() string { return n.Namespace + "/" + n.Name }

// Identity is a workload identity: a ServiceAccount.
type Identity struct {
	// Namespace and Name of the ServiceAccount.
	Namespace, Name string
}

// String is "namespace/serviceaccount".
func (i Identity) String() string { return i.Namespace + "/" + i.Name }

// Less orders identities by namespace, then name.
func (i Identity) Less(o Identity) bool {
	if i.Namespace != o.Namespace {
		return i.Namespace < o.Namespace
	}
	return i.Name < o.Name
}

// Less orders names by namespace, then name.
func (n NN) Less(o NN) bool {
	if n.Namespace != o.Namespace {
		return n.Namespace < o.Namespace
	}
	return n.Name < o.Name
}

// Model holds the observed objects and their indexes.
type Model struct {
	// MeshName selects the namespaces of this mesh (Namespace.monitored_by).
	meshName string
	// meshConfigKey is the MeshConfig object of this mesh.
	meshConfigKey NN

	sync       *meshv1.SyncMarker
	meshConfig *meshv1.MeshConfig

	namespaces      map[string]*meshv1.Namespace
	services        map[NN]*meshv1.Service
	slices          map[NN]*meshv1.EndpointSlice
	pods            map[NN]*meshv1.Pod
	serviceAccounts map[Identity]*meshv1.ServiceAccount
	trafficTargets  map[NN]*meshv1.TrafficTarget
	httpRouteGroups map[NN]*meshv1.HTTPRouteGroup
	tcpRoutes       map[NN]*meshv1.TCPRoute
	trafficSplits   map[NN]*meshv1.TrafficSplit
	retries         map[NN]*meshv1.Retry
	egress          egressIndex                     // OSM's Egress objects (egress.go)
	objects         map[string]map[NN]proto.Message // object kinds (objects.go) → name → object

	svcSlices   map[NN]map[NN]struct{}           // service → its endpoint slices
	labelPods   map[labelKey]map[string]struct{} // (namespace, label=value) → counted pod names
	selSvcs     map[labelKey]map[string]struct{} // (namespace, first selector label) → service names
	svcPods     map[NN]map[NN]struct{}           // service → counted pods it selects
	podIdentity map[NN]Identity                  // counted pod → its identity
	podServices map[NN][]NN                      // counted pod → services selecting it
	svcIDs      map[NN]map[Identity]int          // service → backing identities (pod counts)
	idServices  map[Identity]map[NN]int          // identity → services it backs (pod counts)
	idPods      map[Identity]int                 // identity → number of counted pods
	splitsApex  map[NN]map[NN]struct{}           // apex service → TrafficSplits naming it
	routeUsers  map[routeRef]map[NN]struct{}     // route object → TrafficTargets naming it
	ttRoutes    map[NN][]routeRef                // TrafficTarget → route objects it names
}

// labelKey is one "label=value" pair in a namespace.
type labelKey struct {
	namespace, label string
}

type routeRef struct {
	kind string
	nn   NN
}

// New returns an empty model for the mesh named meshName, whose MeshConfig is
// meshConfig.
func New(meshName string, meshConfig NN) *Model {
	return &Model{
		meshName:        meshName,
		meshConfigKey:   meshConfig,
		namespaces:      map[string]*meshv1.Namespace{},
		services:        map[NN]*meshv1.Service{},
		slices:          map[NN]*meshv1.EndpointSlice{},
		pods:            map[NN]*meshv1.Pod{},
		serviceAccounts: map[Identity]*meshv1.ServiceAccount{},
		trafficTargets:  map[NN]*meshv1.TrafficTarget{},
		httpRouteGroups: map[NN]*meshv1.HTTPRouteGroup{},
		tcpRoutes:       map[NN]*meshv1.TCPRoute{},
		trafficSplits:   map[NN]*meshv1.TrafficSplit{},
		retries:         map[NN]*meshv1.Retry{},
		egress:          newEgressIndex(),
		objects:         map[string]map[NN]proto.Message{},
		svcSlices:       map[NN]map[NN]struct{}{},
		labelPods:       map[labelKey]map[string]struct{}{},
		selSvcs:         map[labelKey]map[string]struct{}{},
		svcPods:         map[NN]map[NN]struct{}{},
		podIdentity:     map[NN]Identity{},
		podServices:     map[NN][]NN{},
		svcIDs:          map[NN]map[Identity]int{},
		idServices:      map[Identity]map[NN]int{},
		idPods:          map[Identity]int{},
		splitsApex:      map[NN]map[NN]struct{}{},
		routeUsers:      map[routeRef]map[NN]struct{}{},
		ttRoutes:        map[NN][]routeRef{},
	}
}

// NewMessage returns an empty message of the type stored under kind, or nil
// for an unknown kind.
func NewMessage(kind string) proto.Message { return layout.NewObserved(kind) }

// Apply stores value (nil: deletes) under the observed key (kind, namespace,
// name) and updates the indexes. It returns the value it replaced, nil when
// there was none. The model keeps value; the caller must not change it.
func (m *Model) Apply(kind, namespace, name string, value proto.Message) (proto.Message, error) {
	nn := NN{namespace, name}
	switch kind {
	case layout.KindNamespace:
		old := m.namespaces[name]
		if v, ok := value.(*meshv1.Namespace); ok {
			m.namespaces[name] = v
		} else if value == nil {
			delete(m.namespaces, name)
		} else {
			return nil, fmt.Errorf("kind %s: unexpected %T", kind, value)
		}
		return orNil(old), nil
	case layout.KindService:
		return m.applyService(nn, value)
	case layout.KindEndpointSlice:
		return m.applySlice(nn, value)
	case layout.KindPod:
		return m.applyPod(nn, value)
	case layout.KindServiceAccount:
		return replace(m.serviceAccounts, Identity{namespace, name}, value)
	case layout.KindTrafficTarget:
		return m.applyTrafficTarget(nn, value)
	case layout.KindHTTPRouteGroup:
		return replace(m.httpRouteGroups, nn, value)
	case layout.KindTCPRoute:
		return replace(m.tcpRoutes, nn, value)
	case layout.KindTrafficSplit:
		return m.applySplit(nn, value)
	case layout.KindRetry:
		return replace(m.retries, nn, value)
	case layout.KindEgress:
		return m.applyEgress(nn, value)
	case layout.KindMeshConfig:
		if nn != m.meshConfigKey {
			return nil, nil
		}
		old := m.meshConfig
		if v, ok := value.(*meshv1.MeshConfig); ok {
			m.meshConfig = v
		} else if value == nil {
			m.meshConfig = nil
		} else {
			return nil, fmt.Errorf("kind %s: unexpected %T", kind, value)
		}
		return orNil(old), nil
	}
	if ObjectKind(kind) {
		return m.applyObject(kind, nn, value)
	}
	return nil, fmt.Errorf("unknown observed kind %q", kind)
}

// orNil turns a typed nil pointer into an untyped nil interface.
func orNil[T proto.Message](v T) proto.Message {
	var zero T
	if any(v) == any(zero) {
		return nil
	}
	return v
}

// replace puts value under k in mp (nil: deletes k) and returns what it
// replaced, nil when there was none.
func replace[K comparable, V proto.Message](mp map[K]V, k K, value proto.Message) (proto.Message, error) {
	old, err := put(mp, k, value)
	if err != nil {
		return nil, err
	}
	return orNil(old), nil
}

// put puts value under k in mp (nil: deletes k), failing when value is not
// a V. It returns the V it replaced (nil when there was none).
func put[K comparable, V proto.Message](mp map[K]V, k K, value proto.Message) (V, error) {
	old := mp[k]
	if value == nil {
		delete(mp, k)
		return old, nil
	}
	v, ok := value.(V)
	if !ok {
		return old, fmt.Errorf("%v: unexpected %T", k, value)
	}
	mp[k] = v
	return old, nil
}

// SetSync records the latest sync marker (nil when the key is deleted).
func (m *Model) SetSync(s *meshv1.SyncMarker) { m.sync = s }

// Synced reports whether the latest sync marker says the view is complete.
func (m *Model) Synced() bool {
	return m.sync != nil && m.sync.GetState() == meshv1.SyncState_SYNC_STATE_SYNCED
}

// Sync is the latest sync marker, or nil.
func (m *Model) Sync() *meshv1.SyncMarker { return m.sync }

// MeshConfig is this mesh's MeshConfig, or nil when not observed.
func (m *Model) MeshConfig() *meshv1.MeshConfig { return m.meshConfig }

// Permissive reports whether the MeshConfig enables permissive traffic
// policy mode.
func (m *Model) Permissive() bool {
	return m.meshConfig.GetTraffic().GetEnablePermissiveTrafficPolicyMode()
}

// Meshed reports whether namespace belongs to this mesh.
func (m *Model) Meshed(namespace string) bool {
	ns := m.namespaces[namespace]
	return ns != nil && ns.GetMonitoredBy() == m.meshName && !ns.GetIgnored()
}

// MeshedNamespaces lists the namespaces of this mesh, sorted.
func (m *Model) MeshedNamespaces() []string {
	var out []string
	for name := range m.namespaces {
		if m.Meshed(name) {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// ServicesIn lists the Services of namespace, in no order.
func (m *Model) ServicesIn(namespace string) []NN {
	var out []NN
	for nn := range m.services {
		if nn.Namespace == namespace {
			out = append(out, nn)
		}
	}
	return out
}

// IdentitiesIn lists the identities of namespace that have pods, in no order.
func (m *Model) IdentitiesIn(namespace string) []Identity {
	var out []Identity
	for id := range m.idPods {
		if id.Namespace == namespace {
			out = append(out, id)
		}
	}
	return out
}

// Service returns a Service, or nil.
func (m *Model) Service(nn NN) *meshv1.Service { return m.services[nn] }

// ServiceNames lists every observed Service, sorted.
func (m *Model) ServiceNames() []NN { return multimap.Sorted(m.services) }

// EndpointSlices returns the endpoint slices of a service, sorted by name.
func (m *Model) EndpointSlices(svc NN) []*meshv1.EndpointSlice {
	names := multimap.Sorted(m.svcSlices[svc])
	out := make([]*meshv1.EndpointSlice, len(names))
	for i, n := range names {
		out[i] = m.slices[n]
	}
	return out
}

// ServiceIdentities lists the identities of the pods a service selects,
// sorted.
func (m *Model) ServiceIdentities(svc NN) []Identity { return multimap.Sorted(m.svcIDs[svc]) }

// IdentityServices lists the services whose selected pods run as id, sorted.
func (m *Model) IdentityServices(id Identity) []NN { return multimap.Sorted(m.idServices[id]) }

// Identities lists every identity that at least one pod runs as, sorted.
func (m *Model) Identities() []Identity { return multimap.Sorted(m.idPods) }

// PodIPs lists the IPs of the counted pods that run as id, sorted and
// without duplicates. It walks every counted pod.
func (m *Model) PodIPs(id Identity) []string {
	seen := map[string]bool{}
	for nn, pid := range m.podIdentity {
		if pid != id {
			continue
		}
		for _, ip := range m.pods[nn].GetPodIps() {
			seen[ip] = true
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

// HasPods reports whether at least one pod runs as id.
func (m *Model) HasPods(id Identity) bool { return m.idPods[id] > 0 }

// HasServiceAccount reports whether the ServiceAccount of id exists.
func (m *Model) HasServiceAccount(id Identity) bool { return m.serviceAccounts[id] != nil }

// TrafficTarget returns a TrafficTarget, or nil.
func (m *Model) TrafficTarget(nn NN) *meshv1.TrafficTarget { return m.trafficTargets[nn] }

// TrafficTargetNames lists every TrafficTarget, sorted.
func (m *Model) TrafficTargetNames() []NN { return multimap.Sorted(m.trafficTargets) }

// HTTPRouteGroup returns an HTTPRouteGroup, or nil.
func (m *Model) HTTPRouteGroup(nn NN) *meshv1.HTTPRouteGroup { return m.httpRouteGroups[nn] }

// HTTPRouteGroupNames lists every HTTPRouteGroup, sorted.
func (m *Model) HTTPRouteGroupNames() []NN { return multimap.Sorted(m.httpRouteGroups) }

// TCPRoute returns a TCPRoute, or nil.
func (m *Model) TCPRoute(nn NN) *meshv1.TCPRoute { return m.tcpRoutes[nn] }

// TCPRouteNames lists every TCPRoute, sorted.
func (m *Model) TCPRouteNames() []NN { return multimap.Sorted(m.tcpRoutes) }

// TrafficSplit returns a TrafficSplit, or nil.
func (m *Model) TrafficSplit(nn NN) *meshv1.TrafficSplit { return m.trafficSplits[nn] }

// TrafficSplitNames lists every TrafficSplit, sorted.
func (m *Model) TrafficSplitNames() []NN { return multimap.Sorted(m.trafficSplits) }

// SplitsForApex lists the TrafficSplits whose apex is svc, sorted.
func (m *Model) SplitsForApex(svc NN) []NN { return multimap.Sorted(m.splitsApex[svc]) }

// RouteUsers lists the TrafficTargets whose rules name the route object of
// kind (layout.KindHTTPRouteGroup or layout.KindTCPRoute) nn, sorted.
func (m *Model) RouteUsers(kind string, nn NN) []NN {
	return multimap.Sorted(m.routeUsers[routeRef{kind, nn}])
}

// Retry returns a Retry, or nil.
func (m *Model) Retry(nn NN) *meshv1.Retry { return m.retries[nn] }

// RetryNames lists every Retry, sorted.
func (m *Model) RetryNames() []NN { return multimap.Sorted(m.retries) }
