package layout

// Proxyless gRPC: a workload whose gRPC library is its own xDS client (gRFC
// A27, A28, A29, A36), with no Envoy beside it.
//
// Such a proxy says so in its node metadata: NodeMetadataProxyless set to
// ProxylessGRPC (the value of the pod annotation of the same name). It is
// served the gRPC flavour of its identity's resources, whose TLS names
// certificate-provider instances of the proxy's own gRPC bootstrap instead
// of SDS secrets: CertProviderInstance holds the workload's certificate,
// key and the mesh's trust bundle (a file_watcher provider in the
// bootstrap the injector writes).
const (
	// NodeMetadataProxyless is the node metadata key (and the pod
	// annotation) that selects a proxyless flavour.
	NodeMetadataProxyless = "openservicemesh.io/proxyless"
	// ProxylessGRPC is its value for gRPC's xDS client.
	ProxylessGRPC = "grpc"
	// CertProviderInstance is the certificate-provider instance, in the
	// gRPC bootstrap's certificate_providers, that gRPC-flavour resources
	// take the identity certificate and the root certificates from.
	CertProviderInstance = "osm-certs"
	// GRPCServerListenerTemplate is the gRPC bootstrap's
	// server_listener_resource_name_template: an xDS-enabled gRPC server
	// listening on <ip>:<port> asks for the listener named by it, the
	// name the compiler gives a server listener (gRFC A36).
	GRPCServerListenerTemplate = "grpc/server?xds.resource.listening_address=%s"
)

// GRPCGroupKey is the key of the gRPC-flavour proxy group of identity
// namespace/serviceaccount: the group key of the name "<sa>@grpc", which
// no ServiceAccount has ('@' is not allowed in Kubernetes names), so an
// edge holds it as one more group.
func GRPCGroupKey(namespace, serviceAccount string) string {
	return GroupKey(namespace, serviceAccount+"@"+ProxylessGRPC)
}
