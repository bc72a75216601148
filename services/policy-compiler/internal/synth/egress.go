package synth

import (
	"fmt"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// EgressAPIVersion is the apiVersion of generated Egress objects.
const EgressAPIVersion = "policy.openservicemesh.io/v1alpha1"

// EgressPort is a port of an Egress: number and protocol.
func EgressPort(number int32, protocol string) *meshv1.EgressPort {
	return &meshv1.EgressPort{Number: number, Protocol: protocol}
}

// EgressSource is a ServiceAccount source of an Egress.
func EgressSource(ns, name string) *meshv1.EgressSource {
	return &meshv1.EgressSource{Kind: "ServiceAccount", Namespace: ns, Name: name}
}

// EgressSpec is the spec of an Egress: sources, hosts, CIDRs, ports and the
// HTTPRouteGroups of its matches.
type EgressSpec struct {
	// Sources, Hosts, IPAddresses and Ports as in the CRD.
	Sources     []*meshv1.EgressSource
	Hosts       []string
	IPAddresses []string
	Ports       []*meshv1.EgressPort
	// RouteGroups name HTTPRouteGroups of the Egress's namespace.
	RouteGroups []string
}

// Egress is an Egress object.
func Egress(ns, name string, spec EgressSpec) Object {
	e := &meshv1.Egress{Meta: meta(ns, name), ApiVersion: EgressAPIVersion, Sources: spec.Sources,
		Hosts: spec.Hosts, IpAddresses: spec.IPAddresses, Ports: spec.Ports}
	for _, g := range spec.RouteGroups {
		e.Matches = append(e.Matches, &meshv1.TypedLocalObjectReference{ApiGroup: "specs.smi-spec.io/v1alpha4", Kind: "HTTPRouteGroup", Name: g})
	}
	return Object{layout.KindEgress, ns, name, e}
}

// ExternalNameService is a Service of type ExternalName for host.
func ExternalNameService(ns, name, host string) Object {
	return Object{layout.KindService, ns, name, &meshv1.Service{Meta: meta(ns, name), Type: "ExternalName", ExternalName: host}}
}

// PassthroughMeshConfig is the MeshConfig with enableEgress (global
// passthrough) set.
func PassthroughMeshConfig(permissive bool) Object {
	o := MeshConfig(permissive)
	o.Msg.(*meshv1.MeshConfig).Traffic.EnableEgress = true
	return o
}

// BookstoreEgress is the bookstore demo with egress: bookbuyer may GET
// /books/... from api.books.example (http, port 80, through an
// HTTPRouteGroup), which the ExternalName Service bookbuyer/books-api also
// names; bookstore-v1 and v2 may reach *.github.com and api.github.com
// over https and the 10.20.0.0/16 database range over tcp 5432.
func BookstoreEgress() []Object {
	return append(Bookstore(false),
		HTTPRouteGroup("bookbuyer", "books-api-routes",
			&meshv1.HTTPMatch{Name: "read", PathRegex: "/books/.*", Methods: []string{"GET"}}),
		ExternalNameService("bookbuyer", "books-api", "api.books.example"),
		Egress("bookbuyer", "books-api", EgressSpec{
			Sources:     []*meshv1.EgressSource{EgressSource("bookbuyer", "bookbuyer")},
			Hosts:       []string{"api.books.example"},
			Ports:       []*meshv1.EgressPort{EgressPort(80, "http")},
			RouteGroups: []string{"books-api-routes"},
		}),
		Egress("bookstore", "github", EgressSpec{
			Sources: []*meshv1.EgressSource{EgressSource("bookstore", "bookstore-v1"), EgressSource("bookstore", "bookstore-v2")},
			Hosts:   []string{"*.github.com", "api.github.com"},
			Ports:   []*meshv1.EgressPort{EgressPort(443, "https")},
		}),
		Egress("bookstore", "database", EgressSpec{
			Sources:     []*meshv1.EgressSource{EgressSource("bookstore", "bookstore-v1"), EgressSource("bookstore", "bookstore-v2")},
			IPAddresses: []string{"10.20.0.0/16"},
			Ports:       []*meshv1.EgressPort{EgressPort(5432, "tcp")},
		}),
	)
}

// egresses generates c.Egresses Egress objects: Egress j in the namespace
// of service j, with that service's identity and one more as sources, of
// one of three shapes in turn: http to a host on port 80 (every tenth
// through an HTTPRouteGroup of the namespace, when it has one), https to a
// host and its /24 on port 443, and tcp to a /24 on port 5432.
func (c Config) egresses(groupsIn map[string][]string) []Object {
	var out []Object
	for j := 0; j < c.Egresses && c.Services > 0; j++ {
		svc := j % c.Services
		other := (j + c.Services/2 + 1) % c.Services
		ns := c.SvcNamespace(svc)
		spec := EgressSpec{Sources: []*meshv1.EgressSource{
			EgressSource(ns, SvcName(svc)), EgressSource(c.SvcNamespace(other), SvcName(other)),
		}}
		host := fmt.Sprintf("api-%05d.example.com", j)
		cidr := fmt.Sprintf("198.%d.%d.0/24", 18+(j>>8)&1, j&255)
		switch j % 3 {
		case 0:
			spec.Hosts = []string{host}
			spec.Ports = []*meshv1.EgressPort{EgressPort(80, "http")}
			if gs := groupsIn[ns]; j%10 == 0 && len(gs) > 0 {
				spec.RouteGroups = []string{gs[j%len(gs)]}
			}
		case 1:
			spec.Hosts = []string{host}
			spec.IPAddresses = []string{cidr}
			spec.Ports = []*meshv1.EgressPort{EgressPort(443, "https")}
		default:
			spec.IPAddresses = []string{cidr}
			spec.Ports = []*meshv1.EgressPort{EgressPort(5432, "tcp")}
		}
		out = append(out, Egress(ns, fmt.Sprintf("egress-%05d", j), spec))
	}
	return out
}
