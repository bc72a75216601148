package policy

import (
	"testing"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// want is the expected verdict: nil for a valid object.
type want *Rejection

func check(t *testing.T, got *Rejection, w want) {
	t.Helper()
	switch {
	case w == nil && got != nil:
		t.Fatalf("rejected a valid object: %s (%s)", got.Message, got.Reason)
	case w == nil:
	case got == nil:
		t.Fatalf("accepted, want %s at %s", w.Reason, w.FieldPath)
	case *got != *w:
		t.Fatalf("got  %s %s %q\nwant %s %s %q", got.Reason, got.FieldPath, got.Message, w.Reason, w.FieldPath, w.Message)
	}
}

func sa(name, ns string) *meshv1.IdentityBindingSubject {
	return &meshv1.IdentityBindingSubject{Kind: KindServiceAccount, Name: name, Namespace: ns}
}

func TestTrafficTarget(t *testing.T) {
	valid := func() *meshv1.TrafficTarget {
		return &meshv1.TrafficTarget{Destination: sa("bookstore", "bookstore"), Sources: []*meshv1.IdentityBindingSubject{sa("bookbuyer", "bookbuyer"), sa("x", "")},
			Rules: []*meshv1.TrafficTargetRule{{Kind: RuleKindHTTPRouteGroup, Name: "routes"}, {Kind: RuleKindTCPRoute, Name: "db"}}}
	}
	cases := []struct {
		name string
		mut  func(*meshv1.TrafficTarget)
		want want
	}{
		{"valid", func(*meshv1.TrafficTarget) {}, nil},
		{"destination of another kind", func(tt *meshv1.TrafficTarget) { tt.Destination.Kind = "Group" },
			&Rejection{ReasonInvalidKind, "spec.destination.kind", `spec.destination.kind: kind "Group" is not supported, want "ServiceAccount"`}},
		{"destination without a name", func(tt *meshv1.TrafficTarget) { tt.Destination.Name = "" },
			&Rejection{ReasonMissingField, "spec.destination.name", "spec.destination.name: the destination ServiceAccount needs a name"}},
		{"destination in another namespace", func(tt *meshv1.TrafficTarget) { tt.Destination.Namespace = "bookbuyer" },
			&Rejection{ReasonCrossNamespace, "spec.destination.namespace", `spec.destination.namespace: namespace "bookbuyer" differs from the TrafficTarget's namespace "bookstore"; a TrafficTarget counts only in its destination's namespace`}},
		{"source of another kind", func(tt *meshv1.TrafficTarget) { tt.Sources[1].Kind = "User" },
			&Rejection{ReasonInvalidKind, "spec.sources[1].kind", `spec.sources[1].kind: kind "User" is not supported, want "ServiceAccount"`}},
		{"source without a name", func(tt *meshv1.TrafficTarget) { tt.Sources[0].Name = "" },
			&Rejection{ReasonMissingField, "spec.sources[0].name", "spec.sources[0].name: the source ServiceAccount needs a name"}},
		{"no rule", func(tt *meshv1.TrafficTarget) { tt.Rules = nil },
			&Rejection{ReasonMissingField, "spec.rules", "spec.rules: at least one rule is required"}},
		{"rule of an unknown kind", func(tt *meshv1.TrafficTarget) { tt.Rules[1].Kind = "UDPRoute" },
			&Rejection{ReasonUnknownRuleKind, "spec.rules[1].kind", `spec.rules[1].kind: kind "UDPRoute" is not supported, want "HTTPRouteGroup" or "TCPRoute"`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tt := valid()
			c.mut(tt)
			check(t, TrafficTarget("bookstore", tt), c.want)
		})
	}
}

func TestHTTPRouteGroup(t *testing.T) {
	cases := []struct {
		name    string
		matches []*meshv1.HTTPMatch
		want    want
	}{
		{"valid", []*meshv1.HTTPMatch{{Name: "buy", PathRegex: "/buy.*", Methods: []string{"get", "POST", "GET"}, Headers: map[string]string{"User-Agent": ".*"}}}, nil},
		{"match without a name", []*meshv1.HTTPMatch{{PathRegex: "/"}},
			&Rejection{ReasonMissingField, "spec.matches[0].name", "spec.matches[0].name: a match needs a name"}},
		{"two matches of one name", []*meshv1.HTTPMatch{{Name: "a"}, {Name: "a"}},
			&Rejection{ReasonMissingField, "spec.matches[1].name", `spec.matches[1].name: duplicate match name "a"`}},
		{"invalid path regex", []*meshv1.HTTPMatch{{Name: "a", PathRegex: "(a-book"}},
			&Rejection{ReasonInvalidRegex, "spec.matches[0].pathRegex", "spec.matches[0].pathRegex: invalid RE2 regular expression \"(a-book\": error parsing regexp: missing closing ): `(a-book`"}},
		{"unknown method", []*meshv1.HTTPMatch{{Name: "a", Methods: []string{"GET", "FETCH"}}},
			&Rejection{ReasonInvalidMethod, "spec.matches[0].methods[1]", `spec.matches[0].methods[1]: unknown HTTP method "FETCH"`}},
		{"invalid header regexes: the first by name", []*meshv1.HTTPMatch{{Name: "a", Headers: map[string]string{"z": "(", "b": "["}}},
			&Rejection{ReasonInvalidRegex, "spec.matches[0].headers[b]", "spec.matches[0].headers[b]: invalid RE2 regular expression \"[\": error parsing regexp: missing closing ]: `[`"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ms, rej := HTTPRouteGroup("bookstore", "routes", &meshv1.HTTPRouteGroup{Matches: c.matches})
			check(t, rej, c.want)
			if c.want == nil {
				m := ms["buy"]
				if m.Key != "bookstore/routes/buy" || len(m.Methods) != 2 || m.Methods[0] != "GET" || m.Headers[0].Name != "user-agent" {
					t.Fatalf("match %+v", m)
				}
			}
		})
	}
}

func TestTCPRoute(t *testing.T) {
	m, rej := TCPRoute(&meshv1.TCPRoute{Matches: &meshv1.TCPMatch{Ports: []int32{5432, 3306}}})
	check(t, rej, nil)
	if len(m.Ports) != 2 || m.Ports[0] != 3306 {
		t.Fatalf("ports %v, want sorted", m.Ports)
	}
	_, rej = TCPRoute(&meshv1.TCPRoute{Matches: &meshv1.TCPMatch{Ports: []int32{3306, 70000}}})
	check(t, rej, &Rejection{ReasonInvalidPort, "spec.matches.ports[1]", "spec.matches.ports[1]: port 70000 is outside 1-65535"})
	_, rej = TCPRoute(&meshv1.TCPRoute{Matches: &meshv1.TCPMatch{Ports: []int32{0}}})
	check(t, rej, &Rejection{ReasonInvalidPort, "spec.matches.ports[0]", "spec.matches.ports[0]: port 0 is outside 1-65535"})
}

func TestTrafficSplit(t *testing.T) {
	b := func(svc string, w int32) *meshv1.TrafficSplitBackend {
		return &meshv1.TrafficSplitBackend{Service: svc, Weight: w}
	}
	cases := []struct {
		name string
		ts   *meshv1.TrafficSplit
		want want
	}{
		{"valid, one backend at 0", &meshv1.TrafficSplit{Service: "bookstore", Backends: []*meshv1.TrafficSplitBackend{b("v1", 0), b("v2", 10)}}, nil},
		{"no apex", &meshv1.TrafficSplit{Backends: []*meshv1.TrafficSplitBackend{b("v1", 1)}},
			&Rejection{ReasonMissingField, "spec.service", "spec.service: the apex service is required"}},
		{"matches", &meshv1.TrafficSplit{Service: "s", Backends: []*meshv1.TrafficSplitBackend{b("v1", 1)}, Matches: []*meshv1.TypedLocalObjectReference{{Kind: "HTTPRouteGroup", Name: "r"}}},
			&Rejection{ReasonUnsupportedField, "spec.matches", "spec.matches: matches are not supported by split v1alpha2; remove them"}},
		{"backend without a service", &meshv1.TrafficSplit{Service: "s", Backends: []*meshv1.TrafficSplitBackend{b("v1", 1), b("", 1)}},
			&Rejection{ReasonMissingField, "spec.backends[1].service", "spec.backends[1].service: the backend service is required"}},
		{"backend twice", &meshv1.TrafficSplit{Service: "s", Backends: []*meshv1.TrafficSplitBackend{b("v1", 1), b("v1", 1)}},
			&Rejection{ReasonMissingField, "spec.backends[1].service", `spec.backends[1].service: backend "v1" is listed twice`}},
		{"negative weight", &meshv1.TrafficSplit{Service: "s", Backends: []*meshv1.TrafficSplitBackend{b("v1", -1), b("v2", 5)}},
			&Rejection{ReasonInvalidWeight, "spec.backends[0].weight", "spec.backends[0].weight: weight -1 is negative"}},
		{"weights sum to 0", &meshv1.TrafficSplit{Service: "s", Backends: []*meshv1.TrafficSplitBackend{b("v1", 0), b("v2", 0)}},
			&Rejection{ReasonZeroTotalWeight, "spec.backends", "spec.backends: the weights of the 2 backends sum to 0"}},
		{"no backend", &meshv1.TrafficSplit{Service: "s"},
			&Rejection{ReasonZeroTotalWeight, "spec.backends", "spec.backends: the weights of the 0 backends sum to 0"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { check(t, TrafficSplit(c.ts), c.want) })
	}
}

func TestVerdict(t *testing.T) {
	rej := Reject(ReasonZeroTotalWeight, "spec.backends", "the weights of the %d backends sum to 0", 2)
	if got := Verdict("TrafficSplit", "bookstore", "split", rej); got != "TrafficSplit bookstore/split rejected: spec.backends: the weights of the 2 backends sum to 0" {
		t.Fatal(got)
	}
	if got := Verdict("TrafficSplit", "bookstore", "split", nil); got != "TrafficSplit bookstore/split is valid" {
		t.Fatal(got)
	}
}

func TestWarned(t *testing.T) {
	w := Reject("RetryOnIgnoredByProxylessGRPC", "spec.retryPolicy.retryOn", "5xx dropped for proxyless gRPC clients")
	got := Warned("Retry", "bookbuyer", "retry", w)
	if got != "Retry bookbuyer/retry accepted with a warning: spec.retryPolicy.retryOn: 5xx dropped for proxyless gRPC clients" {
		t.Fatal(got)
	}
	for msg, want := range map[string]bool{
		got:                     true,
		got + " (generation 3)": true,
		Verdict("Retry", "bookbuyer", "retry", w): false,
		Verdict("Retry", "bookbuyer", "retry", Reject("X", "spec.a", "value %q", " accepted with a warning: ")): false,
	} {
		if IsWarned(msg) != want {
			t.Errorf("IsWarned(%q) = %v, want %v", msg, !want, want)
		}
	}
}
