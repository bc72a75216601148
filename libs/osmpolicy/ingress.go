package osmpolicy

import (
	"fmt"
	"math"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// IngressBackendGVR is the resource of the IngressBackend kind.
var IngressBackendGVR = GroupVersion.WithResource("ingressbackends")

// ParseIngressBackend reads an IngressBackend given as unstructured, with
// OSM's field names: spec.backends[] (name, port.number, port.protocol,
// tls.skipClientCertValidation, tls.sniHosts[]), spec.sources[] (kind,
// name, namespace) and spec.matches[] (apiGroup, kind, name). A port
// number is clamped to int32, which keeps an out-of-range one out of range.
func ParseIngressBackend(u *unstructured.Unstructured) *meshv1.IngressBackend {
	r := reader{}
	out := &meshv1.IngressBackend{Meta: meta(u), ApiVersion: u.GetAPIVersion()}
	if out.ApiVersion == "" {
		out.ApiVersion = GroupVersion.String()
	}
	spec := r.object(u.Object, "", "spec")
	for i, b := range r.list(spec, "spec", "backends") {
		p := fmt.Sprintf("spec.backends[%d]", i)
		m, ok := b.(map[string]any)
		if !ok {
			r.bad(p, b, "must be an object")
			out.Backends = append(out.Backends, &meshv1.IngressBackendBackend{})
			continue
		}
		be := &meshv1.IngressBackendBackend{Name: r.str(m, p, "name"), Port: &meshv1.IngressBackendPort{}}
		if pt := r.object(m, p, "port"); pt != nil {
			pp := p + ".port"
			be.Port.Protocol = r.str(pt, pp, "protocol")
			if n := r.integer(pt, pp, "number"); n != nil {
				be.Port.Number = int32(max(min(*n, math.MaxInt32), math.MinInt32))
			}
		}
		if tls := r.object(m, p, "tls"); tls != nil {
			tp := p + ".tls"
			be.Tls = &meshv1.IngressBackendTLS{
				SkipClientCertValidation: r.boolean(tls, tp, "skipClientCertValidation"),
				SniHosts:                 r.strs(tls, tp, "sniHosts"),
			}
		}
		out.Backends = append(out.Backends, be)
	}
	for i, s := range r.list(spec, "spec", "sources") {
		p := fmt.Sprintf("spec.sources[%d]", i)
		m, ok := s.(map[string]any)
		if !ok {
			r.bad(p, s, "must be an object")
			out.Sources = append(out.Sources, &meshv1.IngressSource{})
			continue
		}
		out.Sources = append(out.Sources, &meshv1.IngressSource{
			Kind: r.str(m, p, "kind"), Name: r.str(m, p, "name"), Namespace: r.str(m, p, "namespace"),
		})
	}
	for i, mt := range r.list(spec, "spec", "matches") {
		p := fmt.Sprintf("spec.matches[%d]", i)
		m, ok := mt.(map[string]any)
		if !ok {
			r.bad(p, mt, "must be an object")
			out.Matches = append(out.Matches, &meshv1.TypedLocalObjectReference{})
			continue
		}
		out.Matches = append(out.Matches, &meshv1.TypedLocalObjectReference{
			ApiGroup: r.str(m, p, "apiGroup"), Kind: r.str(m, p, "kind"), Name: r.str(m, p, "name"),
		})
	}
	out.InvalidFields = r.invalid
	return out
}

// boolean reads a JSON boolean; false when absent or not one.
func (r *reader) boolean(m map[string]any, path, field string) bool {
	v, ok := m[field]
	if !ok || v == nil {
		return false
	}
	b, ok := v.(bool)
	if !ok {
		r.bad(join(path, field), v, "must be a boolean")
	}
	return b
}

// DecodeIngressBackend reads an IngressBackend's JSON (an
// AdmissionRequest's object).
func DecodeIngressBackend(raw []byte) (*meshv1.IngressBackend, error) {
	var obj map[string]any
	if err := utiljson.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	return ParseIngressBackend(&unstructured.Unstructured{Object: obj}), nil
}
