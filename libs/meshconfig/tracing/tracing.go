// Package tracing holds the rules of MeshConfig's
// spec.observability.tracing: the collector protocols (providers), the
// rejections the validating webhook gives, and the provider the
// policy-compiler compiles into every Envoy HTTP connection manager's
// tracing config and the tracing cluster. It has no Kubernetes
// dependency, so the compiler can use it.
package tracing

import (
	"strings"

	"github.com/openservicemesh/osm/libs/policy"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// Providers: the collector protocols Envoy speaks to the collector.
const (
	// Zipkin is Zipkin v2 JSON posted over HTTP to the endpoint (the
	// default).
	Zipkin = "zipkin"
	// OpenTelemetry is OTLP over gRPC (HTTP/2) to address:port; it has no
	// endpoint.
	OpenTelemetry = "opentelemetry"
)

// Providers are the provider names, the default first.
var Providers = []string{Zipkin, OpenTelemetry}

// DefaultZipkinEndpoint is the path Zipkin spans are posted to when the
// endpoint is unset.
const DefaultZipkinEndpoint = "/api/v2/spans"

// Field paths of the tracing settings.
const (
	FieldEnable          = "spec.observability.tracing.enable"
	FieldAddress         = "spec.observability.tracing.address"
	FieldPort            = "spec.observability.tracing.port"
	FieldEndpoint        = "spec.observability.tracing.endpoint"
	FieldSampledFraction = "spec.observability.tracing.sampledFraction"
	FieldProvider        = "spec.observability.tracing.provider"
)

// Provider is the provider of spec, Zipkin when unset. A name that is not
// one of Providers is returned as it is; Rejections refuses it.
func Provider(spec *meshv1.TracingSpec) string {
	if p := spec.GetProvider(); p != "" {
		return p
	}
	return Zipkin
}

// Rejections checks the tracing settings: enabled needs an address and a
// port, the port is within 1-65535, the provider is known, a Zipkin
// endpoint is an absolute path, an OpenTelemetry one is unset (OTLP over
// gRPC has none) and the sampled fraction is within [0, 1]. Only the
// address and port being set depends on enable; the rest is checked
// whether or not tracing is on.
func Rejections(spec *meshv1.TracingSpec) []*policy.Rejection {
	var out []*policy.Rejection
	if spec.GetEnable() {
		if spec.GetAddress() == "" {
			out = append(out, policy.Reject(policy.ReasonInvalidValue, FieldAddress, "tracing is enabled but no collector address is set"))
		}
		if spec.GetPort() == 0 {
			out = append(out, policy.Reject(policy.ReasonInvalidPort, FieldPort, "tracing is enabled but no collector port is set"))
		}
	}
	if p := spec.GetPort(); p != 0 && (p < 1 || p > 65535) {
		out = append(out, policy.Reject(policy.ReasonInvalidPort, FieldPort, "port %d is outside 1-65535", p))
	}
	switch Provider(spec) {
	case Zipkin:
		if ep := spec.GetEndpoint(); ep != "" && !strings.HasPrefix(ep, "/") {
			out = append(out, policy.Reject(policy.ReasonInvalidValue, FieldEndpoint, "%q is not an absolute path such as %s", ep, DefaultZipkinEndpoint))
		}
	case OpenTelemetry:
		if ep := spec.GetEndpoint(); ep != "" {
			out = append(out, policy.Reject(policy.ReasonInvalidValue, FieldEndpoint, "%q is set, but the opentelemetry provider sends OTLP over gRPC to address:port and has no endpoint", ep))
		}
	default:
		out = append(out, policy.Reject(policy.ReasonInvalidValue, FieldProvider, "%q is not a tracing provider; one of %s", spec.GetProvider(), strings.Join(Providers, ", ")))
	}
	if spec != nil && spec.SampledFraction != nil {
		if f := spec.GetSampledFraction(); f < 0 || f > 1 {
			out = append(out, policy.Reject(policy.ReasonInvalidValue, FieldSampledFraction, "%g is outside [0, 1]", f))
		}
	}
	return out
}

// Active reports whether sidecars trace with spec: tracing is enabled and
// Rejections finds nothing, so that a MeshConfig that got past
// validation (the webhook away) never reaches Envoy as a config it would
// NACK or a collector it cannot reach; such a MeshConfig traces nothing.
func Active(spec *meshv1.TracingSpec) bool {
	return spec.GetEnable() && len(Rejections(spec)) == 0
}
