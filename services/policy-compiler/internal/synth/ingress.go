package synth

import (
	"fmt"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// IngressBackend is an IngressBackend of ns with spec (its metadata and
// apiVersion are set here).
func IngressBackend(ns, name string, spec *meshv1.IngressBackend) Object {
	spec.Meta = meta(ns, name)
	spec.ApiVersion = "policy.openservicemesh.io/v1alpha1"
	return Object{layout.KindIngressBackend, ns, name, spec}
}

// BookstoreIngress is an ingress controller for the Bookstore demo (the
// namespace ingress-nginx in the mesh, its pod without a sidecar, the
// Service ingress-nginx-controller with one endpoint) and two
// IngressBackends: plaintext http to bookstore-v1 from the controller's
// endpoints and 192.0.2.0/24, only the bookstore-service-routes matches;
// https to bookstore-v2 by SNI with the client certificate validated and
// its SAN the controller's principal.
func BookstoreIngress() []Object {
	web := Port{Number: 80, Name: "http", AppProtocol: "http"}
	return []Object{
		Namespace("ingress-nginx"),
		Service("ingress-nginx", "ingress-nginx-controller", "10.96.50.1", map[string]string{"app": "ingress-nginx"}, web),
		EndpointSlice("ingress-nginx", "ingress-nginx-controller", "ingress-nginx-controller-abcde", []Port{web},
			Endpoint{"ingress-nginx-controller-7d9f8b6c5-qwert", "10.244.9.10"}),
		IngressBackend("bookstore", "bookstore-v1", &meshv1.IngressBackend{
			Backends: []*meshv1.IngressBackendBackend{{Name: "bookstore-v1", Port: &meshv1.IngressBackendPort{Number: 14001, Protocol: "http"}}},
			Sources: []*meshv1.IngressSource{
				{Kind: "Service", Name: "ingress-nginx-controller", Namespace: "ingress-nginx"},
				{Kind: "IPRange", Name: "192.0.2.0/24"},
			},
			Matches: []*meshv1.TypedLocalObjectReference{{ApiGroup: "specs.smi-spec.io/v1alpha4", Kind: "HTTPRouteGroup", Name: "bookstore-service-routes"}},
		}),
		IngressBackend("bookstore", "bookstore-v2", &meshv1.IngressBackend{
			Backends: []*meshv1.IngressBackendBackend{{Name: "bookstore-v2", Port: &meshv1.IngressBackendPort{Number: 14001, Protocol: "https"},
				Tls: &meshv1.IngressBackendTLS{SniHosts: []string{"bookstore-v2.bookstore.svc.cluster.local"}}}},
			Sources: []*meshv1.IngressSource{
				{Kind: "Service", Name: "ingress-nginx-controller", Namespace: "ingress-nginx"},
				{Kind: "AuthenticatedPrincipal", Name: "ingress-nginx.ingress-nginx.cluster.local"},
			},
		}),
	}
}

// IngressController is an ingress controller in the mesh's namespace
// ingress-nginx (a Service ingress-nginx-controller whose slice lists the
// given addresses), the source of PaperIngress's IngressBackends.
func IngressController(ips ...string) []Object {
	web := Port{Number: 80, Name: "http", AppProtocol: "http"}
	var eps []Endpoint
	for i, ip := range ips {
		eps = append(eps, Endpoint{Pod: fmt.Sprintf("ingress-nginx-controller-%d", i), IP: ip})
	}
	return []Object{
		Namespace("ingress-nginx"),
		Service("ingress-nginx", "ingress-nginx-controller", "10.96.50.1", map[string]string{"app": "ingress-nginx"}, web),
		EndpointSlice("ingress-nginx", "ingress-nginx-controller", "ingress-nginx-controller-abcde", []Port{web}, eps...),
	}
}

// IngressBackends are n IngressBackends of c, one on each of its first n
// http services (named <service>-ingress), admitting the IngressController
// and 192.0.2.0/24 over http.
func (c Config) IngressBackends(n int) []Object {
	var out []Object
	for i := 0; len(out) < n && i < c.Services; i++ {
		p := SyntheticPort(i)
		if p.AppProtocol != "http" {
			continue
		}
		ns, name := c.SvcNamespace(i), SvcName(i)
		out = append(out, IngressBackend(ns, name+"-ingress", &meshv1.IngressBackend{
			Backends: []*meshv1.IngressBackendBackend{{Name: name, Port: &meshv1.IngressBackendPort{Number: p.Number, Protocol: "http"}}},
			Sources: []*meshv1.IngressSource{
				{Kind: "Service", Name: "ingress-nginx-controller", Namespace: "ingress-nginx"},
				{Kind: "IPRange", Name: "192.0.2.0/24"},
			},
		}))
	}
	return out
}
