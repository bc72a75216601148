// Package bootstrap builds the Envoy bootstrap configuration a sidecar
// starts with: ADS over mutual TLS to the xds-edge Service, an admin
// listener on localhost only, the Prometheus listener, and one listener per
// health probe the injector sent through the sidecar (one shared health-check
// listener for its TCP probes). Every built bootstrap passes ValidateAll.
//
// The ADS connection's client certificate and the roots that verify the
// edges are read through file-based SDS (a ConfigSource with
// path_config_source and watched_directory), not as static files: the
// injector renews the certificate in the bootstrap Secret, the kubelet
// swaps the Secret volume's files by moving its ..data symlink, and Envoy,
// watching the directory for that move, reloads the SDS files and the
// certificate files they name. The sidecar thus picks up a renewed
// certificate, or a new trust bundle, without a restart. SDSFiles returns
// the two SDS files the Secret carries.
package bootstrap

import (
	"fmt"
	"path"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Files in the bootstrap Secret, mounted at the sidecar's config directory.
const (
	FileBootstrap = "bootstrap.json"
	FileCert      = "tls.crt"
	FileKey       = "tls.key"
	FileCA        = "ca.crt"
	// FileSDSCert is the SDS resource of the ADS client certificate
	// (FileCert and FileKey).
	FileSDSCert = "sds-xds-client.json"
	// FileSDSCA is the SDS resource of the roots that verify the edges
	// (FileCA).
	FileSDSCA = "sds-xds-trust.json"
)

// Names of the SDS secrets the bootstrap reads from files.
const (
	SecretXDSClient = "osm-xds-client"
	SecretXDSTrust  = "osm-xds-trust"
)

// Cluster names of the static resources.
const (
	clusterXDS     = "osm-xds"
	clusterAdmin   = "osm-admin"
	listenerMetric = "osm-prometheus"
)

// Probe is one health probe sent through the sidecar: requests to
// ListenPort and ProbePath go to the app on Port and Path. A Passthrough
// probe (HTTPS or gRPC) is a TCP proxy instead: every connection to
// ListenPort is passed, unread, to the app's Port. A TCP probe is a GET of
// ProbePath on ListenPort whose HeaderOriginalTCPPort header names Port,
// answered 200 while the app accepts connections on Port (tcpprobe.go);
// all of a pod's TCP probes share that listener.
type Probe struct {
	Kind        string
	ListenPort  uint32
	ProbePath   string
	Port        uint32
	Path        string
	Passthrough bool
	TCP         bool
}

// Config is what a sidecar's bootstrap depends on.
type Config struct {
	// ProxyUUID is the node id.
	ProxyUUID string
	// Namespace and ServiceAccount are the pod's identity.
	Namespace, ServiceAccount string
	// XDSHost and XDSPort locate the xds-edge Service.
	XDSHost string
	XDSPort uint32
	// XDSServerSAN is the URI SAN the edges' serving certificate carries.
	XDSServerSAN string
	// ConfigDir is where the Secret is mounted.
	ConfigDir string
	// AdminPort and MetricsPort are the sidecar's admin (localhost only)
	// and Prometheus listeners.
	AdminPort, MetricsPort uint32
	// Probes are the rewritten health probes.
	Probes []Probe
}

// Build returns the bootstrap, validated.
func Build(c Config) (*bootstrapv3.Bootstrap, error) {
	if c.ProxyUUID == "" || c.Namespace == "" || c.ServiceAccount == "" || c.XDSHost == "" || c.XDSPort == 0 {
		return nil, fmt.Errorf("bootstrap needs the proxy UUID, namespace, service account and xDS address")
	}
	xdsTLS := &tlsv3.UpstreamTlsContext{
		Sni: c.XDSHost,
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsParams: &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2},
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{
				Name: SecretXDSClient, SdsConfig: fileSDS(c.ConfigDir, FileSDSCert)}},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
				CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
					// The SAN matcher stays here; the roots come from SDS.
					DefaultValidationContext: &tlsv3.CertificateValidationContext{
						MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
							SanType: tlsv3.SubjectAltNameMatcher_URI,
							Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: c.XDSServerSAN}},
						}},
					},
					ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{
						Name: SecretXDSTrust, SdsConfig: fileSDS(c.ConfigDir, FileSDSCA)},
				}},
		},
	}
	h2, err := anypb.New(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		}},
	})
	if err != nil {
		return nil, err
	}
	// ValidateAll does not look inside Any: validate typed configs first.
	if err := xdsTLS.ValidateAll(); err != nil {
		return nil, fmt.Errorf("xds tls context: %w", err)
	}
	tlsAny, err := anypb.New(xdsTLS)
	if err != nil {
		return nil, err
	}
	xds := &clusterv3.Cluster{
		Name:                          clusterXDS,
		ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: clusterv3.Cluster_LOGICAL_DNS},
		ConnectTimeout:                durationpb.New(time.Second),
		LoadAssignment:                loadAssignment(clusterXDS, c.XDSHost, c.XDSPort),
		TypedExtensionProtocolOptions: map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": h2},
		TransportSocket:               &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tlsAny}},
	}
	admin := staticCluster(clusterAdmin, c.AdminPort)
	clusters := []*clusterv3.Cluster{xds, admin}
	metrics, err := httpListener(listenerMetric, c.MetricsPort, "/stats/prometheus", clusterAdmin, "/stats/prometheus")
	if err != nil {
		return nil, err
	}
	listeners := []*listenerv3.Listener{metrics}
	var tcpProbes []Probe
	for _, p := range c.Probes {
		if p.TCP {
			tcpProbes = append(tcpProbes, p)
			continue
		}
		name := "osm-" + p.Kind + "-probe"
		clusters = append(clusters, staticCluster(name, p.Port))
		listen := httpListener
		if p.Passthrough {
			listen = tcpListener
		}
		l, err := listen(name, p.ListenPort, p.ProbePath, name, p.Path)
		if err != nil {
			return nil, err
		}
		listeners = append(listeners, l)
	}
	if len(tcpProbes) > 0 {
		l, cs, err := tcpProbeResources(tcpProbes)
		if err != nil {
			return nil, err
		}
		listeners = append(listeners, l)
		clusters = append(clusters, cs...)
	}
	ads := &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3, ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	b := &bootstrapv3.Bootstrap{
		Node: &corev3.Node{Id: c.ProxyUUID, Cluster: c.ServiceAccount + "." + c.Namespace},
		Admin: &bootstrapv3.Admin{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: c.AdminPort}}}}},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &corev3.ApiConfigSource{
				// Delta (incremental) ADS: the xds-edge sends a delta proxy
				// only the resources that changed, and keeps 8 bytes per
				// name it subscribed to; a state-of-the-world proxy gets the
				// whole of each changed type again.
				ApiType:                   corev3.ApiConfigSource_DELTA_GRPC,
				TransportApiVersion:       corev3.ApiVersion_V3,
				SetNodeOnFirstMessageOnly: true,
				GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
					EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: clusterXDS}}}},
			},
			CdsConfig: ads,
			LdsConfig: ads,
		},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{Clusters: clusters, Listeners: listeners},
	}
	if err := b.ValidateAll(); err != nil {
		return nil, fmt.Errorf("bootstrap for %s is invalid: %w", c.ProxyUUID, err)
	}
	return b, nil
}

