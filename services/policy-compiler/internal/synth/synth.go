// Package synth generates observed mesh state for tests and benchmarks: the
// canonical bookstore demo, and synthetic meshes of any size with the shape
// of a real one (services backed by pods, TrafficTargets with HTTP routes,
// TrafficSplits). The scale harness reuses it.
package synth

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// Mesh identification used by every generated object.
const (
	MeshName            = "osm"
	MeshConfigNamespace = "osm-system"
	MeshConfigName      = "osm-mesh-config"
)

// Object is one observed object and where it lives in KV mesh-observed.
type Object struct {
	// Kind (a layout kind), Namespace and Name place it in the bucket.
	Kind, Namespace, Name string
	// Msg is the observed message.
	Msg proto.Message
}

// Key is the object's key in KV mesh-observed.
func (o Object) Key() string {
	if o.Kind == layout.KindNamespace {
		return layout.NamespaceKey(o.Name)
	}
	return layout.ObservedKey(o.Kind, o.Namespace, o.Name)
}

// SyncMarker is a SYNCED marker for epoch.
func SyncMarker(epoch uint64) *meshv1.SyncMarker {
	return &meshv1.SyncMarker{Epoch: epoch, State: meshv1.SyncState_SYNC_STATE_SYNCED, WatcherId: "synth"}
}

func meta(ns, name string) *meshv1.ObjectMeta {
	return &meshv1.ObjectMeta{Namespace: ns, Name: name, Uid: "uid-" + ns + "-" + name, Generation: 1}
}

// Namespace is a meshed namespace.
func Namespace(name string) Object {
	return Object{layout.KindNamespace, "", name, &meshv1.Namespace{Meta: &meshv1.ObjectMeta{Name: name}, MonitoredBy: MeshName}}
}

// MeshConfig is the mesh's MeshConfig.
func MeshConfig(permissive bool) Object {
	return Object{layout.KindMeshConfig, MeshConfigNamespace, MeshConfigName, &meshv1.MeshConfig{
		Meta:       meta(MeshConfigNamespace, MeshConfigName),
		ApiVersion: "config.openservicemesh.io/v1alpha2",
		Traffic:    &meshv1.TrafficSpec{EnablePermissiveTrafficPolicyMode: permissive},
	}}
}

// Port is one service port: number, name and appProtocol.
type Port struct {
	// Number is the port number.
	Number int32
	// Name is the port name, shared by the Service and its slices.
	Name string
	// AppProtocol is "http", "grpc", "tcp" or empty.
	AppProtocol string
}

// Service is a ClusterIP Service selecting labels.
func Service(ns, name, clusterIP string, selector map[string]string, ports ...Port) Object {
	s := &meshv1.Service{Meta: meta(ns, name), Selector: selector, ClusterIps: []string{clusterIP}, Type: "ClusterIP"}
	for _, p := range ports {
		s.Ports = append(s.Ports, &meshv1.ServicePort{Name: p.Name, Port: p.Number, Protocol: "TCP", AppProtocol: p.AppProtocol})
	}
	return Object{layout.KindService, ns, name, s}
}

// Pod is a running, ready pod.
func Pod(ns, name, serviceAccount, ip string, labels map[string]string) Object {
	return Object{layout.KindPod, ns, name, &meshv1.Pod{
		Meta: meta(ns, name), Labels: labels, ServiceAccount: serviceAccount, PodIps: []string{ip},
		ProxyUuid: "uuid-" + ns + "-" + name, Phase: meshv1.PodPhase_POD_PHASE_RUNNING, Ready: true,
	}}
}

// Endpoint is one ready endpoint of a slice: a pod and its IP.
type Endpoint struct {
	// Pod is the pod behind the endpoint; IP its address.
	Pod, IP string
}

