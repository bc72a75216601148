package meshconfig

import (
	"testing"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/openservicemesh/osm/libs/policy"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

func rej(reason, path, msg string) *policy.Rejection {
	return &policy.Rejection{Reason: reason, FieldPath: path, Message: msg}
}

func check(t *testing.T, got, want *policy.Rejection) {
	t.Helper()
	switch {
	case want == nil && got != nil:
		t.Fatalf("rejected a valid MeshConfig: %s (%s)", got.Message, got.Reason)
	case want == nil:
	case got == nil:
		t.Fatalf("accepted, want %s at %s", want.Reason, want.FieldPath)
	case *got != *want:
		t.Fatalf("got  %s %s %q\nwant %s %s %q", got.Reason, got.FieldPath, got.Message, want.Reason, want.FieldPath, want.Message)
	}
}

func TestValidate(t *testing.T) {
	frac := func(f float64) *float64 { return &f }
	cases := []struct {
		name string
		mc   *meshv1.MeshConfig
		want *policy.Rejection
	}{
		{"valid", &meshv1.MeshConfig{
			Sidecar:       &meshv1.SidecarSpec{Resources: &meshv1.ResourceRequirements{Limits: map[string]string{"cpu": "1"}, Requests: map[string]string{"cpu": "500m", "memory": "64Mi"}}},
			Traffic:       &meshv1.TrafficSpec{OutboundPortExclusionList: []int32{6379}, OutboundIpRangeExclusionList: []string{"10.0.0.0/8", "fd00::/8"}},
			Observability: &meshv1.ObservabilitySpec{Tracing: &meshv1.TracingSpec{Port: 9411, SampledFraction: frac(0.5)}},
			Certificate:   &meshv1.CertificateSpec{ServiceCertValidityDuration: durationpb.New(86400e9)},
		}, nil},
		{"a value Parse could not read", &meshv1.MeshConfig{InvalidFields: []*meshv1.InvalidField{{FieldPath: "spec.certificate.serviceCertValidityDuration", Value: "one day", Message: `time: invalid duration "one day"`}}},
			rej(policy.ReasonInvalidValue, "spec.certificate.serviceCertValidityDuration", `spec.certificate.serviceCertValidityDuration: time: invalid duration "one day" (got "one day")`)},
		{"port 0", &meshv1.MeshConfig{Traffic: &meshv1.TrafficSpec{InboundPortExclusionList: []int32{80, 0}}},
			rej(policy.ReasonInvalidPort, "spec.traffic.inboundPortExclusionList[1]", "spec.traffic.inboundPortExclusionList[1]: port 0 is outside 1-65535")},
		{"not a CIDR", &meshv1.MeshConfig{Traffic: &meshv1.TrafficSpec{OutboundIpRangeInclusionList: []string{"10.0.0.1"}}},
			rej(policy.ReasonInvalidValue, "spec.traffic.outboundIPRangeInclusionList[0]", `spec.traffic.outboundIPRangeInclusionList[0]: "10.0.0.1" is not a CIDR such as 10.0.0.0/8`)},
		{"request above its limit", &meshv1.MeshConfig{Sidecar: &meshv1.SidecarSpec{Resources: &meshv1.ResourceRequirements{Limits: map[string]string{"cpu": "1"}, Requests: map[string]string{"cpu": "2"}}}},
			rej(policy.ReasonInvalidValue, "spec.sidecar.resources.requests[cpu]", "spec.sidecar.resources.requests[cpu]: request 2 is above the limit 1; every injected pod would be refused")},
		{"negative connection limit", &meshv1.MeshConfig{Sidecar: &meshv1.SidecarSpec{MaxDataPlaneConnections: -1}},
			rej(policy.ReasonInvalidValue, "spec.sidecar.maxDataPlaneConnections", "spec.sidecar.maxDataPlaneConnections: -1 is negative; 0 means no limit")},
		{"tracing port", &meshv1.MeshConfig{Observability: &meshv1.ObservabilitySpec{Tracing: &meshv1.TracingSpec{Port: 70000}}},
			rej(policy.ReasonInvalidPort, "spec.observability.tracing.port", "spec.observability.tracing.port: port 70000 is outside 1-65535")},
		{"sampled fraction", &meshv1.MeshConfig{Observability: &meshv1.ObservabilitySpec{Tracing: &meshv1.TracingSpec{SampledFraction: frac(1.5)}}},
			rej(policy.ReasonInvalidValue, "spec.observability.tracing.sampledFraction", "spec.observability.tracing.sampledFraction: 1.5 is outside [0, 1]")},
		{"tracing on, no address", &meshv1.MeshConfig{Observability: &meshv1.ObservabilitySpec{Tracing: &meshv1.TracingSpec{Enable: true, Port: 9411}}},
			rej(policy.ReasonInvalidValue, "spec.observability.tracing.address", "spec.observability.tracing.address: tracing is enabled but no collector address is set")},
		{"tracing on, no port", &meshv1.MeshConfig{Observability: &meshv1.ObservabilitySpec{Tracing: &meshv1.TracingSpec{Enable: true, Address: "jaeger.tracing"}}},
			rej(policy.ReasonInvalidPort, "spec.observability.tracing.port", "spec.observability.tracing.port: tracing is enabled but no collector port is set")},
		{"tracing off needs no collector", &meshv1.MeshConfig{Observability: &meshv1.ObservabilitySpec{Tracing: &meshv1.TracingSpec{Endpoint: "/api/v2/spans"}}}, nil},
		{"tracing provider", &meshv1.MeshConfig{Observability: &meshv1.ObservabilitySpec{Tracing: &meshv1.TracingSpec{Provider: "jaeger"}}},
			rej(policy.ReasonInvalidValue, "spec.observability.tracing.provider", `spec.observability.tracing.provider: "jaeger" is not a tracing provider; one of zipkin, opentelemetry`)},
		{"zipkin endpoint not a path", &meshv1.MeshConfig{Observability: &meshv1.ObservabilitySpec{Tracing: &meshv1.TracingSpec{Enable: true, Address: "zipkin", Port: 9411, Endpoint: "api/v2/spans"}}},
			rej(policy.ReasonInvalidValue, "spec.observability.tracing.endpoint", `spec.observability.tracing.endpoint: "api/v2/spans" is not an absolute path such as /api/v2/spans`)},
		{"opentelemetry with an endpoint", &meshv1.MeshConfig{Observability: &meshv1.ObservabilitySpec{Tracing: &meshv1.TracingSpec{Enable: true, Address: "otel", Port: 4317, Provider: "opentelemetry", Endpoint: "/v1/traces"}}},
			rej(policy.ReasonInvalidValue, "spec.observability.tracing.endpoint", `spec.observability.tracing.endpoint: "/v1/traces" is set, but the opentelemetry provider sends OTLP over gRPC to address:port and has no endpoint`)},
		{"opentelemetry", &meshv1.MeshConfig{Observability: &meshv1.ObservabilitySpec{Tracing: &meshv1.TracingSpec{Enable: true, Address: "otel", Port: 4317, Provider: "opentelemetry", SampledFraction: frac(1)}}}, nil},
		{"zero validity", &meshv1.MeshConfig{Certificate: &meshv1.CertificateSpec{ServiceCertValidityDuration: durationpb.New(0)}},
			rej(policy.ReasonInvalidValue, "spec.certificate.serviceCertValidityDuration", "spec.certificate.serviceCertValidityDuration: 0s is not a positive duration")},
		{"TLS parameters", &meshv1.MeshConfig{Sidecar: &meshv1.SidecarSpec{TlsMinProtocolVersion: "TLS_AUTO", TlsMaxProtocolVersion: "TLSv1_3",
			CipherSuites: []string{"[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]", "AES128-SHA"}, EcdhCurves: []string{"X25519", "P-256"}}}, nil},
		{"TLS version name", &meshv1.MeshConfig{Sidecar: &meshv1.SidecarSpec{TlsMaxProtocolVersion: "1.3"}},
			rej(policy.ReasonInvalidValue, "spec.sidecar.tlsMaxProtocolVersion", `spec.sidecar.tlsMaxProtocolVersion: "1.3" is not a TLS version; one of TLS_AUTO, TLSv1_0, TLSv1_1, TLSv1_2, TLSv1_3`)},
		{"TLS minimum above maximum", &meshv1.MeshConfig{Sidecar: &meshv1.SidecarSpec{TlsMinProtocolVersion: "TLSv1_3", TlsMaxProtocolVersion: "TLSv1_2"}},
			rej(policy.ReasonInvalidValue, "spec.sidecar.tlsMinProtocolVersion", "spec.sidecar.tlsMinProtocolVersion: minimum TLSv1_3 is above the maximum TLSv1_2 (spec.sidecar.tlsMaxProtocolVersion)")},
		{"cipher suite", &meshv1.MeshConfig{Sidecar: &meshv1.SidecarSpec{CipherSuites: []string{"[AES128-SHA|RC4]"}}},
			rej(policy.ReasonInvalidValue, "spec.sidecar.cipherSuites[0]", `spec.sidecar.cipherSuites[0]: "[AES128-SHA|RC4]" is not a cipher suite Envoy knows, such as ECDHE-ECDSA-AES128-GCM-SHA256`)},
		{"ECDH curve", &meshv1.MeshConfig{Sidecar: &meshv1.SidecarSpec{EcdhCurves: []string{"X25519", "secp256k1"}}},
			rej(policy.ReasonInvalidValue, "spec.sidecar.ecdhCurves[1]", `spec.sidecar.ecdhCurves[1]: "secp256k1" is not an ECDH curve; one of X25519, P-256, P-224, P-384, P-521, X25519MLKEM768`)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { check(t, Validate(c.mc), c.want) })
	}
	// Every field at fault, in order.
	all := Rejections(&meshv1.MeshConfig{Traffic: &meshv1.TrafficSpec{OutboundPortExclusionList: []int32{0, 70000}, OutboundIpRangeExclusionList: []string{"x"}}})
	if len(all) != 3 || all[0].FieldPath != "spec.traffic.outboundPortExclusionList[0]" || all[2].FieldPath != "spec.traffic.outboundIPRangeExclusionList[0]" {
		t.Fatalf("rejections %v", all)
	}
}
