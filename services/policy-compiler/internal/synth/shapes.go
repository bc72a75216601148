package synth

import (
	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// HeadlessService is a headless Service (clusterIP: None) selecting labels.
func HeadlessService(ns, name string, selector map[string]string, ports ...Port) Object {
	o := Service(ns, name, "", selector, ports...)
	s := o.Msg.(*meshv1.Service)
	s.ClusterIps, s.Headless = nil, true
	return o
}

// SelectorlessService is a ClusterIP Service without a selector; with
// serviceAccounts non-empty it carries the openservicemesh.io/service-accounts
// annotation with that value.
func SelectorlessService(ns, name, clusterIP, serviceAccounts string, ports ...Port) Object {
	o := Service(ns, name, clusterIP, nil, ports...)
	if serviceAccounts != "" {
		o.Msg.(*meshv1.Service).OsmAnnotations = map[string]string{layout.AnnotationServiceAccounts: serviceAccounts}
	}
	return o
}

// BookstoreShapes is the bookstore demo with the other Service shapes in
// bookwarehouse: cache, the headless Service of a two-pod StatefulSet
// (cache-0, cache-1, service account cache; tcp 6379 and a UDP port the
// mesh leaves alone) that bookwarehouse may reach over TCP; and legacy-db,
// a Service without a selector whose hand-written EndpointSlice names a
// machine that runs as the mysql identity it declares, which bookwarehouse
// reaches through its TrafficTarget to mysql.
func BookstoreShapes() []Object {
	redis := Port{Number: 6379, Name: "redis", AppProtocol: "tcp"}
	sql := Port{Number: 3306, Name: "mysql", AppProtocol: "tcp"}
	cache := HeadlessService("bookwarehouse", "cache", map[string]string{"app": "cache"}, redis)
	cache.Msg.(*meshv1.Service).Ports = append(cache.Msg.(*meshv1.Service).Ports,
		&meshv1.ServicePort{Name: "gossip", Port: 7946, Protocol: "UDP"})
	slice := EndpointSlice("bookwarehouse", "cache", "cache-abcde", []Port{redis},
		Endpoint{"cache-0", "10.244.3.30"}, Endpoint{"cache-1", "10.244.3.31"})
	for i, ep := range slice.Msg.(*meshv1.EndpointSlice).Endpoints {
		ep.Hostname = []string{"cache-0", "cache-1"}[i]
	}
	legacy := EndpointSlice("bookwarehouse", "legacy-db", "legacy-db-1", []Port{sql}, Endpoint{IP: "10.30.0.5"})
	legacy.Msg.(*meshv1.EndpointSlice).Endpoints[0].TargetRef = nil
	return append(Bookstore(false),
		ServiceAccount("bookwarehouse", "cache"),
		Pod("bookwarehouse", "cache-0", "cache", "10.244.3.30", map[string]string{"app": "cache"}),
		Pod("bookwarehouse", "cache-1", "cache", "10.244.3.31", map[string]string{"app": "cache"}),
		cache, slice,
		TCPRoute("bookwarehouse", "redis", 6379),
		TrafficTarget("bookwarehouse", "bookwarehouse-access-cache", "cache",
			[]*meshv1.TrafficTargetRule{Rule("TCPRoute", "redis")},
			Subject("bookwarehouse", "bookwarehouse")),
		SelectorlessService("bookwarehouse", "legacy-db", "10.96.20.9", "bookwarehouse/mysql", sql),
		legacy,
	)
}