// EndpointSlice is the slice of a service, with its ports named like the
// service's and every endpoint ready.
func EndpointSlice(ns, service, name string, ports []Port, eps ...Endpoint) Object {
	s := &meshv1.EndpointSlice{Meta: meta(ns, name), Service: &meshv1.NamespacedName{Namespace: ns, Name: service}, AddressType: meshv1.AddressType_ADDRESS_TYPE_IPV4}
	for _, p := range ports {
		n := p.Number
		s.Ports = append(s.Ports, &meshv1.EndpointPort{Name: p.Name, Port: &n, Protocol: "TCP", AppProtocol: p.AppProtocol})
	}
	for _, ep := range eps {
		s.Endpoints = append(s.Endpoints, &meshv1.Endpoint{
			Addresses:  []string{ep.IP},
			Conditions: &meshv1.EndpointConditions{Ready: true, Serving: true},
			TargetRef:  &meshv1.ObjectRef{Kind: "Pod", Namespace: ns, Name: ep.Pod},
		})
	}
	return Object{layout.KindEndpointSlice, ns, name, s}
}

// ServiceAccount is an observed ServiceAccount.
func ServiceAccount(ns, name string) Object {
	return Object{layout.KindServiceAccount, ns, name, &meshv1.ServiceAccount{Meta: meta(ns, name)}}
}

// Subject is a ServiceAccount subject of a TrafficTarget.
func Subject(ns, name string) *meshv1.IdentityBindingSubject {
	return &meshv1.IdentityBindingSubject{Kind: "ServiceAccount", Namespace: ns, Name: name}
}

// Rule is a TrafficTarget rule.
func Rule(kind, name string, matches ...string) *meshv1.TrafficTargetRule {
	return &meshv1.TrafficTargetRule{Kind: kind, Name: name, Matches: matches}
}

// TrafficTarget allows sources to reach the ServiceAccount dest of ns.
func TrafficTarget(ns, name, dest string, rules []*meshv1.TrafficTargetRule, sources ...*meshv1.IdentityBindingSubject) Object {
	return Object{layout.KindTrafficTarget, ns, name, &meshv1.TrafficTarget{
		Meta: meta(ns, name), ApiVersion: "access.smi-spec.io/v1alpha3",
		Destination: Subject(ns, dest), Sources: sources, Rules: rules,
	}}
}

// HTTPRouteGroup is a group of HTTP matches.
func HTTPRouteGroup(ns, name string, matches ...*meshv1.HTTPMatch) Object {
	return Object{layout.KindHTTPRouteGroup, ns, name, &meshv1.HTTPRouteGroup{Meta: meta(ns, name), ApiVersion: "specs.smi-spec.io/v1alpha4", Matches: matches}}
}

// TCPRoute matches ports.
func TCPRoute(ns, name string, ports ...int32) Object {
	return Object{layout.KindTCPRoute, ns, name, &meshv1.TCPRoute{Meta: meta(ns, name), ApiVersion: "specs.smi-spec.io/v1alpha4", Matches: &meshv1.TCPMatch{Name: name, Ports: ports}}}
}

// Backend is a weighted TrafficSplit backend.
type Backend struct {
	// Service is the backend Service name.
	Service string
	// Weight is its weight, as written.
	Weight int32
}

// TrafficSplit splits the apex service's traffic among backends.
func TrafficSplit(ns, name, apex string, backends ...Backend) Object {
	s := &meshv1.TrafficSplit{Meta: meta(ns, name), ApiVersion: "split.smi-spec.io/v1alpha2", Service: apex}
	for _, b := range backends {
		s.Backends = append(s.Backends, &meshv1.TrafficSplitBackend{Service: b.Service, Weight: b.Weight})
	}
	return Object{layout.KindTrafficSplit, ns, name, s}
}

