package smi

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	accessv1alpha3 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/access/v1alpha3"
	specsv1alpha4 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/specs/v1alpha4"
	splitv1alpha2 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/split/v1alpha2"
	"google.golang.org/protobuf/testing/protocmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

func meta(ns, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name), Generation: 3, ResourceVersion: "100"}
}

func wantMeta(ns, name string) *meshv1.ObjectMeta {
	return &meshv1.ObjectMeta{Namespace: ns, Name: name, Uid: "uid-" + name, Generation: 3}
}

func TestSMI(t *testing.T) {
	t.Run("traffic target", func(t *testing.T) {
		in := &accessv1alpha3.TrafficTarget{ObjectMeta: meta("bookstore", "allow"), Spec: accessv1alpha3.TrafficTargetSpec{
			Destination: accessv1alpha3.IdentityBindingSubject{Kind: "ServiceAccount", Name: "bookstore", Namespace: "bookstore"},
			Sources:     []accessv1alpha3.IdentityBindingSubject{{Kind: "ServiceAccount", Name: "bookbuyer", Namespace: "bookbuyer"}},
			Rules:       []accessv1alpha3.TrafficTargetRule{{Kind: "HTTPRouteGroup", Name: "routes", Matches: []string{"buy"}}},
		}}
		want := &meshv1.TrafficTarget{
			Meta: wantMeta("bookstore", "allow"), ApiVersion: "access.smi-spec.io/v1alpha3",
			Destination: &meshv1.IdentityBindingSubject{Kind: "ServiceAccount", Name: "bookstore", Namespace: "bookstore"},
			Sources:     []*meshv1.IdentityBindingSubject{{Kind: "ServiceAccount", Name: "bookbuyer", Namespace: "bookbuyer"}},
			Rules:       []*meshv1.TrafficTargetRule{{Kind: "HTTPRouteGroup", Name: "routes", Matches: []string{"buy"}}},
		}
		if d := cmp.Diff(want, TrafficTarget(in), protocmp.Transform()); d != "" {
			t.Errorf("TrafficTarget (-want +got):\n%s", d)
		}
	})
	t.Run("malformed traffic target still normalises", func(t *testing.T) {
		// Kinds OSM does not support (UDPRoute passes the CRD's enum, a
		// made-up kind could come from an older CRD) are kept as written for
		// the compiler to reject.
		in := &accessv1alpha3.TrafficTarget{ObjectMeta: meta("bookstore", "odd"), Spec: accessv1alpha3.TrafficTargetSpec{
			Destination: accessv1alpha3.IdentityBindingSubject{Kind: "Group", Name: "admins"},
			Rules: []accessv1alpha3.TrafficTargetRule{
				{Kind: "UDPRoute", Name: "dns"},
				{Kind: "GRPCRoute", Name: "nope", Matches: []string{"x"}},
			},
		}}
		got := TrafficTarget(in)
		want := []*meshv1.TrafficTargetRule{{Kind: "UDPRoute", Name: "dns"}, {Kind: "GRPCRoute", Name: "nope", Matches: []string{"x"}}}
		if d := cmp.Diff(want, got.Rules, protocmp.Transform()); d != "" {
			t.Errorf("rules (-want +got):\n%s", d)
		}
		if got.Destination.GetKind() != "Group" {
			t.Errorf("destination kind = %q, want Group kept", got.Destination.GetKind())
		}
	})
	t.Run("http route group", func(t *testing.T) {
		in := &specsv1alpha4.HTTPRouteGroup{ObjectMeta: meta("bookstore", "routes"), Spec: specsv1alpha4.HTTPRouteGroupSpec{
			Matches: []specsv1alpha4.HTTPMatch{
				{Name: "buy", Methods: []string{"GET", "BREW"}, PathRegex: "/buy(", Headers: map[string]string{"user-agent": ".*curl.*"}},
				{Name: "all"},
			},
		}}
		want := &meshv1.HTTPRouteGroup{Meta: wantMeta("bookstore", "routes"), ApiVersion: "specs.smi-spec.io/v1alpha4",
			Matches: []*meshv1.HTTPMatch{
				{Name: "buy", Methods: []string{"GET", "BREW"}, PathRegex: "/buy(", Headers: map[string]string{"user-agent": ".*curl.*"}},
				{Name: "all"},
			}}
		if d := cmp.Diff(want, HTTPRouteGroup(in), protocmp.Transform()); d != "" {
			t.Errorf("HTTPRouteGroup (-want +got):\n%s", d)
		}
	})
	t.Run("tcp route", func(t *testing.T) {
		in := &specsv1alpha4.TCPRoute{ObjectMeta: meta("db", "mysql"), Spec: specsv1alpha4.TCPRouteSpec{
			Matches: specsv1alpha4.TCPMatch{Name: "mysql", Ports: []int{3306, 70000, 1 << 40}}}}
		want := &meshv1.TCPRoute{Meta: wantMeta("db", "mysql"), ApiVersion: "specs.smi-spec.io/v1alpha4",
			Matches: &meshv1.TCPMatch{Name: "mysql", Ports: []int32{3306, 70000, 2147483647}}}
		if d := cmp.Diff(want, TCPRoute(in), protocmp.Transform()); d != "" {
			t.Errorf("TCPRoute (-want +got):\n%s", d)
		}
		empty := TCPRoute(&specsv1alpha4.TCPRoute{ObjectMeta: meta("db", "any")})
		if empty.Matches != nil {
			t.Errorf("TCPRoute without matches: matches = %v, want unset", empty.Matches)
		}
	})
	t.Run("traffic split", func(t *testing.T) {
		in := &splitv1alpha2.TrafficSplit{ObjectMeta: meta("bookstore", "split"), Spec: splitv1alpha2.TrafficSplitSpec{
			Service:  "bookstore.bookstore.svc.cluster.local",
			Backends: []splitv1alpha2.TrafficSplitBackend{{Service: "bookstore-v1", Weight: 90}, {Service: "bookstore-v2", Weight: -10}},
		}}
		want := &meshv1.TrafficSplit{Meta: wantMeta("bookstore", "split"), ApiVersion: "split.smi-spec.io/v1alpha2",
			Service:  "bookstore.bookstore.svc.cluster.local",
			Backends: []*meshv1.TrafficSplitBackend{{Service: "bookstore-v1", Weight: 90}, {Service: "bookstore-v2", Weight: -10}}}
		if d := cmp.Diff(want, TrafficSplit(in), protocmp.Transform()); d != "" {
			t.Errorf("TrafficSplit (-want +got):\n%s", d)
		}
	})
}

