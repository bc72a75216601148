// Package meshconfig reads OSM's MeshConfig custom resource. The CRD has no
// Go client, so components read it through the dynamic client as
// unstructured; Parse turns that into the contract's meshv1.MeshConfig,
// the one typed form every component uses: the smi-watcher publishes it,
// the policy-compiler and the injector-webhook apply it.
package meshconfig

import (
	"fmt"
	"math"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// GVR is the resource of OSM's MeshConfig CRD.
var GVR = schema.GroupVersionResource{Group: "config.openservicemesh.io", Version: "v1alpha1", Resource: "meshconfigs"}

// Parse reads a MeshConfig given as unstructured. A value of the wrong type,
// or one that must parse (a duration, a fraction, a quantity) and does not,
// leaves its typed field unset and is recorded in invalid_fields with its
// path, so that a consumer can name the field in its error.
func Parse(u *unstructured.Unstructured) *meshv1.MeshConfig {
	r := reader{}
	out := &meshv1.MeshConfig{
		Meta: &meshv1.ObjectMeta{
			Namespace:  u.GetNamespace(),
			Name:       u.GetName(),
			Uid:        string(u.GetUID()),
			Generation: u.GetGeneration(),
		},
		ApiVersion: u.GetAPIVersion(),
	}
	if out.ApiVersion == "" {
		out.ApiVersion = GVR.GroupVersion().String()
	}
	spec := u.Object["spec"]
	if _, ok := spec.(map[string]any); spec != nil && !ok {
		r.bad("spec", spec, "must be an object")
	}
	if sc, ok := r.object(spec, "spec", "sidecar"); ok {
		p := "spec.sidecar"
		out.Sidecar = &meshv1.SidecarSpec{
			LogLevel:                      r.str(sc, p, "logLevel"),
			SidecarImage:                  r.str(sc, p, "image"),
			InitContainerImage:            r.str(sc, p, "initContainerImage"),
			EnablePrivilegedInitContainer: r.boolean(sc, p, "enablePrivilegedInitContainer"),
			TlsMinProtocolVersion:         r.str(sc, p, "tlsMinProtocolVersion"),
			TlsMaxProtocolVersion:         r.str(sc, p, "tlsMaxProtocolVersion"),
			CipherSuites:                  r.strs(sc, p, "cipherSuites"),
			EcdhCurves:                    r.strs(sc, p, "ecdhCurves"),
			MaxDataPlaneConnections:       clamp32(r.integer(sc, p, "maxDataPlaneConnections")),
			Resources:                     r.resources(sc, p+".resources"),
		}
	}
	if tr, ok := r.object(spec, "spec", "traffic"); ok {
		p := "spec.traffic"
		out.Traffic = &meshv1.TrafficSpec{
			EnablePermissiveTrafficPolicyMode: r.boolean(tr, p, "enablePermissiveTrafficPolicyMode"),
			EnableEgress:                      r.boolean(tr, p, "enableEgress"),
			OutboundIpRangeExclusionList:      r.strs(tr, p, "outboundIPRangeExclusionList"),
			OutboundIpRangeInclusionList:      r.strs(tr, p, "outboundIPRangeInclusionList"),
			OutboundPortExclusionList:         r.ints(tr, p, "outboundPortExclusionList"),
			InboundPortExclusionList:          r.ints(tr, p, "inboundPortExclusionList"),
			NetworkInterfaceExclusionList:     r.strs(tr, p, "networkInterfaceExclusionList"),
		}
	}
	if ob, ok := r.object(spec, "spec", "observability"); ok {
		p := "spec.observability"
		out.Observability = &meshv1.ObservabilitySpec{
			OsmLogLevel:       r.str(ob, p, "osmLogLevel"),
			EnableDebugServer: r.boolean(ob, p, "enableDebugServer"),
		}
		if t, ok := r.object(ob, p, "tracing"); ok {
			tp := p + ".tracing"
			out.Observability.Tracing = &meshv1.TracingSpec{
				Enable:          r.boolean(t, tp, "enable"),
				Address:         r.str(t, tp, "address"),
				Port:            clamp32(r.integer(t, tp, "port")),
				Endpoint:        r.str(t, tp, "endpoint"),
				SampledFraction: r.fraction(t, tp, "sampledFraction"),
				Provider:        r.str(t, tp, "provider"),
			}
		}
	}
	if c, ok := r.object(spec, "spec", "certificate"); ok {
		p := "spec.certificate"
		out.Certificate = &meshv1.CertificateSpec{
			ServiceCertValidityDuration: r.duration(c, p, "serviceCertValidityDuration"),
		}
	}
	if ff, ok := r.object(spec, "spec", "featureFlags"); ok {
		out.FeatureFlags = &meshv1.FeatureFlags{}
		if v, ok := ff["enableRetryPolicy"]; ok && v != nil {
			b := r.boolean(ff, "spec.featureFlags", "enableRetryPolicy")
			if _, isBool := v.(bool); isBool {
				out.FeatureFlags.EnableRetryPolicy = &b
			}
		}
	}
	out.InvalidFields = r.invalid
	return out
}

// reader reads typed values out of unstructured maps and records the ones
// that are not of the expected type.
type reader struct {
	invalid []*meshv1.InvalidField
}

func (r *reader) bad(path string, v any, msg string) {
	r.invalid = append(r.invalid, &meshv1.InvalidField{FieldPath: path, Value: fmt.Sprint(v), Message: msg})
}

// object returns parent[field] when it is an object.
func (r *reader) object(parent any, path, field string) (map[string]any, bool) {
	m, ok := parent.(map[string]any)
	if !ok {
		return nil, false
	}
	v, present := m[field]
	if !present || v == nil {
		return nil, false
	}
	o, ok := v.(map[string]any)
	if !ok {
		r.bad(path+"."+field, v, "must be an object")
		return nil, false
	}
	return o, true
}

// scalar reads m[field] with as; a value as refuses is recorded with what
// it must be, and the zero value returned.
func scalar[T any](r *reader, m map[string]any, path, field, mustBe string, as func(any) (T, bool)) T {
	var zero T
	v, ok := m[field]
	if !ok || v == nil {
		return zero
	}
	out, ok := as(v)
	if !ok {
		r.bad(path+"."+field, v, "must be "+mustBe)
		return zero
	}
	return out
}

func is[T any](v any) (T, bool) {
	t, ok := v.(T)
	return t, ok
}

func (r *reader) str(m map[string]any, path, field string) string {
	return scalar(r, m, path, field, "a string", is[string])
}

func (r *reader) boolean(m map[string]any, path, field string) bool {
	return scalar(r, m, path, field, "a boolean", is[bool])
}

func (r *reader) integer(m map[string]any, path, field string) int64 {
	return scalar(r, m, path, field, "an integer", asInt)
}

func asInt(v any) (int64, bool) {
	switch n := v.(type) {
	case int64:
		return n, true
	case int:
		return int64(n), true
	case int32:
		return int64(n), true
	case float64:
		if n == float64(int64(n)) {
			return int64(n), true
		}
	}
	return 0, false
}

func (r *reader) list(m map[string]any, path, field string) []any {
	v, ok := m[field]
	if !ok || v == nil {
		return nil
	}
	l, ok := v.([]any)
	if !ok {
		r.bad(path+"."+field, v, "must be a list")
	}
	return l
}

func (r *reader) strs(m map[string]any, path, field string) []string {
	var out []string
	for i, v := range r.list(m, path, field) {
		s, ok := v.(string)
		if !ok {
			r.bad(fmt.Sprintf("%s.%s[%d]", path, field, i), v, "must be a string")
			continue
		}
		out = append(out, s)
	}
	return out
}

func (r *reader) ints(m map[string]any, path, field string) []int32 {
	var out []int32
	for i, v := range r.list(m, path, field) {
		n, ok := asInt(v)
		if !ok {
			r.bad(fmt.Sprintf("%s.%s[%d]", path, field, i), v, "must be an integer")
			continue
		}
		out = append(out, clamp32(n))
	}
	return out
}

// fraction reads a number in [0, 1] given as a number or a string.
func (r *reader) fraction(m map[string]any, path, field string) *float64 {
	v, ok := m[field]
	if !ok || v == nil {
		return nil
	}
	var f float64
	switch x := v.(type) {
	case float64:
		f = x
	case int64:
		f = float64(x)
	case string:
		p, err := strconv.ParseFloat(x, 64)
		if err != nil {
			r.bad(path+"."+field, v, err.Error())
			return nil
		}
		f = p
	default:
		r.bad(path+"."+field, v, "must be a number")
		return nil
	}
	return &f
}

func (r *reader) duration(m map[string]any, path, field string) *durationpb.Duration {
	s := r.str(m, path, field)
	if s == "" {
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		r.bad(path+"."+field, s, err.Error())
		return nil
	}
	return durationpb.New(d)
}

// resources reads limits and requests, each quantity in canonical form.
func (r *reader) resources(sc map[string]any, path string) *meshv1.ResourceRequirements {
	res, ok := r.object(sc, path[:len(path)-len(".resources")], "resources")
	if !ok {
		return nil
	}
	out := &meshv1.ResourceRequirements{
		Limits:   r.quantities(res, path, "limits"),
		Requests: r.quantities(res, path, "requests"),
	}
	return out
}

func (r *reader) quantities(res map[string]any, path, field string) map[string]string {
	m, ok := r.object(res, path, field)
	if !ok {
		return nil
	}
	out := make(map[string]string, len(m))
	for name, v := range m {
		fp := fmt.Sprintf("%s.%s[%s]", path, field, name)
		var q resource.Quantity
		var err error
		switch x := v.(type) {
		case string:
			q, err = resource.ParseQuantity(x)
		default:
			n, ok := asInt(x)
			if !ok {
				r.bad(fp, v, "must be a quantity")
				continue
			}
			q = *resource.NewQuantity(n, resource.DecimalSI)
		}
		if err != nil {
			r.bad(fp, v, err.Error())
			continue
		}
		out[name] = q.String()
	}
	return out
}

// clamp32 saturates v to the int32 range.
func clamp32(v int64) int32 { return int32(max(min(v, math.MaxInt32), math.MinInt32)) }
