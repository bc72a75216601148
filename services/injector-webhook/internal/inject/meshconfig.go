package inject

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// WithMeshConfig returns s with the injection fields of a MeshConfig's spec
// (unstructured, as the dynamic client returns it) applied over it: the
// sidecar image, init image, log level and resources, and the traffic
// exclusion lists. A field the MeshConfig leaves unset keeps s's value.
// Errors name the field.
func (s Settings) WithMeshConfig(mc *unstructured.Unstructured) (Settings, error) {
	out := s
	spec := mc.Object
	str := func(dst *string, path ...string) error {
		v, found, err := unstructured.NestedString(spec, path...)
		if err != nil {
			return fieldErr(path, err)
		}
		if found && v != "" {
			*dst = v
		}
		return nil
	}
	for _, f := range []struct {
		dst  *string
		path []string
	}{
		{&out.SidecarImage, []string{"spec", "sidecar", "image"}},
		{&out.InitImage, []string{"spec", "sidecar", "initContainerImage"}},
		{&out.LogLevel, []string{"spec", "sidecar", "logLevel"}},
	} {
		if err := str(f.dst, f.path...); err != nil {
			return s, err
		}
	}
	for _, f := range []struct {
		dst  *[]int
		path []string
	}{
		{&out.OutboundPortExclusions, []string{"spec", "traffic", "outboundPortExclusionList"}},
		{&out.InboundPortExclusions, []string{"spec", "traffic", "inboundPortExclusionList"}},
	} {
		raw, found, err := unstructured.NestedSlice(spec, f.path...)
		if err != nil {
			return s, fieldErr(f.path, err)
		}
		if !found {
			continue
		}
		ports := make([]int, 0, len(raw))
		for i, v := range raw {
			p, ok := v.(int64)
			if !ok || p < 1 || p > 65535 {
				return s, fieldErr(append(f.path, fmt.Sprint(i)), fmt.Errorf("%v is not a port (1-65535)", v))
			}
			ports = append(ports, int(p))
		}
		*f.dst = ports
	}
	for _, f := range []struct {
		dst  *[]string
		path []string
	}{
		{&out.OutboundIPRangeExclusions, []string{"spec", "traffic", "outboundIPRangeExclusionList"}},
		{&out.OutboundIPRangeInclusions, []string{"spec", "traffic", "outboundIPRangeInclusionList"}},
	} {
		v, found, err := unstructured.NestedStringSlice(spec, f.path...)
		if err != nil {
			return s, fieldErr(f.path, err)
		}
		if found {
			*f.dst = v
		}
	}
	for _, kind := range []string{"limits", "requests"} {
		path := []string{"spec", "sidecar", "resources", kind}
		m, found, err := unstructured.NestedMap(spec, path...)
		if err != nil {
			return s, fieldErr(path, err)
		}
		if !found {
			continue
		}
		list := corev1.ResourceList{}
		for name, v := range m {
			q, err := resource.ParseQuantity(fmt.Sprint(v))
			if err != nil {
				return s, fieldErr(append(path, name), err)
			}
			list[corev1.ResourceName(name)] = q
		}
		if kind == "limits" {
			out.Resources.Limits = list
		} else {
			out.Resources.Requests = list
		}
	}
	return out, nil
}

func fieldErr(path []string, err error) error {
	p := ""
	for i, e := range path {
		if i > 0 {
			p += "."
		}
		p += e
	}
	return fmt.Errorf("meshconfig %s: %w", p, err)
}
