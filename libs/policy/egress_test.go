package policy

import (
	"slices"
	"testing"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

func validEgress() *meshv1.Egress {
	return &meshv1.Egress{
		Sources:     []*meshv1.EgressSource{{Kind: KindServiceAccount, Name: "bookbuyer", Namespace: "bookbuyer"}, {Kind: KindServiceAccount, Name: "local"}},
		Hosts:       []string{"API.Example.com.", "*.github.com"},
		IpAddresses: []string{"203.0.113.7/24", "2001:db8::/32"},
		Ports: []*meshv1.EgressPort{{Number: 80, Protocol: "HTTP"}, {Number: 443, Protocol: "https"},
			{Number: 5432, Protocol: "tcp"}, {Number: 3306, Protocol: "tcp-server-first"}},
		Matches: []*meshv1.TypedLocalObjectReference{{ApiGroup: "specs.smi-spec.io/v1alpha4", Kind: RuleKindHTTPRouteGroup, Name: "routes"}},
	}
}

func TestEgressObject(t *testing.T) {
	cases := []struct {
		name string
		mut  func(*meshv1.Egress)
		want want
	}{
		{"valid", func(*meshv1.Egress) {}, nil},
		{"tcp alone, no host, no range", func(e *meshv1.Egress) {
			e.Hosts, e.IpAddresses, e.Matches, e.Ports = nil, nil, nil, []*meshv1.EgressPort{{Number: 9000, Protocol: "tcp"}}
		}, nil},
		{"a value of the wrong type", func(e *meshv1.Egress) {
			e.InvalidFields = []*meshv1.InvalidField{{FieldPath: "spec.ports[0].number", Value: "eighty", Message: "must be an integer"}}
		}, &Rejection{ReasonInvalidFieldType, "spec.ports[0].number", `spec.ports[0].number: must be an integer (got "eighty")`}},
		{"no source", func(e *meshv1.Egress) { e.Sources = nil },
			&Rejection{ReasonMissingField, "spec.sources", "spec.sources: at least one source is required"}},
		{"source of another kind", func(e *meshv1.Egress) { e.Sources[1].Kind = "Group" },
			&Rejection{ReasonInvalidKind, "spec.sources[1].kind", `spec.sources[1].kind: kind "Group" is not supported, want "ServiceAccount"`}},
		{"source without a name", func(e *meshv1.Egress) { e.Sources[0].Name = "" },
			&Rejection{ReasonMissingField, "spec.sources[0].name", "spec.sources[0].name: the source ServiceAccount needs a name"}},
		{"source with mtls", func(e *meshv1.Egress) { e.Sources[0].HasMtls = true },
			&Rejection{ReasonUnsupportedField, "spec.sources[0].mtls", "spec.sources[0].mtls: client certificates toward an egress gateway are not supported; remove mtls (the source's traffic leaves its sidecar as the application sent it)"}},
		{"no port", func(e *meshv1.Egress) { e.Ports = nil },
			&Rejection{ReasonMissingField, "spec.ports", "spec.ports: at least one port is required"}},
		{"port out of range", func(e *meshv1.Egress) { e.Ports[2].Number = 70000 },
			&Rejection{ReasonInvalidPort, "spec.ports[2].number", "spec.ports[2].number: port 70000 is outside 1-65535"}},
		{"the sidecar's inbound port", func(e *meshv1.Egress) { e.Ports[1].Number = 15003 },
			&Rejection{ReasonInvalidPort, "spec.ports[1].number", "spec.ports[1].number: port 15003 is a listener port of the sidecar itself (15001 outbound, 15003 inbound)"}},
		{"unknown protocol", func(e *meshv1.Egress) { e.Ports[3].Protocol = "udp" },
			&Rejection{ReasonInvalidValue, "spec.ports[3].protocol", `spec.ports[3].protocol: protocol "udp" is not supported, want "http", "https", "tcp" or "tcp-server-first"`}},
		{"host with a port", func(e *meshv1.Egress) { e.Hosts[1] = "api.example.com:443" },
			&Rejection{ReasonInvalidValue, "spec.hosts[1]", `spec.hosts[1]: "api.example.com:443" is not a host name (a DNS name, optionally starting with "*.", without a port)`}},
		{"bad CIDR", func(e *meshv1.Egress) { e.IpAddresses[1] = "10.0.0.1" },
			&Rejection{ReasonInvalidValue, "spec.ipAddresses[1]", `spec.ipAddresses[1]: "10.0.0.1" is not a CIDR range (e.g. 203.0.113.0/24): netip.ParsePrefix("10.0.0.1"): no '/'`}},
		{"http without hosts", func(e *meshv1.Egress) { e.Hosts = nil },
			&Rejection{ReasonMissingField, "spec.hosts", "spec.hosts: port 80 (spec.ports[0]) is http, which is allowed by host: list the hosts"}},
		{"https without hosts or ranges", func(e *meshv1.Egress) {
			e.Hosts, e.IpAddresses, e.Matches, e.Ports = nil, nil, nil, []*meshv1.EgressPort{{Number: 8443, Protocol: "https"}}
		}, &Rejection{ReasonMissingField, "spec.hosts", "spec.hosts: port 8443 (spec.ports[0]) is https, which is allowed by SNI or destination range: list hosts or ipAddresses"}},
		{"match of another kind", func(e *meshv1.Egress) {
			e.Matches[0].Kind = "UpstreamTrafficSetting"
			e.Matches[0].ApiGroup = "policy.openservicemesh.io/v1alpha1"
		},
			&Rejection{ReasonUnknownRuleKind, "spec.matches[0]", `spec.matches[0]: kind "UpstreamTrafficSetting" of apiGroup "policy.openservicemesh.io/v1alpha1" is not supported, want kind "HTTPRouteGroup" of apiGroup "specs.smi-spec.io/v1alpha4"`}},
		{"matches without an http port", func(e *meshv1.Egress) { e.Ports = e.Ports[1:] },
			&Rejection{ReasonUnsupportedField, "spec.matches[0]", "spec.matches[0]: matches restrict http requests, and no port of this Egress is http"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := validEgress()
			c.mut(e)
			_, _, rej := EgressObject("bookbuyer", e)
			check(t, rej, c.want)
		})
	}
}

type lookup map[string]map[string]HTTPMatch

func (l lookup) HTTPRouteGroup(ns, name string) (map[string]HTTPMatch, bool) {
	m, ok := l[ns+"/"+name]
	return m, ok
}

func (l lookup) TCPRoute(string, string) (TCPMatch, bool) { return TCPMatch{}, false }

// TestResolveEgress: the normalised policy (sources with the Egress's
// namespace filled in, lower-case hosts, canonical ranges, sorted ports)
// and the HTTPRouteGroup resolved, or RouteNotFound at the match's name.
func TestResolveEgress(t *testing.T) {
	routes := lookup{"bookbuyer/routes": {"read": {Key: "bookbuyer/routes/read", PathRegex: "/books"}}}
	got, rej := ResolveEgress("bookbuyer", validEgress(), routes)
	if rej != nil {
		t.Fatal(rej)
	}
	if !slices.Equal(got.Sources, []Identity{{"bookbuyer", "bookbuyer"}, {"bookbuyer", "local"}}) ||
		!slices.Equal(got.Hosts, []string{"*.github.com", "api.example.com"}) ||
		!slices.Equal(got.IPRanges, []string{"2001:db8::/32", "203.0.113.0/24"}) ||
		!slices.Equal(got.Ports, []EgressPort{{80, "http"}, {443, "https"}, {3306, "tcp-server-first"}, {5432, "tcp"}}) ||
		len(got.HTTP) != 1 || got.HTTP[0].Key != "bookbuyer/routes/read" {
		t.Fatalf("resolved %+v", got)
	}
	_, rej = ResolveEgress("bookbuyer", validEgress(), lookup{})
	check(t, rej, &Rejection{ReasonRouteNotFound, "spec.matches[0].name", `spec.matches[0].name: HTTPRouteGroup "routes" not found (or rejected) in namespace "bookbuyer"`})
}