// fileSDS is the ConfigSource of an SDS resource in file name of dir,
// reloaded when the kubelet swaps the directory's files.
func fileSDS(dir, name string) *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion: corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_PathConfigSource{PathConfigSource: &corev3.PathConfigSource{
			Path: path.Join(dir, name), WatchedDirectory: &corev3.WatchedDirectory{Path: dir}}},
	}
}

// SDSFiles returns the contents of FileSDSCert and FileSDSCA for a Secret
// mounted at configDir: DiscoveryResponses holding one TLS Secret each,
// whose files are reloaded when the directory's ..data link is moved.
func SDSFiles(configDir string) (map[string][]byte, error) {
	if configDir == "" {
		return nil, fmt.Errorf("sds files need the config directory")
	}
	file := func(name string) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: path.Join(configDir, name)}}
	}
	watched := &corev3.WatchedDirectory{Path: configDir}
	out := map[string][]byte{}
	for name, secret := range map[string]*tlsv3.Secret{
		FileSDSCert: {Name: SecretXDSClient, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: file(FileCert), PrivateKey: file(FileKey), WatchedDirectory: watched}}},
		FileSDSCA: {Name: SecretXDSTrust, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: file(FileCA), WatchedDirectory: watched}}},
	} {
		if err := secret.ValidateAll(); err != nil {
			return nil, fmt.Errorf("sds secret %s: %w", secret.GetName(), err)
		}
		res, err := anypb.New(secret)
		if err != nil {
			return nil, err
		}
		dr := &discoveryv3.DiscoveryResponse{Resources: []*anypb.Any{res}}
		if err := dr.ValidateAll(); err != nil {
			return nil, fmt.Errorf("sds file %s: %w", name, err)
		}
		b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(dr)
		if err != nil {
			return nil, err
		}
		out[name] = b
	}
	return out, nil
}