// Bookstore is OSM's canonical demo: bookbuyer and bookthief clients,
// bookstore v1 and v2 behind the bookstore apex with a 75/25 TrafficSplit,
// and bookwarehouse with a mysql TCP backend. TrafficTargets allow bookbuyer
// (not bookthief) to reach bookstore, bookstore to reach bookwarehouse, and
// bookwarehouse to reach mysql over TCP port 3306.
func Bookstore(permissive bool) []Object {
	http := Port{Number: 14001, Name: "bookstore-port", AppProtocol: "http"}
	whPort := Port{Number: 14001, Name: "bookwarehouse-port", AppProtocol: "http"}
	sql := Port{Number: 3306, Name: "mysql", AppProtocol: "tcp"}
	out := []Object{
		MeshConfig(permissive),
		Namespace("bookbuyer"), Namespace("bookthief"), Namespace("bookstore"), Namespace("bookwarehouse"),
		ServiceAccount("bookbuyer", "bookbuyer"), ServiceAccount("bookthief", "bookthief"),
		ServiceAccount("bookstore", "bookstore-v1"), ServiceAccount("bookstore", "bookstore-v2"),
		ServiceAccount("bookwarehouse", "bookwarehouse"), ServiceAccount("bookwarehouse", "mysql"),
		Pod("bookbuyer", "bookbuyer-5d8c7b9f4-abcde", "bookbuyer", "10.244.1.10", map[string]string{"app": "bookbuyer"}),
		Pod("bookthief", "bookthief-7f9c6d8b5-fghij", "bookthief", "10.244.1.20", map[string]string{"app": "bookthief"}),
		Pod("bookstore", "bookstore-v1-6b7f8c9d4-klmno", "bookstore-v1", "10.244.2.10", map[string]string{"app": "bookstore", "version": "v1"}),
		Pod("bookstore", "bookstore-v2-8d9e7f6c5-pqrst", "bookstore-v2", "10.244.2.20", map[string]string{"app": "bookstore", "version": "v2"}),
		Pod("bookwarehouse", "bookwarehouse-9e8d7c6b5-uvwxy", "bookwarehouse", "10.244.3.10", map[string]string{"app": "bookwarehouse"}),
		Pod("bookwarehouse", "mysql-0", "mysql", "10.244.3.20", map[string]string{"app": "mysql"}),
		Service("bookstore", "bookstore", "10.96.10.1", map[string]string{"app": "bookstore"}, http),
		Service("bookstore", "bookstore-v1", "10.96.10.2", map[string]string{"app": "bookstore", "version": "v1"}, http),
		Service("bookstore", "bookstore-v2", "10.96.10.3", map[string]string{"app": "bookstore", "version": "v2"}, http),
		Service("bookwarehouse", "bookwarehouse", "10.96.20.1", map[string]string{"app": "bookwarehouse"}, whPort),
		Service("bookwarehouse", "mysql", "10.96.20.2", map[string]string{"app": "mysql"}, sql),
		EndpointSlice("bookstore", "bookstore", "bookstore-abcde", []Port{http},
			Endpoint{"bookstore-v1-6b7f8c9d4-klmno", "10.244.2.10"}, Endpoint{"bookstore-v2-8d9e7f6c5-pqrst", "10.244.2.20"}),
		EndpointSlice("bookstore", "bookstore-v1", "bookstore-v1-fghij", []Port{http}, Endpoint{"bookstore-v1-6b7f8c9d4-klmno", "10.244.2.10"}),
		EndpointSlice("bookstore", "bookstore-v2", "bookstore-v2-klmno", []Port{http}, Endpoint{"bookstore-v2-8d9e7f6c5-pqrst", "10.244.2.20"}),
		EndpointSlice("bookwarehouse", "bookwarehouse", "bookwarehouse-pqrst", []Port{whPort}, Endpoint{"bookwarehouse-9e8d7c6b5-uvwxy", "10.244.3.10"}),
		EndpointSlice("bookwarehouse", "mysql", "mysql-uvwxy", []Port{sql}, Endpoint{"mysql-0", "10.244.3.20"}),
		HTTPRouteGroup("bookstore", "bookstore-service-routes",
			&meshv1.HTTPMatch{Name: "books-bought", PathRegex: "/books-bought", Methods: []string{"GET"},
				Headers: map[string]string{"user-agent": ".*-http-client/*.*", "client-app": "bookbuyer"}},
			&meshv1.HTTPMatch{Name: "buy-a-book", PathRegex: ".*a-book.*new", Methods: []string{"GET"}}),
		HTTPRouteGroup("bookwarehouse", "bookwarehouse-service-routes",
			&meshv1.HTTPMatch{Name: "restock-books", PathRegex: "/restock-books", Methods: []string{"POST"}}),
		TCPRoute("bookwarehouse", "mysql", 3306),
		TrafficTarget("bookstore", "bookbuyer-access-bookstore-v1", "bookstore-v1",
			[]*meshv1.TrafficTargetRule{Rule("HTTPRouteGroup", "bookstore-service-routes", "buy-a-book", "books-bought")},
			Subject("bookbuyer", "bookbuyer")),
		TrafficTarget("bookstore", "bookbuyer-access-bookstore-v2", "bookstore-v2",
			[]*meshv1.TrafficTargetRule{Rule("HTTPRouteGroup", "bookstore-service-routes", "buy-a-book", "books-bought")},
			Subject("bookbuyer", "bookbuyer")),
		TrafficTarget("bookwarehouse", "bookstore-access-bookwarehouse", "bookwarehouse",
			[]*meshv1.TrafficTargetRule{Rule("HTTPRouteGroup", "bookwarehouse-service-routes", "restock-books")},
			Subject("bookstore", "bookstore-v1"), Subject("bookstore", "bookstore-v2")),
		TrafficTarget("bookwarehouse", "bookwarehouse-access-mysql", "mysql",
			[]*meshv1.TrafficTargetRule{Rule("TCPRoute", "mysql")},
			Subject("bookwarehouse", "bookwarehouse")),
		TrafficSplit("bookstore", "bookstore-split", "bookstore.bookstore.svc.cluster.local",
			Backend{"bookstore-v1", 75}, Backend{"bookstore-v2", 25}),
	}
	return out
}

