package validate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/openservicemesh/osm/libs/meshconfig"
	"github.com/openservicemesh/osm/libs/policy"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
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
// versions the smi-watcher reads, and MeshConfig.
func Kinds() []Kind {
	return []Kind{
		{Name: "TrafficTarget", Resource: schema.GroupVersionResource{Group: "access.smi-spec.io", Version: "v1alpha3", Resource: "traffictargets"},
			Check: func(ns, _ string, raw []byte) (*policy.Rejection, error) {
				tt, err := decodeTrafficTarget(raw)
				if err != nil {
					return nil, err
				}
				return policy.TrafficTarget(ns, tt), nil
			}},
		{Name: "HTTPRouteGroup", Resource: schema.GroupVersionResource{Group: "specs.smi-spec.io", Version: "v1alpha4", Resource: "httproutegroups"},
			Check: func(ns, name string, raw []byte) (*policy.Rejection, error) {
				g, err := decodeHTTPRouteGroup(raw)
				if err != nil {
					return nil, err
				}
				_, rej := policy.HTTPRouteGroup(ns, name, g)
				return rej, nil
			}},
		{Name: "TCPRoute", Resource: schema.GroupVersionResource{Group: "specs.smi-spec.io", Version: "v1alpha4", Resource: "tcproutes"},
			Check: func(_, _ string, raw []byte) (*policy.Rejection, error) {
				r, err := decodeTCPRoute(raw)
				if err != nil {
					return nil, err
				}
				_, rej := policy.TCPRoute(r)
				return rej, nil
			}},
		{Name: "TrafficSplit", Resource: schema.GroupVersionResource{Group: "split.smi-spec.io", Version: "v1alpha2", Resource: "trafficsplits"},
			Check: func(_, _ string, raw []byte) (*policy.Rejection, error) {
				s, err := decodeTrafficSplit(raw)
				if err != nil {
					return nil, err
				}
				return policy.TrafficSplit(s), nil
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

// The SMI objects as JSON, read into the contract's form the way the
// smi-watcher normalises them (services/smi-watcher/internal/normalize):
// kinds, methods and regexes as written, numbers clamped to int32, which
// keeps an out-of-range value out of range.

type subjectJSON struct {
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
}

func (s subjectJSON) proto() *meshv1.IdentityBindingSubject {
	return &meshv1.IdentityBindingSubject{Kind: s.Kind, Name: s.Name, Namespace: s.Namespace}
}

func decodeTrafficTarget(raw []byte) (*meshv1.TrafficTarget, error) {
	var o struct {
		Spec struct {
			Destination subjectJSON   `json:"destination"`
			Sources     []subjectJSON `json:"sources"`
			Rules       []struct {
				Kind    string   `json:"kind"`
				Name    string   `json:"name"`
				Matches []string `json:"matches"`
			} `json:"rules"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(raw, &o); err != nil {
		return nil, err
	}
	out := &meshv1.TrafficTarget{Destination: o.Spec.Destination.proto()}
	for _, s := range o.Spec.Sources {
		out.Sources = append(out.Sources, s.proto())
	}
	for _, r := range o.Spec.Rules {
		out.Rules = append(out.Rules, &meshv1.TrafficTargetRule{Kind: r.Kind, Name: r.Name, Matches: r.Matches})
	}
	return out, nil
}

// headersJSON reads an HTTP match's headers: a list of single-entry maps,
// as the SMI SDK writes them (and the CRD requires), or one map.
type headersJSON map[string]string

func (h *headersJSON) UnmarshalJSON(b []byte) error {
	out := map[string]string{}
	if t := bytes.TrimSpace(b); len(t) > 0 && t[0] == '[' {
		var list []map[string]string
		if err := json.Unmarshal(b, &list); err != nil {
			return err
		}
		for _, m := range list {
			for k, v := range m {
				out[k] = v
			}
		}
	} else if err := json.Unmarshal(b, &out); err != nil {
		return err
	}
	*h = out
	return nil
}

func decodeHTTPRouteGroup(raw []byte) (*meshv1.HTTPRouteGroup, error) {
	var o struct {
		Spec struct {
			Matches []struct {
				Name      string      `json:"name"`
				Methods   []string    `json:"methods"`
				PathRegex string      `json:"pathRegex"`
				Headers   headersJSON `json:"headers"`
			} `json:"matches"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(raw, &o); err != nil {
		return nil, err
	}
	out := &meshv1.HTTPRouteGroup{}
	for _, m := range o.Spec.Matches {
		hm := &meshv1.HTTPMatch{Name: m.Name, Methods: m.Methods, PathRegex: m.PathRegex}
		if len(m.Headers) > 0 {
			hm.Headers = m.Headers
		}
		out.Matches = append(out.Matches, hm)
	}
	return out, nil
}

func decodeTCPRoute(raw []byte) (*meshv1.TCPRoute, error) {
	var o struct {
		Spec struct {
			Matches struct {
				Name  string  `json:"name"`
				Ports []int64 `json:"ports"`
			} `json:"matches"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(raw, &o); err != nil {
		return nil, err
	}
	out := &meshv1.TCPRoute{}
	if m := o.Spec.Matches; m.Name != "" || len(m.Ports) > 0 {
		out.Matches = &meshv1.TCPMatch{Name: m.Name}
		for _, p := range m.Ports {
			out.Matches.Ports = append(out.Matches.Ports, clamp32(p))
		}
	}
	return out, nil
}

func decodeTrafficSplit(raw []byte) (*meshv1.TrafficSplit, error) {
	var o struct {
		Spec struct {
			Service  string `json:"service"`
			Backends []struct {
				Service string `json:"service"`
				Weight  int64  `json:"weight"`
			} `json:"backends"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(raw, &o); err != nil {
		return nil, err
	}
	out := &meshv1.TrafficSplit{Service: o.Spec.Service}
	for _, b := range o.Spec.Backends {
		out.Backends = append(out.Backends, &meshv1.TrafficSplitBackend{Service: b.Service, Weight: clamp32(b.Weight)})
	}
	return out, nil
}

func clamp32(v int64) int32 {
	return int32(max(min(v, math.MaxInt32), math.MinInt32))
}

// String names a kind's resource for logs: "trafficsplits.split.smi-spec.io/v1alpha2".
func (k Kind) String() string {
	return fmt.Sprintf("%s.%s/%s", k.Resource.Resource, k.Resource.Group, k.Resource.Version)
}
