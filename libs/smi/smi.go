// Package smi reads SMI objects into the mesh contract's form: from the
// typed objects of smi-sdk-go (the smi-watcher's informers) or from their
// JSON (the validating webhook's AdmissionRequests), one conversion for
// both. Kinds, methods and regexes are kept as written, and numbers are
// clamped to int32, which keeps an out-of-range value out of range: the
// rules of libs/policy judge them.
package smi

import (
	"encoding/json"
	"math"
	"slices"

	accessv1alpha3 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/access/v1alpha3"
	specsv1alpha4 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/specs/v1alpha4"
	splitv1alpha2 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/split/v1alpha2"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// Meta is the subset of metadata kept for an object. resourceVersion is left
// out on purpose: it changes on every write to the object, including status
// updates the mesh does not care about, so keeping it would turn every
// irrelevant change into a KV write.
func Meta(o metav1.Object) *meshv1.ObjectMeta {
	return &meshv1.ObjectMeta{
		Namespace:  o.GetNamespace(),
		Name:       o.GetName(),
		Uid:        string(o.GetUID()),
		Generation: o.GetGeneration(),
	}
}

// apiVersions of the SMI objects the watcher reads. Objects from typed
// informers carry no TypeMeta, so the version they were read as is fixed
// here.
var (
	TrafficTargetAPIVersion  = accessv1alpha3.SchemeGroupVersion.String()
	HTTPRouteGroupAPIVersion = specsv1alpha4.SchemeGroupVersion.String()
	TCPRouteAPIVersion       = specsv1alpha4.SchemeGroupVersion.String()
	TrafficSplitAPIVersion   = splitv1alpha2.SchemeGroupVersion.String()
)

// TrafficTarget normalises an access v1alpha3 TrafficTarget. Kinds are kept
// as written, including kinds OSM does not support.
func TrafficTarget(tt *accessv1alpha3.TrafficTarget) *meshv1.TrafficTarget {
	out := &meshv1.TrafficTarget{
		Meta:        Meta(tt),
		ApiVersion:  TrafficTargetAPIVersion,
		Destination: subject(tt.Spec.Destination),
	}
	for _, s := range tt.Spec.Sources {
		out.Sources = append(out.Sources, subject(s))
	}
	for _, r := range tt.Spec.Rules {
		out.Rules = append(out.Rules, &meshv1.TrafficTargetRule{
			Kind:    r.Kind,
			Name:    r.Name,
			Matches: clone(r.Matches),
		})
	}
	return out
}

func subject(s accessv1alpha3.IdentityBindingSubject) *meshv1.IdentityBindingSubject {
	return &meshv1.IdentityBindingSubject{Kind: s.Kind, Name: s.Name, Namespace: s.Namespace}
}

// HTTPRouteGroup normalises a specs v1alpha4 HTTPRouteGroup. Methods and
// regexes are kept as written.
func HTTPRouteGroup(g *specsv1alpha4.HTTPRouteGroup) *meshv1.HTTPRouteGroup {
	out := &meshv1.HTTPRouteGroup{Meta: Meta(g), ApiVersion: HTTPRouteGroupAPIVersion}
	for _, m := range g.Spec.Matches {
		hm := &meshv1.HTTPMatch{
			Name:      m.Name,
			Methods:   clone(m.Methods),
			PathRegex: m.PathRegex,
		}
		if len(m.Headers) > 0 {
			hm.Headers = make(map[string]string, len(m.Headers))
			for k, v := range m.Headers {
				hm.Headers[k] = v
			}
		}
		out.Matches = append(out.Matches, hm)
	}
	return out
}

// TCPRoute normalises a specs v1alpha4 TCPRoute. Ports are kept as written;
// a value beyond the int32 range is clamped, which keeps it out of range.
func TCPRoute(r *specsv1alpha4.TCPRoute) *meshv1.TCPRoute {
	out := &meshv1.TCPRoute{Meta: Meta(r), ApiVersion: TCPRouteAPIVersion}
	m := r.Spec.Matches
	if m.Name != "" || len(m.Ports) > 0 {
		out.Matches = &meshv1.TCPMatch{Name: m.Name}
		for _, p := range m.Ports {
			out.Matches.Ports = append(out.Matches.Ports, clamp32(int64(p)))
		}
	}
	return out
}

// TrafficSplit normalises a split v1alpha2 TrafficSplit. Weights are kept as
// written (clamped to int32, which keeps an absurd value absurd).
func TrafficSplit(ts *splitv1alpha2.TrafficSplit) *meshv1.TrafficSplit {
	out := &meshv1.TrafficSplit{
		Meta:       Meta(ts),
		ApiVersion: TrafficSplitAPIVersion,
		Service:    ts.Spec.Service,
	}
	for _, b := range ts.Spec.Backends {
		out.Backends = append(out.Backends, &meshv1.TrafficSplitBackend{
			Service: b.Service,
			Weight:  clamp32(int64(b.Weight)),
		})
	}
	return out
}

func clamp32(v int64) int32 {
	switch {
	case v > math.MaxInt32:
		return math.MaxInt32
	case v < math.MinInt32:
		return math.MinInt32
	}
	return int32(v)
}

func clone(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return slices.Clone(s)
}

// DecodeTrafficTarget reads a TrafficTarget's JSON.
func DecodeTrafficTarget(raw []byte) (*meshv1.TrafficTarget, error) {
	return decode(raw, TrafficTarget)
}

// DecodeHTTPRouteGroup reads an HTTPRouteGroup's JSON. Its headers are a
// list of single-entry maps, as the CRD requires.
func DecodeHTTPRouteGroup(raw []byte) (*meshv1.HTTPRouteGroup, error) {
	return decode(raw, HTTPRouteGroup)
}

// DecodeTCPRoute reads a TCPRoute's JSON.
func DecodeTCPRoute(raw []byte) (*meshv1.TCPRoute, error) { return decode(raw, TCPRoute) }

// DecodeTrafficSplit reads a TrafficSplit's JSON.
func DecodeTrafficSplit(raw []byte) (*meshv1.TrafficSplit, error) {
	return decode(raw, TrafficSplit)
}

func decode[T any, M any](raw []byte, convert func(*T) M) (M, error) {
	var o T
	if err := json.Unmarshal(raw, &o); err != nil {
		var zero M
		return zero, err
	}
	return convert(&o), nil
}
