package bootstrap

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"path"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/openservicemesh/osm/libs/layout"
)

// Files a proxyless gRPC pod's Secret holds besides FileBootstrap (gRPC's
// xDS bootstrap there), FileCert and FileKey (the xDS client certificate)
// and FileCA (the mesh's roots).
const (
	// FileServiceCert and FileServiceKey are the workload's service
	// certificate and key, which gRPC presents to its peers through the
	// certificate-provider instance layout.CertProviderInstance.
	FileServiceCert = "svc.crt"
	FileServiceKey  = "svc.key"
	// FileSPIFFEBundle is FileCA as a SPIFFE bundle map (gRFC A87), which
	// verifies the edges by their SPIFFE id's trust domain: their serving
	// certificate has a URI SAN and no DNS name, so gRPC's hostname check
	// against the xDS server's address cannot pass.
	FileSPIFFEBundle = "spiffe-bundle.json"
)

// Environment of a proxyless gRPC pod's containers.
const (
	// EnvGRPCBootstrap is where gRPC reads its xDS bootstrap from.
	EnvGRPCBootstrap = "GRPC_XDS_BOOTSTRAP"
	// EnvGRPCSPIFFE makes gRPC-Go read FileSPIFFEBundle (gRFC A87, off by
	// default): without it gRPC checks the edges' certificate against the
	// xDS server's host name, which it does not carry.
	EnvGRPCSPIFFE = "GRPC_EXPERIMENTAL_XDS_MTLS_SPIFFE"
)

// DefaultGRPCRefresh is how often gRPC's file watchers read the
// certificate files again. The kubelet swaps a Secret volume's files about
// once a minute after the Secret changes; certificates are renewed at half
// of their lifetime, so the new files are read long before the old ones
// expire.
const DefaultGRPCRefresh = 10 * time.Second

// GRPCConfig is what a proxyless gRPC pod's bootstrap depends on.
type GRPCConfig struct {
	// ProxyUUID is the node id.
	ProxyUUID string
	// Namespace and ServiceAccount are the pod's identity.
	Namespace, ServiceAccount string
	// XDSHost and XDSPort locate the xds-edge Service.
	XDSHost string
	XDSPort uint32
	// ConfigDir is where the Secret is mounted.
	ConfigDir string
	// Refresh is the file watchers' refresh interval; 0 means
	// DefaultGRPCRefresh.
	Refresh time.Duration
}

// GRPC returns gRPC's xDS bootstrap (gRFC A27) for a proxyless pod, as
// indented JSON:
//   - the edge as its one xDS server, over mTLS (gRFC A65) with the xDS
//     client certificate FileCert/FileKey, the edges verified with
//     FileSPIFFEBundle (FileCA without EnvGRPCSPIFFE), and xds_v3;
//   - the node: the proxy UUID, the cluster "<sa>.<ns>" as a sidecar's,
//     and the metadata layout.NodeMetadataProxyless=layout.ProxylessGRPC
//     that makes the edge serve the gRPC flavour of the identity;
//   - the file_watcher certificate provider layout.CertProviderInstance
//     with the service certificate and the roots, which the gRPC-flavour
//     clusters and server listeners name;
//   - the server listener name template, for xDS-enabled gRPC servers.
func GRPC(c GRPCConfig) ([]byte, error) {
	if c.ProxyUUID == "" || c.Namespace == "" || c.ServiceAccount == "" || c.XDSHost == "" || c.XDSPort == 0 || c.ConfigDir == "" {
		return nil, fmt.Errorf("grpc bootstrap needs the proxy UUID, namespace, service account, xDS address and config directory")
	}
	refresh := c.Refresh
	if refresh <= 0 {
		refresh = DefaultGRPCRefresh
	}
	file := func(name string) string { return path.Join(c.ConfigDir, name) }
	interval := strconv.FormatFloat(refresh.Seconds(), 'f', -1, 64) + "s"
	type obj = map[string]any
	b := obj{
		"xds_servers": []any{obj{
			"server_uri": net.JoinHostPort(c.XDSHost, strconv.FormatUint(uint64(c.XDSPort), 10)),
			"channel_creds": []any{obj{"type": "tls", "config": obj{
				"certificate_file":             file(FileCert),
				"private_key_file":             file(FileKey),
				"ca_certificate_file":          file(FileCA),
				"spiffe_trust_bundle_map_file": file(FileSPIFFEBundle),
				"refresh_interval":             interval,
			}}},
			"server_features": []string{"xds_v3"},
		}},
		"node": obj{
			"id":       c.ProxyUUID,
			"cluster":  c.ServiceAccount + "." + c.Namespace,
			"metadata": obj{layout.NodeMetadataProxyless: layout.ProxylessGRPC},
		},
		"certificate_providers": obj{layout.CertProviderInstance: obj{
			"plugin_name": "file_watcher",
			"config": obj{
				"certificate_file":    file(FileServiceCert),
				"private_key_file":    file(FileServiceKey),
				"ca_certificate_file": file(FileCA),
				"refresh_interval":    interval,
			},
		}},
		"server_listener_resource_name_template": layout.GRPCServerListenerTemplate,
	}
	return json.MarshalIndent(b, "", "  ")
}

// SPIFFEBundle returns the roots in rootsPEM as a SPIFFE bundle map of
// trustDomain (FileSPIFFEBundle).
func SPIFFEBundle(trustDomain string, rootsPEM []byte) ([]byte, error) {
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		return nil, fmt.Errorf("spiffe bundle: trust domain %q: %w", trustDomain, err)
	}
	bundle := spiffebundle.New(td)
	for rest := rootsPEM; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		root, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("spiffe bundle: root: %w", err)
		}
		bundle.AddX509Authority(root)
	}
	if len(bundle.X509Authorities()) == 0 {
		return nil, fmt.Errorf("spiffe bundle: no PEM certificate in the roots")
	}
	raw, err := bundle.Marshal()
	if err != nil {
		return nil, fmt.Errorf("spiffe bundle: %w", err)
	}
	return json.Marshal(map[string]map[string]json.RawMessage{"trust_domains": {td.Name(): raw}})
}
