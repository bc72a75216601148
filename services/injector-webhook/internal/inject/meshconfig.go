package inject

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/openservicemesh/osm/libs/meshconfig"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// The MeshConfig fields the injector applies, by their field paths.
const (
	fieldSidecarImage    = "spec.sidecar.image"
	fieldInitImage       = "spec.sidecar.initContainerImage"
	fieldLogLevel        = "spec.sidecar.logLevel"
	fieldResources       = "spec.sidecar.resources"
	fieldOutboundPorts   = "spec.traffic.outboundPortExclusionList"
	fieldInboundPorts    = "spec.traffic.inboundPortExclusionList"
	fieldRangeExclusions = "spec.traffic.outboundIPRangeExclusionList"
	fieldRangeInclusions = "spec.traffic.outboundIPRangeInclusionList"
)

// WithMeshConfig returns s with the injection fields of a MeshConfig (as
// meshconfig.Parse reads it) applied over it: the sidecar image, init
// image, log level and resources, whether the init container runs
// privileged, and the traffic exclusion lists. A field
// the MeshConfig leaves unset keeps s's value. A value of one of these
// fields that meshconfig.Rejections refuses (a value Parse could not read,
// a port out of range, a request above its limit...) is an error that
// names the field, in the validating webhook's words.
func (s Settings) WithMeshConfig(mc *meshv1.MeshConfig) (Settings, error) {
	// The shared MeshConfig rules (the validating webhook's words), for
	// the fields the injector applies.
	for _, rej := range meshconfig.Rejections(mc) {
		if used(rej.FieldPath) {
			return s, fmt.Errorf("meshconfig %s", rej.Message)
		}
	}
	out := s
	sc := mc.GetSidecar()
	// No flag sets it: the MeshConfig's value (false when unset) is the one.
	out.PrivilegedInit = sc.GetEnablePrivilegedInitContainer()
	for _, f := range []struct {
		dst *string
		v   string
	}{
		{&out.SidecarImage, sc.GetSidecarImage()},
		{&out.InitImage, sc.GetInitContainerImage()},
		{&out.LogLevel, sc.GetLogLevel()},
	} {
		if f.v != "" {
			*f.dst = f.v
		}
	}
	for _, f := range []struct {
		dst   *[]int
		ports []int32
	}{
		{&out.OutboundPortExclusions, mc.GetTraffic().GetOutboundPortExclusionList()},
		{&out.InboundPortExclusions, mc.GetTraffic().GetInboundPortExclusionList()},
	} {
		if f.ports == nil {
			continue
		}
		ports := make([]int, 0, len(f.ports))
		for _, p := range f.ports {
			ports = append(ports, int(p))
		}
		*f.dst = ports
	}
	if v := mc.GetTraffic().GetOutboundIpRangeExclusionList(); v != nil {
		out.OutboundIPRangeExclusions = v
	}
	if v := mc.GetTraffic().GetOutboundIpRangeInclusionList(); v != nil {
		out.OutboundIPRangeInclusions = v
	}
	res := sc.GetResources()
	for _, r := range []struct {
		dst  *corev1.ResourceList
		kind string
		from map[string]string
	}{
		{&out.Resources.Limits, "limits", res.GetLimits()},
		{&out.Resources.Requests, "requests", res.GetRequests()},
	} {
		if r.from == nil {
			continue
		}
		list := make(corev1.ResourceList, len(r.from))
		for name, v := range r.from {
			q, err := resource.ParseQuantity(v)
			if err != nil {
				return s, fmt.Errorf("meshconfig %s.%s[%s]: %w", fieldResources, r.kind, name, err)
			}
			list[corev1.ResourceName(name)] = q
		}
		*r.dst = list
	}
	return out, nil
}

// used reports whether an invalid field's path is, contains or lies
// inside a field WithMeshConfig reads (spec.sidecar that is not an object
// holds spec.sidecar.image).
func used(path string) bool {
	for _, u := range []string{fieldSidecarImage, fieldInitImage, fieldLogLevel, fieldResources,
		fieldOutboundPorts, fieldInboundPorts, fieldRangeExclusions, fieldRangeInclusions} {
		if path == u || strings.HasPrefix(path, u+".") || strings.HasPrefix(path, u+"[") || strings.HasPrefix(u, path+".") {
			return true
		}
	}
	return false
}
