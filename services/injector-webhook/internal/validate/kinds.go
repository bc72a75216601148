package validate

import (
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/openservicemesh/osm/libs/meshconfig"
	"github.com/openservicemesh/osm/libs/osmpolicy"
	"github.com/openservicemesh/osm/libs/policy"
	"github.com/openservicemesh/osm/libs/smi"
)

// Scope says which namespaces' objects of a kind the webhook is called for.
type Scope int

const (
	// MeshNamespaces are the namespaces the mesh monitors
	// (openservicemesh.io/monitored-by=<mesh>): the only ones whose
	// policies the smi-watcher publishes.
	MeshNamespaces Scope = iota
	// ControlPlaneNamespace is the control plane's own namespace, where
	// the MeshConfig lives.
	ControlPlaneNamespace
)

// Kind is one policy kind the webhook validates: how to read an object of
// it from an AdmissionRequest and the libs rule that judges it. A new
// policy kind adds one Kind to Kinds; the webhook configuration's rules
// are made from the same table.
type Kind struct {
	// Name is the kind as users write it, e.g. "TrafficSplit".
	Name string
	// Resource is the served resource the webhook is called for.
	Resource schema.GroupVersionResource
	// Scope selects the namespaces.
	Scope Scope
	// Check decodes the object's JSON and returns the rejection of the
	// first field at fault (nil when valid), or an error when the JSON is
	// not an object of this kind.
	Check func(namespace, name string, raw []byte) (*policy.Rejection, error)
}

// Kinds are the policy kinds that exist today: the SMI kinds at the
// versions the smi-watcher reads, read the way it reads them (libs/smi),
// OSM's policy kinds (libs/osmpolicy), and MeshConfig.
func Kinds() []Kind {
	return []Kind{
		{Name: "TrafficTarget", Resource: schema.GroupVersionResource{Group: "access.smi-spec.io", Version: "v1alpha3", Resource: "traffictargets"},
			Check: func(ns, _ string, raw []byte) (*policy.Rejection, error) {
				tt, err := smi.DecodeTrafficTarget(raw)
				if err != nil {
					return nil, err
				}
				return policy.TrafficTarget(ns, tt), nil
			}},
		{Name: "HTTPRouteGroup", Resource: schema.GroupVersionResource{Group: "specs.smi-spec.io", Version: "v1alpha4", Resource: "httproutegroups"},
			Check: func(ns, name string, raw []byte) (*policy.Rejection, error) {
				g, err := smi.DecodeHTTPRouteGroup(raw)
				if err != nil {
					return nil, err
				}
				_, rej := policy.HTTPRouteGroup(ns, name, g)
				return rej, nil
			}},
		{Name: "TCPRoute", Resource: schema.GroupVersionResource{Group: "specs.smi-spec.io", Version: "v1alpha4", Resource: "tcproutes"},
			Check: func(_, _ string, raw []byte) (*policy.Rejection, error) {
				r, err := smi.DecodeTCPRoute(raw)
				if err != nil {
					return nil, err
				}
				_, rej := policy.TCPRoute(r)
				return rej, nil
			}},
		{Name: "TrafficSplit", Resource: schema.GroupVersionResource{Group: "split.smi-spec.io", Version: "v1alpha2", Resource: "trafficsplits"},
			Check: func(_, _ string, raw []byte) (*policy.Rejection, error) {
				s, err := smi.DecodeTrafficSplit(raw)
				if err != nil {
					return nil, err
				}
				return policy.TrafficSplit(s), nil
			}},
		{Name: "Retry", Resource: osmpolicy.RetryGVR,
			Check: func(ns, _ string, raw []byte) (*policy.Rejection, error) {
				r, err := osmpolicy.DecodeRetry(raw)
				if err != nil {
					return nil, err
				}
				_, rej := policy.Retry(ns, r)
				return rej, nil
			}},
		{Name: "Egress", Resource: osmpolicy.EgressGVR,
			Check: func(ns, _ string, raw []byte) (*policy.Rejection, error) {
				e, err := osmpolicy.DecodeEgress(raw)
				if err != nil {
					return nil, err
				}
				_, _, rej := policy.EgressObject(ns, e)
				return rej, nil
			}},
		{Name: "UpstreamTrafficSetting", Resource: osmpolicy.UpstreamTrafficSettingGVR,
			Check: func(ns, _ string, raw []byte) (*policy.Rejection, error) {
				u, err := osmpolicy.DecodeUpstreamTrafficSetting(raw)
				if err != nil {
					return nil, err
				}
				_, rej := policy.UpstreamTrafficSetting(ns, u)
				return rej, nil
			}},
		{Name: "IngressBackend", Resource: osmpolicy.IngressBackendGVR,
			Check: func(ns, _ string, raw []byte) (*policy.Rejection, error) {
				ib, err := osmpolicy.DecodeIngressBackend(raw)
				if err != nil {
					return nil, err
				}
				_, _, rej := policy.IngressBackendObject(ns, ib)
				return rej, nil
			}},
		{Name: "MeshConfig", Resource: meshconfig.GVR, Scope: ControlPlaneNamespace,
			Check: func(_, _ string, raw []byte) (*policy.Rejection, error) {
				var u unstructured.Unstructured
				if err := u.UnmarshalJSON(raw); err != nil {
					return nil, err
				}
				return meshconfig.Validate(meshconfig.Parse(&u)), nil
			}},
	}
}

// String names a kind's resource for logs: "trafficsplits.split.smi-spec.io/v1alpha2".
func (k Kind) String() string {
	return fmt.Sprintf("%s.%s/%s", k.Resource.Resource, k.Resource.Group, k.Resource.Version)
}