// Marshal renders the bootstrap as the JSON Envoy reads, deterministically.
func Marshal(b *bootstrapv3.Bootstrap) ([]byte, error) {
	// Round-trip through the binary form with deterministic map order,
	// then print with stable options.
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(b)
	if err != nil {
		return nil, err
	}
	var clone bootstrapv3.Bootstrap
	if err := proto.Unmarshal(raw, &clone); err != nil {
		return nil, err
	}
	return protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(&clone)
}

func loadAssignment(name, host string, port uint32) *endpointv3.ClusterLoadAssignment {
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: name,
		Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}},
			}},
		}}}},
	}
}

func staticCluster(name string, port uint32) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(time.Second),
		LoadAssignment:       loadAssignment(name, "127.0.0.1", port),
	}
}

// httpListener serves prefix on port and forwards it to cluster, rewriting
// the path to rewrite.
func httpListener(name string, port uint32, prefix, cluster, rewrite string) (*listenerv3.Listener, error) {
	router, err := anypb.New(&routerv3.Router{})
	if err != nil {
		return nil, err
	}
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: name,
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: name,
			VirtualHosts: []*routev3.VirtualHost{{
				Name:    name,
				Domains: []string{"*"},
				Routes: []*routev3.Route{{
					Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: prefix}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{
						ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
						PrefixRewrite:    rewrite,
					}},
				}},
			}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
	}
	if err := hcm.ValidateAll(); err != nil {
		return nil, fmt.Errorf("listener %s: %w", name, err)
	}
	hcmAny, err := anypb.New(hcm)
	if err != nil {
		return nil, err
	}
	return &listenerv3.Listener{
		Name: name,
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "0.0.0.0", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcmAny},
		}}}},
	}, nil
}

// tcpListener passes every connection on port to cluster unread: the probe
// listener of an HTTPS or gRPC probe, whose TLS or HTTP/2 the app speaks
// end to end with the kubelet. It has httpListener's signature; the path
// arguments are unused.
func tcpListener(name string, port uint32, _, cluster, _ string) (*listenerv3.Listener, error) {
	tcp := &tcpproxyv3.TcpProxy{StatPrefix: name, ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster}}
	if err := tcp.ValidateAll(); err != nil {
		return nil, fmt.Errorf("listener %s: %w", name, err)
	}
	tcpAny, err := anypb.New(tcp)
	if err != nil {
		return nil, err
	}
	return &listenerv3.Listener{
		Name: name,
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "0.0.0.0", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: tcpAny},
		}}}},
	}, nil
}