// Config sizes a synthetic mesh.
type Config struct {
	// Namespaces spread the services; default 100.
	Namespaces int
	// Services, each with its own ServiceAccount.
	Services int
	// PodsPerService back each service.
	PodsPerService int
	// TrafficTargets, each allowing SourcesPerTarget other identities to
	// reach one service's identity (at most one per service).
	TrafficTargets int
	// SourcesPerTarget is the number of sources of each TrafficTarget; default 3.
	SourcesPerTarget int
	// HTTPRouteGroups, spread over the namespaces.
	HTTPRouteGroups int
	// TrafficSplits, each turning one service into an apex over two others
	// of its namespace.
	TrafficSplits int
	// Egresses, each allowing two services' identities out of the mesh
	// (see egresses).
	Egresses int
	// Permissive sets the MeshConfig's permissive mode.
	Permissive bool
	// Retries, each from the first source of an HTTP service's
	// TrafficTarget to that service (one per service, at most as many as
	// the HTTP services with a TrafficTarget).
	Retries int
	// UpstreamTrafficSettings, one on each of the first services.
	UpstreamTrafficSettings int
}

// Paper is the mesh of the cold-compile performance target: 10k services,
// 50k pods, 10k TrafficTargets, 500 HTTPRouteGroups, 200 TrafficSplits,
// 500 Retries and 500 UpstreamTrafficSettings.
var Paper = Config{Namespaces: 100, Services: 10000, PodsPerService: 5, TrafficTargets: 10000, SourcesPerTarget: 3, HTTPRouteGroups: 500, TrafficSplits: 200, Retries: 500,
	UpstreamTrafficSettings: 500}

// PaperEgress is Paper with 1,000 Egress objects.
var PaperEgress = func() Config { c := Paper; c.Egresses = 1000; return c }()

