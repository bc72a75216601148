// Package xdstest helps tests and the load generator of the xds-edge: a
// throw-away PKI that issues SPIFFE client and server certificates, and
// mesh-compiled records built from go-control-plane types exactly as the
// policy-compiler writes them.
package xdstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
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

// CA is a throw-away certificate authority.
type CA struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte
	serial  int64
}

// NewCA makes a self-signed root.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), serial: 1}, nil
}

// Pool is a cert pool holding the root.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// SignPublic issues a leaf for pub with the given URI SAN (may be empty),
// DNS names and IPs, valid for ttl.
func (ca *CA) SignPublic(pub any, uri string, dns []string, ips []net.IP, ttl time.Duration) ([]byte, *x509.Certificate, error) {
	ca.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial), Subject: pkix.Name{CommonName: "osm-test"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(ttl),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		DNSNames:    dns, IPAddresses: ips,
	}
	if uri != "" {
		u, err := url.Parse(uri)
		if err != nil {
			return nil, nil, err
		}
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), cert, nil
}

// Leaf issues a key pair and certificate with the URI SAN uri (and
// 127.0.0.1 / localhost), as a tls.Certificate plus its PEM files.
func (ca *CA) Leaf(uri string) (tls.Certificate, []byte, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, nil, err
	}
	certPEM, _, err := ca.SignPublic(&key.PublicKey, uri, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
	if err != nil {
		return tls.Certificate{}, nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return tls.Certificate{}, nil, nil, err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	return pair, certPEM, keyPEM, err
}

// ServerTLS is an mTLS server configuration: a serving leaf with URI SAN
// uri, requiring client certificates from ca.
func (ca *CA) ServerTLS(uri string) (*tls.Config, error) {
	pair, _, _, err := ca.Leaf(uri)
	if err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}, ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert}, nil
}

// ClientTLS is an mTLS client configuration presenting a leaf with URI SAN
// uri (empty: no client certificate) and trusting ca.
func (ca *CA) ClientTLS(uri string) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: ca.Pool(), ServerName: "localhost"}
	if uri == "" {
		return c, nil
	}
	pair, _, _, err := ca.Leaf(uri)
	if err != nil {
		return nil, err
	}
	c.Certificates = []tls.Certificate{pair}
	return c, nil
}

// Bundle is a mesh-trust bundle holding the root.
func (ca *CA) Bundle() *meshv1.TrustBundle {
	sum := sha256.Sum256(ca.Cert.Raw)
	id := hex.EncodeToString(sum[:])
	return &meshv1.TrustBundle{
		Roots:      []*meshv1.TrustRoot{{Id: id, CertificatePem: ca.CertPEM, Signing: true, NotBefore: timestamppb.New(ca.Cert.NotBefore), NotAfter: timestamppb.New(ca.Cert.NotAfter)}},
		Version:    id[:16],
		UpdateTime: timestamppb.Now(),
	}
}

// Write is one mesh-compiled key and value (nil value: a delete).
type Write struct {
	Key   string
	Value proto.Message
}

var deterministic = proto.MarshalOptions{Deterministic: true}

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
	b, err := deterministic.Marshal(m)
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
