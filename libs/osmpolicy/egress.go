package osmpolicy

import (
	"fmt"
	"math"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// EgressGVR is the resource of the Egress kind.
var EgressGVR = GroupVersion.WithResource("egresses")

// ParseEgress reads an Egress given as unstructured, with OSM's field
// names: spec.sources[] (kind, name, namespace; an mtls object is only
// noted), spec.hosts[], spec.ipAddresses[], spec.ports[] (number,
// protocol) and spec.matches[] (apiGroup, kind, name). A port number is
// clamped to int32, which keeps an out-of-range one out of range.
func ParseEgress(u *unstructured.Unstructured) *meshv1.Egress {
	r := reader{}
	out := &meshv1.Egress{Meta: meta(u), ApiVersion: u.GetAPIVersion()}
	if out.ApiVersion == "" {
		out.ApiVersion = GroupVersion.String()
	}
	spec := r.object(u.Object, "", "spec")
	for i, s := range r.list(spec, "spec", "sources") {
		p := fmt.Sprintf("spec.sources[%d]", i)
		m, ok := s.(map[string]any)
		if !ok {
			r.bad(p, s, "must be an object")
			out.Sources = append(out.Sources, &meshv1.EgressSource{})
			continue
		}
		_, mtls := m["mtls"]
		out.Sources = append(out.Sources, &meshv1.EgressSource{
			Kind: r.str(m, p, "kind"), Name: r.str(m, p, "name"), Namespace: r.str(m, p, "namespace"),
			HasMtls: mtls && m["mtls"] != nil,
		})
	}
	out.Hosts = r.strs(spec, "spec", "hosts")
	out.IpAddresses = r.strs(spec, "spec", "ipAddresses")
	for i, pt := range r.list(spec, "spec", "ports") {
		p := fmt.Sprintf("spec.ports[%d]", i)
		m, ok := pt.(map[string]any)
		if !ok {
			r.bad(p, pt, "must be an object")
			out.Ports = append(out.Ports, &meshv1.EgressPort{})
			continue
		}
		port := &meshv1.EgressPort{Protocol: r.str(m, p, "protocol")}
		if n := r.integer(m, p, "number"); n != nil {
			port.Number = int32(max(min(*n, math.MaxInt32), math.MinInt32))
		}
		out.Ports = append(out.Ports, port)
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

// strs reads a list of strings.
func (r *reader) strs(m map[string]any, path, field string) []string {
	var out []string
	for i, v := range r.list(m, path, field) {
		s, ok := v.(string)
		if !ok {
			r.bad(fmt.Sprintf("%s[%d]", join(path, field), i), v, "must be a string")
			continue
		}
		out = append(out, s)
	}
	return out
}

// DecodeEgress reads an Egress's JSON (an AdmissionRequest's object).
func DecodeEgress(raw []byte) (*meshv1.Egress, error) {
	// apimachinery's JSON reads whole numbers as int64, as the dynamic
	// client's objects hold them.
	var obj map[string]any
	if err := utiljson.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	return ParseEgress(&unstructured.Unstructured{Object: obj}), nil
}