// SvcName is the name of synthetic service i; its namespace is SvcNamespace.
func SvcName(i int) string { return fmt.Sprintf("svc-%05d", i) }

// SvcNamespace is the namespace of synthetic service i.
func (c Config) SvcNamespace(i int) string { return fmt.Sprintf("ns-%03d", i%c.namespaces()) }

func (c Config) namespaces() int {
	if c.Namespaces <= 0 {
		return 100
	}
	return c.Namespaces
}

// SliceName is the endpoint slice of synthetic service i.
func SliceName(i int) string { return SvcName(i) + "-slice" }

// PodIP is the IP of pod p of service i.
func PodIP(i, p, perService int) string {
	n := i*max(perService, 1) + p + 1
	return fmt.Sprintf("10.%d.%d.%d", (n>>16)&255, (n>>8)&255, n&255)
}

// SyntheticPort is the port of synthetic service i: HTTP for four out of
// five services, TCP for the rest.
func SyntheticPort(i int) Port {
	if i%5 == 4 {
		return Port{Number: 9090, Name: "tcp", AppProtocol: "tcp"}
	}
	return Port{Number: 8080, Name: "http", AppProtocol: "http"}
}

// Slice is the endpoint slice of synthetic service i with its pods' IPs,
// plus extra endpoints (IPs from another range), for tests that change
// endpoints.
func (c Config) Slice(i int, extra ...string) Object {
	ns, name := c.SvcNamespace(i), SvcName(i)
	var eps []Endpoint
	for p := 0; p < c.PodsPerService; p++ {
		eps = append(eps, Endpoint{fmt.Sprintf("%s-%d", name, p), PodIP(i, p, c.PodsPerService)})
	}
	for j, ip := range extra {
		eps = append(eps, Endpoint{fmt.Sprintf("%s-extra-%d", name, j), ip})
	}
	return EndpointSlice(ns, name, SliceName(i), []Port{SyntheticPort(i)}, eps...)
}

// RetrySource is the identity (namespace, ServiceAccount) allowed first by
// the TrafficTarget of service t, the source of its Retry.
func (c Config) RetrySource(t int) (string, string) {
	j := (t*7 + 131) % c.Services
	if j == t {
		j = (j + 1) % c.Services
	}
	return c.SvcNamespace(j), SvcName(j)
}

// retries are c.Retries Retries, one per HTTP service with a
// TrafficTarget, from the target's first source to the service, in the
// source's namespace.
func (c Config) retries() []Object {
	var out []Object
	for t := 0; len(out) < c.Retries && t < c.TrafficTargets && t < c.Services; t++ {
		if SyntheticPort(t).AppProtocol != "http" {
			continue
		}
		srcNS, srcSA := c.RetrySource(t)
		out = append(out, Retry(srcNS, SvcName(t)+"-retry", srcSA, c.SvcNamespace(t), SvcName(t)))
	}
	return out
}

// Retry is a Retry in ns from the ServiceAccount sa of ns to the Service
// destNS/dest: retry on 5xx and gRPC unavailable, 3 times, 1 s per try,
// backoff base 25 ms.
func Retry(ns, name, sa, destNS, dest string) Object {
	n := int64(3)
	return Object{layout.KindRetry, ns, name, &meshv1.Retry{
		Meta:         meta(ns, name),
		ApiVersion:   "policy.openservicemesh.io/v1alpha1",
		Source:       &meshv1.RetrySubject{Kind: "ServiceAccount", Name: sa, Namespace: ns},
		Destinations: []*meshv1.RetrySubject{{Kind: "Service", Name: dest, Namespace: destNS}},
		RetryPolicy:  &meshv1.RetryPolicySpec{RetryOn: "5xx,unavailable", PerTryTimeout: "1s", NumRetries: &n, RetryBackoffBaseInterval: "25ms"},
	}}
}

