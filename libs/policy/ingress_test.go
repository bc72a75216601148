package policy

import (
	"slices"
	"testing"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

func validIngressBackend() *meshv1.IngressBackend {
	return &meshv1.IngressBackend{
		Backends: []*meshv1.IngressBackendBackend{
			{Name: "httpbin", Port: &meshv1.IngressBackendPort{Number: 14001, Protocol: "HTTP"}},
			{Name: "secure", Port: &meshv1.IngressBackendPort{Number: 8443, Protocol: "https"},
				Tls: &meshv1.IngressBackendTLS{SniHosts: []string{"Secure.httpbin.svc.cluster.local.", "secure"}}},
		},
		Sources: []*meshv1.IngressSource{
			{Kind: IngressSourceService, Name: "ingress-nginx-controller", Namespace: "ingress-nginx"},
			{Kind: IngressSourceService, Name: "local"},
			{Kind: IngressSourceIPRange, Name: "10.1.2.3/8"},
			{Kind: IngressSourcePrincipal, Name: "ingress-nginx.ingress-nginx.cluster.local"},
		},
		Matches: []*meshv1.TypedLocalObjectReference{{ApiGroup: "specs.smi-spec.io/v1alpha4", Kind: RuleKindHTTPRouteGroup, Name: "routes"}},
	}
}

// TestIngressBackendObject: every rule on the object alone, with its
// reason, field path and words.
func TestIngressBackendObject(t *testing.T) {
	cases := []struct {
		name string
		mut  func(*meshv1.IngressBackend)
		want want
	}{
		{"valid", func(*meshv1.IngressBackend) {}, nil},
		{"https with principals only", func(ib *meshv1.IngressBackend) {
			ib.Backends = ib.Backends[1:]
			ib.Sources = ib.Sources[3:]
		}, nil},
		{"a value of the wrong type", func(ib *meshv1.IngressBackend) {
			ib.InvalidFields = []*meshv1.InvalidField{{FieldPath: "spec.backends[0].port.number", Value: "eighty", Message: "must be an integer"}}
		}, &Rejection{ReasonInvalidFieldType, "spec.backends[0].port.number", `spec.backends[0].port.number: must be an integer (got "eighty")`}},
		{"no backend", func(ib *meshv1.IngressBackend) { ib.Backends = nil },
			&Rejection{ReasonMissingField, "spec.backends", "spec.backends: at least one backend is required"}},
		{"backend without a name", func(ib *meshv1.IngressBackend) { ib.Backends[1].Name = "" },
			&Rejection{ReasonMissingField, "spec.backends[1].name", "spec.backends[1].name: the backend Service needs a name"}},
		{"port out of range", func(ib *meshv1.IngressBackend) { ib.Backends[0].Port.Number = 0 },
			&Rejection{ReasonInvalidPort, "spec.backends[0].port.number", "spec.backends[0].port.number: port 0 is outside 1-65535"}},
		{"unknown protocol", func(ib *meshv1.IngressBackend) { ib.Backends[0].Port.Protocol = "grpc" },
			&Rejection{ReasonInvalidValue, "spec.backends[0].port.protocol", `spec.backends[0].port.protocol: protocol "grpc" is not supported, want "http" or "https"`}},
		{"sniHosts on http", func(ib *meshv1.IngressBackend) {
			ib.Backends[0].Tls = &meshv1.IngressBackendTLS{SniHosts: []string{"a.example.com"}}
		}, &Rejection{ReasonUnsupportedField, "spec.backends[0].tls.sniHosts", "spec.backends[0].tls.sniHosts: sniHosts match the SNI of TLS connections, and port 14001 is http"}},
		{"bad sniHost", func(ib *meshv1.IngressBackend) { ib.Backends[1].Tls.SniHosts[1] = "secure:8443" },
			&Rejection{ReasonInvalidValue, "spec.backends[1].tls.sniHosts[1]", `spec.backends[1].tls.sniHosts[1]: "secure:8443" is not a host name (a DNS name, optionally starting with "*.", without a port)`}},
		{"same backend port twice", func(ib *meshv1.IngressBackend) {
			ib.Backends = append(ib.Backends, &meshv1.IngressBackendBackend{Name: "httpbin", Port: &meshv1.IngressBackendPort{Number: 14001, Protocol: "https"}})
		}, &Rejection{ReasonInvalidPort, "spec.backends[2].port", `spec.backends[2].port: Service "httpbin" port 14001 is already a backend (spec.backends[0]): list each backend port once`}},
		{"no source", func(ib *meshv1.IngressBackend) { ib.Sources = nil },
			&Rejection{ReasonMissingField, "spec.sources", "spec.sources: at least one source is required"}},
		{"source of another kind", func(ib *meshv1.IngressBackend) { ib.Sources[0].Kind = "ServiceAccount" },
			&Rejection{ReasonInvalidKind, "spec.sources[0].kind", `spec.sources[0].kind: kind "ServiceAccount" is not supported, want "Service", "IPRange" or "AuthenticatedPrincipal"`}},
		{"Service source without a name", func(ib *meshv1.IngressBackend) { ib.Sources[1].Name = "" },
			&Rejection{ReasonMissingField, "spec.sources[1].name", "spec.sources[1].name: the source Service needs a name"}},
		{"bad CIDR", func(ib *meshv1.IngressBackend) { ib.Sources[2].Name = "10.0.0.1" },
			&Rejection{ReasonInvalidValue, "spec.sources[2].name", `spec.sources[2].name: "10.0.0.1" is not a CIDR range (e.g. 10.0.0.0/8): netip.ParsePrefix("10.0.0.1"): no '/'`}},
		{"principal without a name", func(ib *meshv1.IngressBackend) { ib.Sources[3].Name = "" },
			&Rejection{ReasonMissingField, "spec.sources[3].name", "spec.sources[3].name: the principal needs a name (the client certificate's SAN)"}},
		{"principal without a validating https backend", func(ib *meshv1.IngressBackend) {
			ib.Backends[1].Tls.SkipClientCertValidation = true
		}, &Rejection{ReasonUnsupportedField, "spec.sources[3]", "spec.sources[3]: an AuthenticatedPrincipal is matched against the client certificate of an https backend, and no backend is https with client certificate validation"}},
		{"http without an address source", func(ib *meshv1.IngressBackend) { ib.Sources = ib.Sources[3:] },
			&Rejection{ReasonMissingField, "spec.sources", `spec.sources: backend "httpbin" port 14001 (spec.backends[0]) is http, which is admitted by source address: list a Service or IPRange source`}},
		{"https by principal alone, without sniHosts", func(ib *meshv1.IngressBackend) {
			ib.Backends = ib.Backends[1:]
			ib.Backends[0].Tls.SniHosts = nil
			ib.Sources = ib.Sources[3:]
		}, &Rejection{ReasonMissingField, "spec.backends[0].tls.sniHosts", `spec.backends[0].tls.sniHosts: https backend "secure" port 8443 needs sniHosts or a Service or IPRange source: without either, its filter chain would take the mesh's own TLS connections to that port`}},
		{"match of another kind", func(ib *meshv1.IngressBackend) {
			ib.Matches[0].Kind = "Egress"
			ib.Matches[0].ApiGroup = "policy.openservicemesh.io/v1alpha1"
		}, &Rejection{ReasonUnknownRuleKind, "spec.matches[0]", `spec.matches[0]: kind "Egress" of apiGroup "policy.openservicemesh.io/v1alpha1" is not supported, want kind "HTTPRouteGroup" of apiGroup "specs.smi-spec.io/v1alpha4"`}},
		{"match without a name", func(ib *meshv1.IngressBackend) { ib.Matches[0].Name = "" },
			&Rejection{ReasonMissingField, "spec.matches[0].name", "spec.matches[0].name: the HTTPRouteGroup needs a name"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ib := validIngressBackend()
			c.mut(ib)
			_, _, rej := IngressBackendObject("httpbin", ib)
			check(t, rej, c.want)
		})
	}
}

// TestResolveIngressBackend: the normalised policy (backends sorted with
// lower-case protocols and SNI names, Service sources with the
// IngressBackend's namespace filled in, canonical ranges) and the
// HTTPRouteGroup resolved, or RouteNotFound at the match's name.
func TestResolveIngressBackend(t *testing.T) {
	routes := lookup{"httpbin/routes": {"get": {Key: "httpbin/routes/get", PathRegex: "/get"}}}
	got, rej := ResolveIngressBackend("httpbin", validIngressBackend(), routes)
	if rej != nil {
		t.Fatal(rej)
	}
	wantBackends := []IngressPort{{Service: "httpbin", Port: 14001, Protocol: "http"},
		{Service: "secure", Port: 8443, Protocol: "https", SNIHosts: []string{"secure", "secure.httpbin.svc.cluster.local"}}}
	if len(got.Backends) != 2 || got.Backends[0].Service != "httpbin" || got.Backends[0].Protocol != "http" ||
		!slices.Equal(got.Backends[1].SNIHosts, wantBackends[1].SNIHosts) || got.Backends[1].Protocol != "https" ||
		!slices.Equal(got.Services, []Identity{{"httpbin", "local"}, {"ingress-nginx", "ingress-nginx-controller"}}) ||
		!slices.Equal(got.IPRanges, []string{"10.0.0.0/8"}) ||
		!slices.Equal(got.Principals, []string{"ingress-nginx.ingress-nginx.cluster.local"}) ||
		len(got.HTTP) != 1 || got.HTTP[0].Key != "httpbin/routes/get" {
		t.Fatalf("resolved %+v", got)
	}
	_, rej = ResolveIngressBackend("httpbin", validIngressBackend(), lookup{})
	check(t, rej, &Rejection{ReasonRouteNotFound, "spec.matches[0].name", `spec.matches[0].name: HTTPRouteGroup "routes" not found (or rejected) in namespace "httpbin"`})
}
