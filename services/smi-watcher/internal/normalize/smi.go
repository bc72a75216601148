package normalize

import (
	"math"

	accessv1alpha3 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/access/v1alpha3"
	specsv1alpha4 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/specs/v1alpha4"
	splitv1alpha2 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/split/v1alpha2"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

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
			Matches: copyStrings(r.Matches),
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
			Methods:   copyStrings(m.Methods),
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
