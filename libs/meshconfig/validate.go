package meshconfig

import (
	"fmt"
	"net/netip"
	"sort"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/openservicemesh/osm/libs/meshconfig/tlsparams"
	"github.com/openservicemesh/osm/libs/meshconfig/tracing"
	"github.com/openservicemesh/osm/libs/policy"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// MeshConfig field paths the rules below name.
const (
	FieldOutboundPortExclusions = "spec.traffic.outboundPortExclusionList"
	FieldInboundPortExclusions  = "spec.traffic.inboundPortExclusionList"
	FieldOutboundIPExclusions   = "spec.traffic.outboundIPRangeExclusionList"
	FieldOutboundIPInclusions   = "spec.traffic.outboundIPRangeInclusionList"
	FieldSidecarResources       = "spec.sidecar.resources"
	FieldMaxConnections         = "spec.sidecar.maxDataPlaneConnections"
	FieldTracingPort            = tracing.FieldPort
	FieldTracingSampledFraction = tracing.FieldSampledFraction
	FieldCertValidity           = "spec.certificate.serviceCertValidityDuration"
)

// Validate is the first of Rejections, or nil when the MeshConfig is
// valid. Its words are libs/policy's, like every policy kind's.
func Validate(mc *meshv1.MeshConfig) *policy.Rejection {
	if r := Rejections(mc); len(r) > 0 {
		return r[0]
	}
	return nil
}

// Rejections checks a MeshConfig as meshconfig.Parse reads it and
// returns every field at fault, in a fixed order: the values Parse could
// not read (its InvalidFields), then ports outside 1-65535, IP ranges that
// are not CIDRs, a sidecar resource request above its limit, TLS
// parameters Envoy would refuse (tlsparams), a negative
// connection limit, tracing settings the compiler could not follow
// (tracing: enabled without a collector address or port, an unknown
// provider, an endpoint that does not fit the provider, a sampled
// fraction outside [0, 1]) and a certificate
// validity that is not positive. A consumer that applies only some fields
// (the injector) picks the rejections of those.
func Rejections(mc *meshv1.MeshConfig) []*policy.Rejection {
	var out []*policy.Rejection
	for _, f := range mc.GetInvalidFields() {
		out = append(out, policy.Reject(policy.ReasonInvalidValue, f.GetFieldPath(), "%s (got %q)", f.GetMessage(), f.GetValue()))
	}
	tr := mc.GetTraffic()
	for _, l := range []struct {
		path  string
		ports []int32
	}{
		{FieldOutboundPortExclusions, tr.GetOutboundPortExclusionList()},
		{FieldInboundPortExclusions, tr.GetInboundPortExclusionList()},
	} {
		for i, p := range l.ports {
			if p < 1 || p > 65535 {
				out = append(out, policy.Reject(policy.ReasonInvalidPort, fmt.Sprintf("%s[%d]", l.path, i), "port %d is outside 1-65535", p))
			}
		}
	}
	for _, l := range []struct {
		path   string
		ranges []string
	}{
		{FieldOutboundIPExclusions, tr.GetOutboundIpRangeExclusionList()},
		{FieldOutboundIPInclusions, tr.GetOutboundIpRangeInclusionList()},
	} {
		for i, r := range l.ranges {
			if _, err := netip.ParsePrefix(r); err != nil {
				out = append(out, policy.Reject(policy.ReasonInvalidValue, fmt.Sprintf("%s[%d]", l.path, i), "%q is not a CIDR such as 10.0.0.0/8", r))
			}
		}
	}
	out = append(out, resourceRejections(mc.GetSidecar().GetResources())...)
	out = append(out, tlsparams.Rejections(mc.GetSidecar())...)
	if n := mc.GetSidecar().GetMaxDataPlaneConnections(); n < 0 {
		out = append(out, policy.Reject(policy.ReasonInvalidValue, FieldMaxConnections, "%d is negative; 0 means no limit", n))
	}
	out = append(out, tracing.Rejections(mc.GetObservability().GetTracing())...)
	if d := mc.GetCertificate().GetServiceCertValidityDuration(); d != nil && d.AsDuration() <= 0 {
		out = append(out, policy.Reject(policy.ReasonInvalidValue, FieldCertValidity, "%s is not a positive duration", d.AsDuration()))
	}
	return out
}

// resourceRejections checks the sidecar's quantities and that no request
// exceeds its limit (the apiserver would refuse every injected pod).
func resourceRejections(res *meshv1.ResourceRequirements) []*policy.Rejection {
	var out []*policy.Rejection
	parse := func(kind string, m map[string]string) map[string]resource.Quantity {
		q := make(map[string]resource.Quantity, len(m))
		for _, name := range sortedKeys(m) {
			v, err := resource.ParseQuantity(m[name])
			if err != nil {
				out = append(out, policy.Reject(policy.ReasonInvalidValue, fmt.Sprintf("%s.%s[%s]", FieldSidecarResources, kind, name), "%q is not a quantity: %v", m[name], err))
				continue
			}
			q[name] = v
		}
		return q
	}
	limits := parse("limits", res.GetLimits())
	requests := parse("requests", res.GetRequests())
	for _, name := range sortedKeys(res.GetRequests()) {
		req, ok1 := requests[name]
		lim, ok2 := limits[name]
		if ok1 && ok2 && req.Cmp(lim) > 0 {
			out = append(out, policy.Reject(policy.ReasonInvalidValue, fmt.Sprintf("%s.requests[%s]", FieldSidecarResources, name),
				"request %s is above the limit %s; every injected pod would be refused", req.String(), lim.String()))
		}
	}
	return out
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
