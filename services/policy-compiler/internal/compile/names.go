package compile

import (
	"fmt"
	"strings"

	"github.com/openservicemesh/osm/libs/policy"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
)

// Ports of the sidecar listeners (OSM's published layout).
const (
	OutboundListenerPort = 15001
	InboundListenerPort  = 15003
)

// Protocol is the application protocol of a service port.
type Protocol string

// The protocols the compiler knows.
const (
	ProtocolTCP  Protocol = "tcp"
	ProtocolHTTP Protocol = "http"
	ProtocolGRPC Protocol = "grpc"
)

// IsHTTP reports whether the protocol is served through an HTTP connection
// manager.
func (p Protocol) IsHTTP() bool { return p == ProtocolHTTP || p == ProtocolGRPC }

// ProtocolOf is the protocol of a service port (libs/policy's
// ProtocolOf, which osm policy check reads ports with too): its
// appProtocol when that is http, grpc or tcp (kubernetes.io/h2c counts as
// grpc), otherwise the prefix of its name ("http", "http-web",
// "grpc-api"), otherwise tcp.
func ProtocolOf(appProtocol, portName string) Protocol {
	return Protocol(policy.ProtocolOf(appProtocol, portName))
}

// ClusterName is the name of the cluster (and of its ClusterLoadAssignment
// and outbound RouteConfiguration) of one service port: "ns/svc|port".
func ClusterName(svc model.NN, port int32) string {
	return fmt.Sprintf("%s/%s|%d", svc.Namespace, svc.Name, port)
}

// LocalClusterName is the name of the cluster an inbound filter chain
// forwards to: the application on 127.0.0.1, "ns/svc|port|local".
func LocalClusterName(svc model.NN, port int32) string {
	return ClusterName(svc, port) + "|local"
}

// OutboundListener is the outbound listener every proxy that reaches any
// service shares, in both modes: 0.0.0.0:15001 with use_original_dst. It
// hands each redirected connection to the service listener bound (without
// binding the port) to the connection's original destination, and closes
// connections to destinations the proxy has no listener for.
const OutboundListener = "outbound-listener"

// ServiceListenerName is the name of the outbound listener of one service
// port, "outbound-listener:ns/svc|port": the listener on the port's cluster
// IPs (bind_to_port false) that the OutboundListener hands connections to.
// It is shared by every proxy that may reach the service.
func ServiceListenerName(svc model.NN, port int32) string {
	return "outbound-listener:" + ClusterName(svc, port)
}

// InboundListenerName is the name of the inbound listener of an identity.
func InboundListenerName(id model.Identity) string { return "inbound-listener:" + id.String() }

// SpiffeID is the URI SAN of an identity.
func SpiffeID(trustDomain string, id model.Identity) string {
	return fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", trustDomain, id.Namespace, id.Name)
}

// HostNames are the names under which clients reach a service port, in the
// order Kubernetes DNS resolves them, each also with ":port".
func HostNames(svc model.NN, port int32, clusterIPs []string) []string {
	bases := []string{
		svc.Name,
		svc.Name + "." + svc.Namespace,
		svc.Name + "." + svc.Namespace + ".svc",
		svc.Name + "." + svc.Namespace + ".svc.cluster",
		svc.Name + "." + svc.Namespace + ".svc.cluster.local",
	}
	for _, ip := range clusterIPs {
		if strings.Contains(ip, ":") {
			ip = "[" + ip + "]"
		}
		bases = append(bases, ip)
	}
	out := make([]string, 0, 2*len(bases))
	for _, b := range bases {
		out = append(out, b, fmt.Sprintf("%s:%d", b, port))
	}
	return out
}
