// Package osmpolicy reads OSM's own policy kinds, the API group
// policy.openservicemesh.io/v1alpha1, into the mesh contract's form
// (proto/osm/mesh/v1). The kinds have no generated client here, so the
// smi-watcher reads them through the dynamic client and the validating
// webhook from an AdmissionRequest's JSON; both go through Parse, one
// conversion for both, as libs/smi is for the SMI kinds.
//
// Kinds lists the kinds of the group this mesh reads. A new kind of the
// group adds one entry (its resource, its layout kind key and its parser):
// the smi-watcher makes an informer for every entry the apiserver serves,
// and its chart RBAC lists the resources.
//
// Values are kept as written, as the SMI kinds' are: kinds, retryOn and
// durations stay strings and numbers keep their sign, so that libs/policy
// judges them with one rule set. A value of the wrong JSON type (which only
// a CRD without its schema lets through) is recorded in invalid_fields.
package osmpolicy

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// GroupVersion is the API group and version of OSM's policy kinds.
var GroupVersion = schema.GroupVersion{Group: "policy.openservicemesh.io", Version: "v1alpha1"}

// Kind is one policy.openservicemesh.io kind the mesh reads.
type Kind struct {
	// Key is its layout kind key, the first token of its mesh-observed
	// keys (layout.KindRetry).
	Key string
	// Resource is the served resource.
	Resource schema.GroupVersionResource
	// Parse reads an object of the kind into its contract message.
	Parse func(*unstructured.Unstructured) proto.Message
}

// Kinds are the policy.openservicemesh.io kinds this mesh reads.
func Kinds() []Kind {
	return []Kind{
		{Key: layout.KindRetry, Resource: RetryGVR, Parse: func(u *unstructured.Unstructured) proto.Message { return ParseRetry(u) }},
		{Key: layout.KindEgress, Resource: EgressGVR, Parse: func(u *unstructured.Unstructured) proto.Message { return ParseEgress(u) }},
		{Key: layout.KindUpstreamTrafficSetting, Resource: UpstreamTrafficSettingGVR,
			Parse: func(u *unstructured.Unstructured) proto.Message { return ParseUpstreamTrafficSetting(u) }},
		{Key: layout.KindIngressBackend, Resource: IngressBackendGVR,
			Parse: func(u *unstructured.Unstructured) proto.Message { return ParseIngressBackend(u) }},
	}
}

// meta is the subset of metadata the mesh keeps (libs/smi.Meta's).
func meta(u *unstructured.Unstructured) *meshv1.ObjectMeta {
	return &meshv1.ObjectMeta{
		Namespace:  u.GetNamespace(),
		Name:       u.GetName(),
		Uid:        string(u.GetUID()),
		Generation: u.GetGeneration(),
	}
}

// reader reads typed values out of unstructured maps and records the ones
// of the wrong type.
type reader struct {
	invalid []*meshv1.InvalidField
}

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

func (r *reader) bad(path string, v any, msg string) {
	r.invalid = append(r.invalid, &meshv1.InvalidField{FieldPath: path, Value: fmt.Sprint(v), Message: msg})
}

func (r *reader) object(m map[string]any, path, field string) map[string]any {
	v, ok := m[field]
	if !ok || v == nil {
		return nil
	}
	o, ok := v.(map[string]any)
	if !ok {
		r.bad(join(path, field), v, "must be an object")
	}
	return o
}

func (r *reader) list(m map[string]any, path, field string) []any {
	v, ok := m[field]
	if !ok || v == nil {
		return nil
	}
	l, ok := v.([]any)
	if !ok {
		r.bad(join(path, field), v, "must be a list")
	}
	return l
}

func (r *reader) str(m map[string]any, path, field string) string {
	v, ok := m[field]
	if !ok || v == nil {
		return ""
	}
	s, ok := v.(string)
	if !ok {
		r.bad(join(path, field), v, "must be a string")
	}
	return s
}

// integer reads a whole number (JSON numbers decode as float64 or int64);
// nil when absent or not one.
func (r *reader) integer(m map[string]any, path, field string) *int64 {
	v, ok := m[field]
	if !ok || v == nil {
		return nil
	}
	var n int64
	switch x := v.(type) {
	case int64:
		n = x
	case int:
		n = int64(x)
	case float64:
		if x != float64(int64(x)) {
			r.bad(join(path, field), v, "must be an integer")
			return nil
		}
		n = int64(x)
	default:
		r.bad(join(path, field), v, "must be an integer")
		return nil
	}
	return &n
}

func (r *reader) subject(m map[string]any, path string) *meshv1.RetrySubject {
	return &meshv1.RetrySubject{Kind: r.str(m, path, "kind"), Name: r.str(m, path, "name"), Namespace: r.str(m, path, "namespace")}
}