// TestDecode: the JSON an AdmissionRequest carries reads into what the
// typed object converts to, the headers' list of single-entry maps
// included, and a header entry of two keys (which the SDK's informers
// cannot read either) is an error.
func TestDecode(t *testing.T) {
	tt, err := DecodeTrafficTarget([]byte(`{"apiVersion":"access.smi-spec.io/v1alpha3","kind":"TrafficTarget",
		"metadata":{"namespace":"bookstore","name":"allow","uid":"uid-allow","generation":3},
		"spec":{"destination":{"kind":"ServiceAccount","name":"bookstore","namespace":"bookstore"},
		"sources":[{"kind":"ServiceAccount","name":"bookbuyer","namespace":"bookbuyer"}],
		"rules":[{"kind":"HTTPRouteGroup","name":"routes","matches":["buy"]}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := &meshv1.TrafficTarget{
		Meta: wantMeta("bookstore", "allow"), ApiVersion: "access.smi-spec.io/v1alpha3",
		Destination: &meshv1.IdentityBindingSubject{Kind: "ServiceAccount", Name: "bookstore", Namespace: "bookstore"},
		Sources:     []*meshv1.IdentityBindingSubject{{Kind: "ServiceAccount", Name: "bookbuyer", Namespace: "bookbuyer"}},
		Rules:       []*meshv1.TrafficTargetRule{{Kind: "HTTPRouteGroup", Name: "routes", Matches: []string{"buy"}}},
	}
	if d := cmp.Diff(want, tt, protocmp.Transform()); d != "" {
		t.Errorf("DecodeTrafficTarget (-want +got):\n%s", d)
	}
	g, err := DecodeHTTPRouteGroup([]byte(`{"spec":{"matches":[{"name":"buy","methods":["GET"],"pathRegex":"/buy",
		"headers":[{"user-agent":".*curl.*"},{"x-tenant":"a"}]}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(map[string]string{"user-agent": ".*curl.*", "x-tenant": "a"}, g.GetMatches()[0].GetHeaders()); d != "" {
		t.Errorf("headers (-want +got):\n%s", d)
	}
	if _, err := DecodeHTTPRouteGroup([]byte(`{"spec":{"matches":[{"name":"buy","headers":[{"a":"1","b":"2"}]}]}}`)); err == nil {
		t.Error("a header entry of two keys decoded; want an error")
	}
	r, err := DecodeTCPRoute([]byte(`{"spec":{"matches":{"name":"mysql","ports":[3306,1099511627776]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]int32{3306, 2147483647}, r.GetMatches().GetPorts()); d != "" {
		t.Errorf("ports (-want +got):\n%s", d)
	}
	s, err := DecodeTrafficSplit([]byte(`{"spec":{"service":"bookstore","backends":[{"service":"bookstore-v1","weight":-5}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := s.GetBackends()[0].GetWeight(); got != -5 {
		t.Errorf("weight = %d, want -5 kept for the rules to reject", got)
	}
	if _, err := DecodeTrafficSplit([]byte(`{"spec":{"backends":"v1"}}`)); err == nil {
		t.Error("backends of the wrong type decoded; want an error")
	}
}
