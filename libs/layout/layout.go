// Package layout is the key layout of the mesh's KV buckets: which key holds
// which protobuf message. Every writer and reader builds and parses keys only
// through these functions, so the layout is defined once. Each key part is
// escaped with bus.EscapeToken, so Kubernetes names with dots are safe.
//
// mesh-observed (writer: smi-watcher)
//
//	sync                          osm.mesh.v1.SyncMarker
//	namespace.<name>              osm.mesh.v1.Namespace
//	meshconfig.<ns>.<name>        osm.mesh.v1.MeshConfig
//	<kind>.<ns>.<name>            one message per namespaced kind (KindService, ...)
//
// mesh-compiled (writer: policy-compiler)
//
//	generation                    osm.mesh.v1.Generation (written last)
//	resource.<type>.<name>        osm.mesh.v1.CompiledResource (type: cluster, endpoint, listener, route, secret)
//	group.<ns>.<serviceaccount>   osm.mesh.v1.ProxyGroup
//	set.<name>                    osm.mesh.v1.NameSet (names groups share; a group lists the sets it includes)
//	accepted.<kind>.<ns>.<name>   osm.mesh.v1.KeptVersion (a rejected policy's last accepted version; the compiler's own, edges ignore it)
//
// mesh-trust (writer: cert-authority)
//
//	bundle                        osm.mesh.v1.TrustBundle
//
// mesh-leases (writer: policy-compiler)
//
//	compiler                      osm.mesh.v1.Lease (the active compiler)
//
// SDS secret names in compiled resources are relative to the proxy that
// asks: SecretServiceCert is the proxy's own identity certificate and
// SecretRootCert the trust bundle. The edge resolves them from the identity
// of the proxy's client certificate, so clusters can be shared by all
// clients.
package layout

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/bus"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// Kinds of observed objects; each is the first token of its key.
const (
	KindNamespace      = "namespace"
	KindService        = "service"
	KindEndpointSlice  = "endpointslice"
	KindPod            = "pod"
	KindServiceAccount = "serviceaccount"
	KindTrafficTarget  = "traffictarget"
	KindHTTPRouteGroup = "httproutegroup"
	KindTCPRoute       = "tcproute"
	KindTrafficSplit   = "trafficsplit"
	KindMeshConfig     = "meshconfig"
	KindRetry          = "retry"
	KindEgress         = "egress"
	// KindUpstreamTrafficSetting is OSM's policy.openservicemesh.io
	// UpstreamTrafficSetting.
	KindUpstreamTrafficSetting = "upstreamtrafficsetting"
	// KindIngressBackend is OSM's policy.openservicemesh.io IngressBackend.
	KindIngressBackend = "ingressbackend"
)

// Fixed keys.
const (
	SyncKey           = "sync"
	GenerationKey     = "generation"
	BundleKey         = "bundle"
	CompilerLeaseKey  = "compiler"
	SecretServiceCert = "service-cert"
	SecretRootCert    = "root-cert"
)

// Short names of Envoy resource types in compiled keys.
const (
	TypeCluster  = "cluster"
	TypeEndpoint = "endpoint"
	TypeListener = "listener"
	TypeRoute    = "route"
	TypeSecret   = "secret"
)

// ObservedKey is the key of a namespaced observed object.
func ObservedKey(kind, namespace, name string) string {
	return bus.Key(kind, namespace, name)
}

// NamespaceKey is the key of an observed Namespace.
func NamespaceKey(name string) string { return bus.Key(KindNamespace, name) }

// ResourceKey is the key of a compiled Envoy resource.
func ResourceKey(typ, name string) string { return bus.Key("resource", typ, name) }

// GroupKey is the key of the proxy group of identity namespace/serviceaccount.
func GroupKey(namespace, serviceAccount string) string {
	return bus.Key("group", namespace, serviceAccount)
}

// SetKey is the key of the shared name set called name.
func SetKey(name string) string { return bus.Key("set", name) }

// AcceptedKey is the key, in mesh-compiled, of the last accepted version
// of a rejected policy object of the observed kind (osm.mesh.v1.KeptVersion).
func AcceptedKey(kind, namespace, name string) string {
	return bus.Key(acceptedPrefix, kind, namespace, name)
}

const acceptedPrefix = "accepted"

// IsAcceptedKey reports whether a mesh-compiled key is an AcceptedKey: a
// record the policy-compiler keeps for itself, which edges ignore.
func IsAcceptedKey(key string) bool {
	parts, err := bus.SplitKey(key)
	return err == nil && len(parts) == 4 && parts[0] == acceptedPrefix
}

// Observed is a parsed mesh-observed key.
type Observed struct {
	Kind, Namespace, Name string
}

// ParseObserved parses a mesh-observed key other than SyncKey.
func ParseObserved(key string) (Observed, error) {
	parts, err := bus.SplitKey(key)
	if err != nil {
		return Observed{}, err
	}
	switch {
	case len(parts) == 2 && parts[0] == KindNamespace:
		return Observed{Kind: KindNamespace, Name: parts[1]}, nil
	case len(parts) == 3 && parts[0] != KindNamespace:
		return Observed{Kind: parts[0], Namespace: parts[1], Name: parts[2]}, nil
	}
	return Observed{}, fmt.Errorf("key %q is not an observed-object key", key)
}

// Compiled is a parsed mesh-compiled key other than GenerationKey.
type Compiled struct {
	// Group is true for a proxy group key (Namespace, Name set).
	Group bool
	// Set is true for a name set key (Name set).
	Set bool
	// When neither Group nor Set is true, the key is a resource (Type,
	// Name set).
	Type, Namespace, Name string
}

// ParseCompiled parses a mesh-compiled key other than GenerationKey.
func ParseCompiled(key string) (Compiled, error) {
	parts, err := bus.SplitKey(key)
	if err != nil {
		return Compiled{}, err
	}
	if len(parts) == 2 && parts[0] == "set" {
		return Compiled{Set: true, Name: parts[1]}, nil
	}
	if len(parts) == 3 {
		switch parts[0] {
		case "resource":
			return Compiled{Type: parts[1], Name: parts[2]}, nil
		case "group":
			return Compiled{Group: true, Namespace: parts[1], Name: parts[2]}, nil
		}
	}
	return Compiled{}, fmt.Errorf("key %q is not a compiled-resource, proxy-group or name-set key", key)
}

// NewObserved returns an empty message of the type stored under an
// observed key of kind, or nil for an unknown kind.
func NewObserved(kind string) proto.Message {
	switch kind {
	case KindNamespace:
		return &meshv1.Namespace{}
	case KindService:
		return &meshv1.Service{}
	case KindEndpointSlice:
		return &meshv1.EndpointSlice{}
	case KindPod:
		return &meshv1.Pod{}
	case KindServiceAccount:
		return &meshv1.ServiceAccount{}
	case KindTrafficTarget:
		return &meshv1.TrafficTarget{}
	case KindHTTPRouteGroup:
		return &meshv1.HTTPRouteGroup{}
	case KindTCPRoute:
		return &meshv1.TCPRoute{}
	case KindTrafficSplit:
		return &meshv1.TrafficSplit{}
	case KindMeshConfig:
		return &meshv1.MeshConfig{}
	case KindRetry:
		return &meshv1.Retry{}
	case KindEgress:
		return &meshv1.Egress{}
	case KindUpstreamTrafficSetting:
		return &meshv1.UpstreamTrafficSetting{}
	case KindIngressBackend:
		return &meshv1.IngressBackend{}
	}
	return nil
}
