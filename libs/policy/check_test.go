package policy

import (
	"strings"
	"testing"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

func meta(ns, name string) *meshv1.ObjectMeta { return &meshv1.ObjectMeta{Namespace: ns, Name: name} }

// bookstore is OSM's demo: bookbuyer may GET /books-bought and /buy on
// bookstore over HTTP; bookthief is named by no TrafficTarget.
func bookstore() *Mesh {
	return &Mesh{
		MeshConfig: "osm-system/osm-mesh-config",
		Meshed:     map[string]bool{"bookstore": true, "bookbuyer": true, "bookthief": true},
		Services: []Service{
			{Namespace: "bookstore", Name: "bookstore", Ports: []ServicePort{{Name: "http", Port: 14001, TargetPort: 14001, Protocol: ProtocolHTTP}},
				Identities: []Identity{{"bookstore", "bookstore"}}},
			{Namespace: "bookstore", Name: "bookstore-v1", Ports: []ServicePort{{Name: "http", Port: 14001, TargetPort: 14001, Protocol: ProtocolHTTP}},
				Identities: []Identity{{"bookstore", "bookstore-v1"}}},
			{Namespace: "bookstore", Name: "bookstore-v2", Ports: []ServicePort{{Name: "http", Port: 14001, TargetPort: 14001, Protocol: ProtocolHTTP}},
				Identities: []Identity{{"bookstore", "bookstore-v2"}}},
			{Namespace: "bookstore", Name: "mysql", Ports: []ServicePort{{Name: "mysql", Port: 3306, TargetPort: 3306, Protocol: ProtocolTCP}},
				Identities: []Identity{{"bookstore", "mysql"}}},
			{Namespace: "bookstore", Name: "empty", Ports: []ServicePort{{Port: 80, TargetPort: 8080, Protocol: ProtocolTCP}}},
			{Namespace: "bookstore", Name: "two", Ports: []ServicePort{{Name: "http", Port: 80, Protocol: ProtocolHTTP}, {Name: "admin", Port: 9000, Protocol: ProtocolTCP}},
				Identities: []Identity{{"bookstore", "bookstore"}}},
		},
		TrafficTargets: []*meshv1.TrafficTarget{{
			Meta:        meta("bookstore", "bookbuyer-access-bookstore"),
			Destination: sa("bookstore", "bookstore"),
			Sources:     []*meshv1.IdentityBindingSubject{sa("bookbuyer", "bookbuyer")},
			Rules:       []*meshv1.TrafficTargetRule{{Kind: RuleKindHTTPRouteGroup, Name: "bookstore-service-routes", Matches: []string{"buy-a-book", "books-bought"}}},
		}, {
			Meta:        meta("bookstore", "bookbuyer-access-mysql"),
			Destination: sa("mysql", "bookstore"),
			Sources:     []*meshv1.IdentityBindingSubject{sa("bookbuyer", "bookbuyer")},
			Rules:       []*meshv1.TrafficTargetRule{{Kind: RuleKindTCPRoute, Name: "mysql"}},
		}},
		HTTPRouteGroups: []*meshv1.HTTPRouteGroup{{
			Meta: meta("bookstore", "bookstore-service-routes"),
			Matches: []*meshv1.HTTPMatch{
				{Name: "books-bought", PathRegex: "/books-bought", Methods: []string{"GET"}},
				{Name: "buy-a-book", PathRegex: ".*a-book.*new", Methods: []string{"GET"}},
			},
		}},
		TCPRoutes: []*meshv1.TCPRoute{{Meta: meta("bookstore", "mysql"), Matches: &meshv1.TCPMatch{Ports: []int32{3306}}}},
	}
}

func req(src, svc, port, method, path string) Request {
	sns, sname, _ := strings.Cut(src, "/")
	dns, dname, _ := strings.Cut(svc, "/")
	return Request{Source: Identity{sns, sname}, ServiceNamespace: dns, Service: dname, Port: port, Method: method, Path: path}
}

func TestCheck(t *testing.T) {
	cases := []struct {
		name    string
		mut     func(*Mesh)
		req     Request
		allowed bool
		reason  string
		// target and route of the first leg; message has this.
		target, route, message string
		rejected               []string // Kind/name: reason at fieldPath
	}{
		{name: "bookbuyer allowed", req: req("bookbuyer/bookbuyer", "bookstore/bookstore", "", "GET", "/books-bought"), allowed: true, reason: CheckAllowed,
			target: "bookstore/bookbuyer-access-bookstore", route: "HTTPRouteGroup bookstore/bookstore-service-routes match books-bought"},
		{name: "bookbuyer by port name, regex match", req: req("bookbuyer/bookbuyer", "bookstore/bookstore", "http", "get", "/buy-a-book/new?x=1"), allowed: true, reason: CheckAllowed,
			target: "bookstore/bookbuyer-access-bookstore", route: "HTTPRouteGroup bookstore/bookstore-service-routes match buy-a-book"},
		{name: "bookbuyer without path: any route", req: req("bookbuyer/bookbuyer", "bookstore/bookstore", "14001", "", ""), allowed: true, reason: CheckAllowed,
			target: "bookstore/bookbuyer-access-bookstore", route: "HTTPRouteGroup bookstore/bookstore-service-routes match books-bought"},
		{name: "bookthief denied", req: req("bookthief/bookthief", "bookstore/bookstore", "", "GET", "/books-bought"), reason: CheckSourceNotAllowed,
			message: "no TrafficTarget with the destination bookstore/bookstore lists the source bookthief/bookthief (bookstore/bookbuyer-access-bookstore)"},
		{name: "path not matched", req: req("bookbuyer/bookbuyer", "bookstore/bookstore", "", "GET", "/admin"), reason: CheckRouteNotMatched,
			message: "no route to bookstore/bookstore on port 14001 matches GET /admin; bookbuyer/bookbuyer may use HTTPRouteGroup bookstore/bookstore-service-routes match books-bought, HTTPRouteGroup bookstore/bookstore-service-routes match buy-a-book"},
		{name: "method not matched", req: req("bookbuyer/bookbuyer", "bookstore/bookstore", "", "POST", "/books-bought"), reason: CheckRouteNotMatched},
		{name: "path must match whole", req: req("bookbuyer/bookbuyer", "bookstore/bookstore", "", "GET", "/books-bought/2"), reason: CheckRouteNotMatched},
		{name: "permissive", mut: func(m *Mesh) { m.Permissive = true }, req: req("bookthief/bookthief", "bookstore/bookstore", "", "GET", "/admin"), allowed: true, reason: CheckPermissive,
			message: "MeshConfig osm-system/osm-mesh-config enables permissive traffic policy mode"},
		{name: "service not found", req: req("bookbuyer/bookbuyer", "bookstore/nope", "", "", ""), reason: CheckServiceNotFound, message: "Service bookstore/nope not found"},
		{name: "destination not meshed", mut: func(m *Mesh) { delete(m.Meshed, "bookstore") }, req: req("bookbuyer/bookbuyer", "bookstore/bookstore", "", "", ""), reason: CheckNotMeshed,
			message: "namespace bookstore of Service bookstore/bookstore is not in the mesh"},
		{name: "source not meshed", mut: func(m *Mesh) { delete(m.Meshed, "bookbuyer") }, req: req("bookbuyer/bookbuyer", "bookstore/bookstore", "", "", ""), reason: CheckNotMeshed,
			message: "namespace bookbuyer of the source bookbuyer/bookbuyer is not in the mesh"},
		{name: "no TrafficTarget", mut: func(m *Mesh) { m.TrafficTargets = m.TrafficTargets[1:] }, req: req("bookbuyer/bookbuyer", "bookstore/bookstore", "", "", ""), reason: CheckNoTrafficTarget,
			message: "no TrafficTarget in namespace bookstore has the destination bookstore/bookstore"},
		{name: "TrafficTarget rejected: route missing", mut: func(m *Mesh) { m.TrafficTargets[0].Rules[0].Name = "bookstore-routes" },
			req: req("bookbuyer/bookbuyer", "bookstore/bookstore", "", "GET", "/books-bought"), reason: CheckTargetRejected,
			message:  `TrafficTarget bookstore/bookbuyer-access-bookstore rejected: spec.rules[0].name: HTTPRouteGroup "bookstore-routes" not found (or rejected) in namespace "bookstore"`,
			rejected: []string{"TrafficTarget/bookbuyer-access-bookstore: RouteNotFound at spec.rules[0].name"}},
		{name: "TrafficTarget rejected: its HTTPRouteGroup rejected", mut: func(m *Mesh) { m.HTTPRouteGroups[0].Matches[1].PathRegex = "(" },
			req: req("bookbuyer/bookbuyer", "bookstore/bookstore", "", "GET", "/books-bought"), reason: CheckTargetRejected,
			rejected: []string{"TrafficTarget/bookbuyer-access-bookstore: RouteNotFound at spec.rules[0].name", "HTTPRouteGroup/bookstore-service-routes: InvalidRegex at spec.matches[1].pathRegex"}},
		{name: "TrafficTarget rejected: no such match", mut: func(m *Mesh) { m.TrafficTargets[0].Rules[0].Matches[1] = "sell" },
			req: req("bookbuyer/bookbuyer", "bookstore/bookstore", "", "", ""), reason: CheckTargetRejected,
			rejected: []string{"TrafficTarget/bookbuyer-access-bookstore: MatchNotFound at spec.rules[0].matches[1]"}},
		{name: "TCPRoute allows mysql", req: req("bookbuyer/bookbuyer", "bookstore/mysql", "", "", ""), allowed: true, reason: CheckAllowed,
			target: "bookstore/bookbuyer-access-mysql", route: "TCPRoute bookstore/mysql"},
		{name: "TCPRoute of another port", mut: func(m *Mesh) { m.TCPRoutes[0].Matches.Ports = []int32{3307} }, req: req("bookbuyer/bookbuyer", "bookstore/mysql", "", "", ""), reason: CheckRouteNotMatched},
		{name: "an HTTP rule allows a plain TCP port", mut: func(m *Mesh) { m.TrafficTargets[0].Destination.Name = "mysql"; m.TrafficTargets = m.TrafficTargets[:1] },
			req: req("bookbuyer/bookbuyer", "bookstore/mysql", "", "", ""), allowed: true, reason: CheckAllowed, target: "bookstore/bookbuyer-access-bookstore", route: "HTTPRouteGroup rule (any TCP)"},
		{name: "no pods", req: req("bookbuyer/bookbuyer", "bookstore/empty", "", "", ""), reason: CheckNoPods},
		{name: "several ports, none named", req: req("bookbuyer/bookbuyer", "bookstore/two", "", "", ""), reason: CheckPortNotFound,
			message: "Service bookstore/two has the ports 80 (http), 9000 (admin): name one (bookstore/two:PORT)"},
		{name: "no such port", req: req("bookbuyer/bookbuyer", "bookstore/two", "81", "", ""), reason: CheckPortNotFound},
		{name: "split to v1 and v2: v2 not allowed", mut: func(m *Mesh) {
			m.TrafficSplits = []*meshv1.TrafficSplit{{Meta: meta("bookstore", "split"), Service: "bookstore.bookstore.svc.cluster.local",
				Backends: []*meshv1.TrafficSplitBackend{{Service: "bookstore-v1", Weight: 50}, {Service: "bookstore-v2", Weight: 50}}}}
			m.TrafficTargets[0].Destination.Name = "bookstore-v1"
		}, req: req("bookbuyer/bookbuyer", "bookstore/bookstore", "", "GET", "/books-bought"), reason: CheckNoTrafficTarget,
			target: "bookstore/bookbuyer-access-bookstore", message: "no TrafficTarget in namespace bookstore has the destination bookstore/bookstore-v2"},
		{name: "a first-matching route of another target denies", mut: func(m *Mesh) {
			m.HTTPRouteGroups[0].Matches = append(m.HTTPRouteGroups[0].Matches, &meshv1.HTTPMatch{Name: "all-books", PathRegex: "/books.*"})
			m.TrafficTargets = append(m.TrafficTargets, &meshv1.TrafficTarget{Meta: meta("bookstore", "thief"), Destination: sa("bookstore", "bookstore"),
				Sources: []*meshv1.IdentityBindingSubject{sa("bookthief", "bookthief")},
				Rules:   []*meshv1.TrafficTargetRule{{Kind: RuleKindHTTPRouteGroup, Name: "bookstore-service-routes", Matches: []string{"all-books"}}}})
		}, req: req("bookbuyer/bookbuyer", "bookstore/bookstore", "", "GET", "/books-bought"), reason: CheckRouteNotMatched,
			message: "the first route matching GET /books-bought is HTTPRouteGroup bookstore/bookstore-service-routes match all-books, which only TrafficTarget bookstore/thief allows"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := bookstore()
			if c.mut != nil {
				c.mut(m)
			}
			d := Check(m, c.req)
			if d.Allowed != c.allowed || d.Reason != c.reason {
				t.Fatalf("allowed %v reason %s (%s), want %v %s", d.Allowed, d.Reason, d.Message, c.allowed, c.reason)
			}
			if !strings.Contains(d.Message, c.message) {
				t.Errorf("message %q lacks %q", d.Message, c.message)
			}
			if c.allowed && (d.Legs[0].TrafficTarget != c.target || d.Legs[0].Route != c.route) {
				t.Errorf("allowed by %q route %q, want %q %q", d.Legs[0].TrafficTarget, d.Legs[0].Route, c.target, c.route)
			}
			var rej []string
			for _, r := range d.Rejected {
				rej = append(rej, r.Kind+"/"+r.Name+": "+r.Reason+" at "+r.FieldPath)
				if !strings.HasPrefix(r.Message, r.Kind+" bookstore/"+r.Name+" rejected: "+r.FieldPath+": ") {
					t.Errorf("rejection message %q is not the compiler's verdict", r.Message)
				}
			}
			if strings.Join(rej, "\n") != strings.Join(c.rejected, "\n") {
				t.Errorf("rejected:\n%s\nwant:\n%s", strings.Join(rej, "\n"), strings.Join(c.rejected, "\n"))
			}
		})
	}
}

