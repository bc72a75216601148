package xdstest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// Write is one mesh-compiled key and value (nil value: a delete).
type Write struct {
	Key   string
	Value proto.Message
}

// Resource is the mesh-compiled write of an Envoy resource, as the
// compiler makes it: the content hash is its version.
func Resource(m proto.Message, name string, gen uint64) (Write, error) {
	typeURL := resourcev3.APITypePrefix + string(m.ProtoReflect().Descriptor().FullName())
	var short string
	switch typeURL {
	case resourcev3.ClusterType:
		short = layout.TypeCluster
	case resourcev3.EndpointType:
		short = layout.TypeEndpoint
	case resourcev3.ListenerType:
		short = layout.TypeListener
	case resourcev3.RouteType:
		short = layout.TypeRoute
	default:
		return Write{}, fmt.Errorf("no compiled key type for %s", typeURL)
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return Write{}, err
	}
	sum := sha256.Sum256(b)
	return Write{Key: layout.ResourceKey(short, name), Value: &meshv1.CompiledResource{
		TypeUrl: typeURL, Name: name, Version: hex.EncodeToString(sum[:]), Resource: b, Generation: gen,
	}}, nil
}

// Group is the mesh-compiled write of a proxy group; its names are names
// plus those of the name sets listed in sets.
func Group(ns, sa string, gen uint64, names map[string][]string, sets ...string) Write {
	g := &meshv1.ProxyGroup{Identity: &meshv1.Identity{Namespace: ns, ServiceAccount: sa}, Resources: map[string]*meshv1.ResourceNames{}, Generation: gen, Sets: sets}
	for typeURL, n := range names {
		g.Resources[typeURL] = &meshv1.ResourceNames{Names: n}
	}
	return Write{Key: layout.GroupKey(ns, sa), Value: g}
}

// NameSet is the mesh-compiled write of a name set that groups list in
// their sets.
func NameSet(name string, gen uint64, names map[string][]string) Write {
	s := &meshv1.NameSet{Name: name, Resources: map[string]*meshv1.ResourceNames{}, Generation: gen}
	for typeURL, n := range names {
		s.Resources[typeURL] = &meshv1.ResourceNames{Names: n}
	}
	return Write{Key: layout.SetKey(name), Value: s}
}

// Generation is the generation record.
func Generation(n uint64) Write {
	return Write{Key: layout.GenerationKey, Value: &meshv1.Generation{Number: n, CommitTime: timestamppb.Now()}}
}

// Cluster is an EDS cluster named name with the given connect timeout.
func Cluster(name string, timeout time.Duration) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ConnectTimeout:       durationpb.New(timeout),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
			ResourceApiVersion:    corev3.ApiVersion_V3,
		}},
	}
}

// Endpoints is the load assignment of cluster with one endpoint per port
// on 127.0.0.1.
func Endpoints(cluster string, ports ...uint32) *endpointv3.ClusterLoadAssignment {
	var lbs []*endpointv3.LbEndpoint
	for _, p := range ports {
		lbs = append(lbs, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: p},
			}}},
		}}})
	}
	return &endpointv3.ClusterLoadAssignment{ClusterName: cluster, Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}}
}

// Route is a route configuration sending every path to cluster.
func Route(name, cluster string) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{{
		Name: name, Domains: []string{"*"},
		Routes: []*routev3.Route{{
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}},
		}},
	}}}
}

// Listener is a TCP listener on port.
func Listener(name string, port uint32) *listenerv3.Listener {
	return &listenerv3.Listener{Name: name, Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: "0.0.0.0", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}}
}
