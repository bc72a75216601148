package compile

import (
	"fmt"
	"math/rand"
	"slices"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

// withIngress is the SMI bookstore with synth.BookstoreIngress.
func withIngress(t *testing.T) (*Engine, *Delta) {
	t.Helper()
	e := newEngine()
	d := load(t, e, append(synth.Bookstore(false), synth.BookstoreIngress()...))
	return e, d
}

// TestIngressGolden: the Envoy resources of the bookstore with the
// IngressBackends of synth.BookstoreIngress; every resource passes
// ValidateAll and both IngressBackends are accepted.
func TestIngressGolden(t *testing.T) {
	e, d := withIngress(t)
	for _, st := range d.Statuses {
		if st.GetCondition() != meshv1.PolicyCondition_POLICY_CONDITION_ACCEPTED {
			t.Errorf("%s", st.GetMessage())
		}
	}
	validateAll(t, e)
	egressGolden(t, "ingress_smi", dump(t, e))
}

// ingressChain returns the filter chain named name of the inbound
// listener of ns/sa, or nil.
func ingressChainOf(t *testing.T, e *Engine, ns, sa, name string) *listenerv3.FilterChain {
	t.Helper()
	l := decode(t, e, layout.TypeListener, InboundListenerName(id(ns, sa)), &listenerv3.Listener{})
	for _, fc := range l.GetFilterChains() {
		if fc.GetName() == name {
			return fc
		}
	}
	return nil
}

func chainRanges(fc *listenerv3.FilterChain) []string {
	var out []string
	for _, r := range fc.GetFilterChainMatch().GetSourcePrefixRanges() {
		out = append(out, fmt.Sprintf("%s/%d", r.GetAddressPrefix(), r.GetPrefixLen().GetValue()))
	}
	return out
}

// TestIngressEnvoyMapping reads the IngressBackends back from the inbound
// listeners: http from the controller's endpoint and the range, by source
// address (chain match and RBAC), restricted to the HTTPRouteGroup's
// matches; https by SNI, TLS terminated with the client certificate
// required and validated against the trust bundle, RBAC on address and
// SAN. Without an IngressBackend an identity's listener has no chain but
// the mesh's TLS ones.
func TestIngressEnvoyMapping(t *testing.T) {
	e, _ := withIngress(t)
	h := ingressChainOf(t, e, "bookstore", "bookstore-v1", "ingress:bookstore/bookstore-v1|14001")
	if h == nil {
		t.Fatal("bookstore-v1 has no ingress chain")
	}
	if m := h.GetFilterChainMatch(); m.GetTransportProtocol() != "raw_buffer" || m.GetDestinationPort().GetValue() != 14001 ||
		!slices.Equal(chainRanges(h), []string{"10.244.9.10/32", "192.0.2.0/24"}) {
		t.Errorf("http chain match = %v", m)
	}
	if h.GetTransportSocket() != nil {
		t.Error("the http chain terminates TLS")
	}
	var rbac netrbacv3.RBAC
	if err := h.GetFilters()[0].GetTypedConfig().UnmarshalTo(&rbac); err != nil {
		t.Fatalf("first filter %s: %v", h.GetFilters()[0].GetName(), err)
	}
	if ids := rbac.GetRules().GetPolicies()["ingress-sources"].GetPrincipals()[0].GetOrIds().GetIds(); len(ids) != 2 ||
		ids[0].GetDirectRemoteIp().GetAddressPrefix() != "10.244.9.10" {
		t.Errorf("http rbac = %v", rbac.GetRules())
	}
	var hcm hcmv3.HttpConnectionManager
	if err := h.GetFilters()[1].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	routes := hcm.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()
	if len(routes) != 2 || routes[0].GetRoute().GetCluster() != "bookstore/bookstore-v1|14001|local" {
		t.Errorf("http routes = %v", routes)
	}

	s := ingressChainOf(t, e, "bookstore", "bookstore-v2", "ingress:bookstore/bookstore-v2|14001")
	if s == nil {
		t.Fatal("bookstore-v2 has no ingress chain")
	}
	if m := s.GetFilterChainMatch(); m.GetTransportProtocol() != "tls" || !slices.Equal(m.GetServerNames(), []string{"bookstore-v2.bookstore.svc.cluster.local"}) ||
		!slices.Equal(chainRanges(s), []string{"10.244.9.10/32"}) {
		t.Errorf("https chain match = %v", m)
	}
	var tls tlsv3.DownstreamTlsContext
	if err := s.GetTransportSocket().GetTypedConfig().UnmarshalTo(&tls); err != nil {
		t.Fatal(err)
	}
	if !tls.GetRequireClientCertificate().GetValue() || tls.GetCommonTlsContext().GetValidationContextSdsSecretConfig().GetName() != layout.SecretRootCert {
		t.Errorf("https TLS = %v", &tls)
	}
	rbac.Reset()
	if err := s.GetFilters()[0].GetTypedConfig().UnmarshalTo(&rbac); err != nil {
		t.Fatal(err)
	}
	and := rbac.GetRules().GetPolicies()["ingress-sources"].GetPrincipals()[0].GetAndIds().GetIds()
	if len(and) != 2 || and[1].GetOrIds().GetIds()[0].GetAuthenticated().GetPrincipalName().GetExact() != "ingress-nginx.ingress-nginx.cluster.local" {
		t.Errorf("https rbac = %v", rbac.GetRules())
	}

	// Without an IngressBackend: only the mesh's chains.
	for _, fc := range decode(t, e, layout.TypeListener, InboundListenerName(id("bookwarehouse", "bookwarehouse")), &listenerv3.Listener{}).GetFilterChains() {
		if fc.GetFilterChainMatch().GetTransportProtocol() != "tls" || len(fc.GetFilterChainMatch().GetSourcePrefixRanges()) > 0 {
			t.Errorf("bookwarehouse's inbound has chain %s", fc.GetName())
		}
	}
}

func ingressWith(i int, mut func(*meshv1.IngressBackend)) synth.Object {
	var objs []synth.Object
	for _, o := range synth.BookstoreIngress() {
		if o.Kind == layout.KindIngressBackend {
			objs = append(objs, o)
		}
	}
	o := objs[i]
	o.Msg = proto.Clone(o.Msg)
	mut(o.Msg.(*meshv1.IngressBackend))
	return o
}

// TestIngressIncremental: a change of the controller's endpoints rewrites
// its own endpoints and the inbound listeners of the two backends only; an IngressBackend edit
// its backend's; a rejected edit names the field and keeps the last good
// chain; a deletion removes the chain. Each step equals a cold compile.
func TestIngressIncremental(t *testing.T) {
	e, _ := withIngress(t)
	v1, v2 := "listener "+InboundListenerName(id("bookstore", "bookstore-v1")), "listener "+InboundListenerName(id("bookstore", "bookstore-v2"))
	web := synth.Port{Number: 80, Name: "http", AppProtocol: "http"}
	d := apply(t, e, synth.EndpointSlice("ingress-nginx", "ingress-nginx-controller", "ingress-nginx-controller-abcde", []synth.Port{web},
		synth.Endpoint{Pod: "ingress-nginx-controller-7d9f8b6c5-qwert", IP: "10.244.9.10"}, synth.Endpoint{Pod: "ingress-nginx-controller-7d9f8b6c5-yuiop", IP: "10.244.9.11"}))
	if got := keys(d); !slices.Equal(got, []string{"endpoint ingress-nginx/ingress-nginx-controller|80", v1, v2}) {
		t.Errorf("a controller endpoint change wrote %v (want its own endpoints and the two backends' inbound listeners)", got)
	}
	if got := chainRanges(ingressChainOf(t, e, "bookstore", "bookstore-v2", "ingress:bookstore/bookstore-v2|14001")); !slices.Equal(got, []string{"10.244.9.10/32", "10.244.9.11/32"}) {
		t.Errorf("https ranges after the endpoint change = %v", got)
	}
	equalsCold(t, e)

	d = apply(t, e, ingressWith(0, func(ib *meshv1.IngressBackend) { ib.Sources[1].Name = "198.51.100.0/24" }))
	if got := keys(d); !slices.Equal(got, []string{v1}) {
		t.Errorf("an IngressBackend edit wrote %v", got)
	}
	equalsCold(t, e)

	d = apply(t, e, ingressWith(0, func(ib *meshv1.IngressBackend) { ib.Sources[1].Name = "198.51.100.0" }))
	if got := keys(d); len(got) != 0 {
		t.Errorf("a rejected edit wrote %v", got)
	}
	if len(d.Statuses) != 1 || d.Statuses[0].GetFieldPath() != "spec.sources[1].name" ||
		d.Statuses[0].GetCondition() == meshv1.PolicyCondition_POLICY_CONDITION_ACCEPTED {
		t.Errorf("statuses of the rejected edit = %v", d.Statuses)
	}
	if got := chainRanges(ingressChainOf(t, e, "bookstore", "bookstore-v1", "ingress:bookstore/bookstore-v1|14001")); !slices.Contains(got, "198.51.100.0/24") {
		t.Errorf("the last good IngressBackend is not kept: ranges %v", got)
	}

	d = remove(t, e, layout.KindIngressBackend, "bookstore", "bookstore-v1")
	if got := keys(d); !slices.Equal(got, []string{v1}) {
		t.Errorf("a deletion wrote %v", got)
	}
	if ingressChainOf(t, e, "bookstore", "bookstore-v1", "ingress:bookstore/bookstore-v1|14001") != nil {
		t.Error("the deleted IngressBackend's chain stays")
	}
	equalsCold(t, e)
}

// mutateIngress changes an IngressBackend in ways that keep it valid: a
// source range added, its matches added or dropped, its backend port moved
// off and back onto the Service's target port, http and https swapped
// (when no principal needs https).
func mutateIngress(rng *rand.Rand, v *meshv1.IngressBackend) {
	principal := false
	for _, s := range v.Sources {
		principal = principal || s.GetKind() == "AuthenticatedPrincipal"
	}
	switch rng.Intn(4) {
	case 0:
		v.Sources = append(v.Sources, &meshv1.IngressSource{Kind: "IPRange", Name: fmt.Sprintf("203.0.%d.0/24", rng.Intn(250))})
	case 1:
		if len(v.Matches) > 0 {
			v.Matches = nil
		} else {
			v.Matches = []*meshv1.TypedLocalObjectReference{{ApiGroup: "specs.smi-spec.io/v1alpha4", Kind: "HTTPRouteGroup", Name: "bookstore-service-routes"}}
		}
	case 2:
		v.Backends[0].Port.Number = map[int32]int32{14001: 14002, 14002: 14001}[v.Backends[0].Port.Number]
	default:
		if !principal {
			v.Backends[0].Port.Protocol = map[string]string{"http": "https", "https": "http"}[v.Backends[0].Port.Protocol]
			v.Backends[0].Tls = nil
		}
	}
}

// TestIngressIncrementalEqualsCold: random edits, deletions and returns of
// the IngressBackends, the controller's Service, slice and namespace, the
// backends' Services, pods and slices and the HTTPRouteGroup they name;
// after each, the incremental engine holds what a cold compile of the same
// objects gives.
func TestIngressIncrementalEqualsCold(t *testing.T) {
	for seed := int64(1); seed <= 6; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewSource(seed))
			objs := append(synth.Bookstore(false), synth.BookstoreIngress()...)
			var focus []int
			for i, o := range objs {
				if o.Kind == layout.KindIngressBackend || o.Namespace == "ingress-nginx" || o.Name == "bookstore-service-routes" ||
					strings.HasPrefix(o.Name, "bookstore-v1") || strings.HasPrefix(o.Name, "bookstore-v2") {
					focus = append(focus, i)
				}
			}
			present := make([]bool, len(objs))
			for i := range present {
				present[i] = true
			}
			e := newEngine()
			load(t, e, objs)
			compared := 0
			for step := 0; step < 60; step++ {
				i := focus[rng.Intn(len(focus))]
				o := objs[i]
				switch {
				case !present[i]:
					present[i] = true
					apply(t, e, o)
				case rng.Intn(5) == 0:
					present[i] = false
					remove(t, e, o.Kind, o.Namespace, o.Name)
				default:
					objs[i] = mutate(rng, o)
					apply(t, e, objs[i])
				}
				var live []synth.Object
				for j, o := range objs {
					if present[j] {
						live = append(live, o)
					}
				}
				// A policy rejected (an HTTPRouteGroup deleted under its
				// users) keeps its last good version: equalsColdOf seeds the
				// cold engine with it.
				if len(e.Kept()) > 0 {
					compared++
				}
				equalsColdOf(t, e, live)
				if t.Failed() {
					t.Fatalf("step %d: %s", step, objs[i].Key())
				}
			}
			t.Logf("%d of 60 steps compared with kept versions", compared)
		})
	}
}