// TestCheckSplitLegs: a request to a split's apex lands on each weighted
// backend's identities; allowed only when all allow it.
func TestCheckSplitLegs(t *testing.T) {
	m := bookstore()
	m.TrafficSplits = []*meshv1.TrafficSplit{{Meta: meta("bookstore", "split"), Service: "bookstore",
		Backends: []*meshv1.TrafficSplitBackend{{Service: "bookstore-v1", Weight: 90}, {Service: "bookstore-v2", Weight: 10}, {Service: "bookstore", Weight: 0}}}}
	for _, name := range []string{"bookstore-v1", "bookstore-v2"} {
		tt := &meshv1.TrafficTarget{Meta: meta("bookstore", name), Destination: sa(name, "bookstore"), Sources: []*meshv1.IdentityBindingSubject{sa("bookbuyer", "bookbuyer")},
			Rules: []*meshv1.TrafficTargetRule{{Kind: RuleKindHTTPRouteGroup, Name: "bookstore-service-routes"}}}
		m.TrafficTargets = append(m.TrafficTargets, tt)
	}
	d := Check(m, req("bookbuyer/bookbuyer", "bookstore/bookstore", "", "GET", "/books-bought"))
	if !d.Allowed || len(d.Legs) != 2 || d.Legs[0].Identity != "bookstore/bookstore-v1" || d.Legs[1].TrafficTarget != "bookstore/bookstore-v2" {
		t.Fatalf("%+v", d)
	}
	if !strings.Contains(d.Message, "every one of the 2 destinations allows it (through TrafficSplit bookstore/split)") {
		t.Errorf("message %q", d.Message)
	}
}