// Generate builds a synthetic mesh. The output is deterministic.
func Generate(c Config) []Object {
	nsCount := c.namespaces()
	srcs := c.SourcesPerTarget
	if srcs <= 0 {
		srcs = 3
	}
	out := []Object{MeshConfig(c.Permissive)}
	for n := 0; n < nsCount; n++ {
		out = append(out, Namespace(fmt.Sprintf("ns-%03d", n)))
	}
	for i := 0; i < c.Services; i++ {
		ns, name := c.SvcNamespace(i), SvcName(i)
		labels := map[string]string{"app": name}
		out = append(out, ServiceAccount(ns, name))
		out = append(out, Service(ns, name, fmt.Sprintf("172.%d.%d.%d", 16+(i>>16)&15, (i>>8)&255, i&255), labels, SyntheticPort(i)))
		for p := 0; p < c.PodsPerService; p++ {
			out = append(out, Pod(ns, fmt.Sprintf("%s-%d", name, p), name, PodIP(i, p, c.PodsPerService), labels))
		}
		out = append(out, c.Slice(i))
	}
	// Route groups: HTTPRouteGroups round-robin over namespaces, and one
	// TCPRoute per namespace for the TCP services.
	groupsIn := map[string][]string{}
	for g := 0; g < c.HTTPRouteGroups; g++ {
		ns := fmt.Sprintf("ns-%03d", g%nsCount)
		name := fmt.Sprintf("routes-%04d", g)
		groupsIn[ns] = append(groupsIn[ns], name)
		out = append(out, HTTPRouteGroup(ns, name,
			&meshv1.HTTPMatch{Name: "read", PathRegex: fmt.Sprintf("/api/v%d/items.*", g%7), Methods: []string{"GET", "HEAD"}},
			&meshv1.HTTPMatch{Name: "write", PathRegex: fmt.Sprintf("/api/v%d/items/[0-9]+", g%7), Methods: []string{"POST", "PUT"},
				Headers: map[string]string{"x-tenant": "t-[a-z]+"}}))
	}
	for n := 0; n < nsCount; n++ {
		out = append(out, TCPRoute(fmt.Sprintf("ns-%03d", n), "tcp", 9090))
	}
	for t := 0; t < c.TrafficTargets && t < c.Services; t++ {
		ns, name := c.SvcNamespace(t), SvcName(t)
		var rule *meshv1.TrafficTargetRule
		if SyntheticPort(t).AppProtocol == "tcp" || len(groupsIn[ns]) == 0 {
			rule = Rule("TCPRoute", "tcp")
		} else {
			gs := groupsIn[ns]
			rule = Rule("HTTPRouteGroup", gs[t%len(gs)])
		}
		var sources []*meshv1.IdentityBindingSubject
		for s := 1; s <= srcs; s++ {
			j := (t*7 + s*131) % c.Services
			if j == t {
				j = (j + 1) % c.Services
			}
			sources = append(sources, Subject(c.SvcNamespace(j), SvcName(j)))
		}
		out = append(out, TrafficTarget(ns, name+"-access", name, []*meshv1.TrafficTargetRule{rule}, sources...))
	}
	out = append(out, c.retries()...)
	// Splits: apex i with backends i+n and i+2n, where n is the namespace
	// count, so all three are in one namespace and share the port kind
	// when n is a multiple of 5.
	for s := 0; s < c.TrafficSplits; s++ {
		apex := (s/nsCount)*3*nsCount + s%nsCount
		b1, b2 := apex+nsCount, apex+2*nsCount
		if b2 >= c.Services {
			break
		}
		ns := c.SvcNamespace(apex)
		out = append(out, TrafficSplit(ns, SvcName(apex)+"-split", SvcName(apex),
			Backend{SvcName(b1), 90}, Backend{SvcName(b2), 10}))
	}
	out = append(out, c.egresses(groupsIn)...)
	return append(out, c.upstreamSettings()...)
}