// TestIngressSkipClientCertValidation: an https backend with
// tls.skipClientCertValidation terminates TLS without asking for a client
// certificate; its RBAC admits by source address alone.
func TestIngressSkipClientCertValidation(t *testing.T) {
	e, _ := withIngress(t)
	apply(t, e, ingressWith(1, func(ib *meshv1.IngressBackend) {
		ib.Backends[0].Tls.SkipClientCertValidation = true
		ib.Sources = ib.Sources[:1]
	}))
	validateAll(t, e)
	s := ingressChainOf(t, e, "bookstore", "bookstore-v2", "ingress:bookstore/bookstore-v2|14001")
	if s == nil {
		t.Fatal("bookstore-v2 has no ingress chain")
	}
	var tls tlsv3.DownstreamTlsContext
	if err := s.GetTransportSocket().GetTypedConfig().UnmarshalTo(&tls); err != nil {
		t.Fatal(err)
	}
	if tls.GetRequireClientCertificate().GetValue() || tls.GetCommonTlsContext().GetValidationContextType() != nil ||
		tls.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs()[0].GetName() != layout.SecretServiceCert {
		t.Errorf("https TLS with skipClientCertValidation = %v", &tls)
	}
	var rbac netrbacv3.RBAC
	if err := s.GetFilters()[0].GetTypedConfig().UnmarshalTo(&rbac); err != nil {
		t.Fatal(err)
	}
	if ids := rbac.GetRules().GetPolicies()["ingress-sources"].GetPrincipals()[0].GetOrIds().GetIds(); len(ids) != 1 ||
		ids[0].GetDirectRemoteIp().GetAddressPrefix() != "10.244.9.10" {
		t.Errorf("https rbac with skipClientCertValidation = %v", rbac.GetRules())
	}
	equalsCold(t, e)
}
