// Package edgedebug is the wire form of the xds-edge's debug API, shared by
// the edge, which serves it, and the osm CLI, which reads it: the paths,
// the JSON bodies and the short names of the xDS types.
//
// The API is HTTPS with mutual TLS on the edge's --debug-addr, and answers
// only a caller presenting the operator's control-plane certificate
// (spiffe://<trust-domain>/osm/operator, from the cert-authority's
// Bootstrap). It shows certificates, never a private key.
package edgedebug

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Paths of the API. A node id is path-escaped (url.PathEscape).
const (
	// PathProxies lists the proxies connected to the edge (ProxyList).
	PathProxies = "/v1/proxies"
	// configSuffix and certsSuffix follow PathProxies/<node id>.
	configSuffix = "/config"
	certsSuffix  = "/certs"
	// QueryType filters a config dump by short type names, comma-separated.
	QueryType = "type"
)

// ConfigPath is the path of one proxy's config dump (Config).
func ConfigPath(nodeID string) string {
	return PathProxies + "/" + url.PathEscape(nodeID) + configSuffix
}

// CertsPath is the path of the certificates served to one proxy (Certs).
func CertsPath(nodeID string) string {
	return PathProxies + "/" + url.PathEscape(nodeID) + certsSuffix
}

// The xDS types the edge serves, by short name.
var types = []struct{ short, url string }{
	{"cds", "type.googleapis.com/envoy.config.cluster.v3.Cluster"},
	{"eds", "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"},
	{"lds", "type.googleapis.com/envoy.config.listener.v3.Listener"},
	{"rds", "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"},
	{"sds", "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"},
}

// TypeNames are the short type names, in push order.
func TypeNames() []string {
	out := make([]string, len(types))
	for i, t := range types {
		out[i] = t.short
	}
	return out
}

// TypeURL is the type URL of a short name; false for another name.
func TypeURL(short string) (string, bool) {
	for _, t := range types {
		if t.short == short {
			return t.url, true
		}
	}
	return "", false
}

// ShortType is the short name of a type URL, or the URL itself for a type
// the edge does not serve.
func ShortType(typeURL string) string {
	for _, t := range types {
		if t.url == typeURL {
			return t.short
		}
	}
	return typeURL
}

// ParseTypes parses a comma-separated list of short type names; an empty
// list is nil (every type). The error names the bad value and the good ones.
func ParseTypes(list string) ([]string, error) {
	if strings.TrimSpace(list) == "" {
		return nil, nil
	}
	var out []string
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		u, ok := TypeURL(s)
		if !ok {
			return nil, fmt.Errorf("type %q: want one of %s", s, strings.Join(TypeNames(), ", "))
		}
		if !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	return out, nil
}

// ProxyList is the body of GET PathProxies.
type ProxyList struct {
	// Edge is the edge's pod name.
	Edge string `json:"edge"`
	// Generation is the edge's applied generation.
	Generation string  `json:"generation"`
	Proxies    []Proxy `json:"proxies"`
}

// Proxy is one connected proxy (one ADS stream).
type Proxy struct {
	NodeID string `json:"node_id"`
	// Identity is the SPIFFE id of the proxy's client certificate.
	Identity string `json:"identity"`
	// Edge is the pod name of the edge serving it.
	Edge     string `json:"edge"`
	StreamID uint64 `json:"stream_id"`
	// Protocol is "delta" or "sotw".
	Protocol    string    `json:"protocol"`
	ConnectedAt time.Time `json:"connected_at"`
	// EdgeGeneration is the edge's applied generation.
	EdgeGeneration string `json:"edge_generation"`
	// AckedGeneration is the newest generation whose configuration the
	// proxy ACKed in full (the edge's own when Synced).
	AckedGeneration string `json:"acked_generation"`
	// Lag is how many generations AckedGeneration is behind
	// EdgeGeneration; 0 when Synced.
	Lag uint64 `json:"lag"`
	// Synced says the proxy ACKed the newest response of every type it
	// subscribed to and nothing is waiting to be sent.
	Synced bool `json:"synced"`
	// Types are the proxy's subscribed types.
	Types    []TypeStatus `json:"types"`
	LastNack *Nack        `json:"last_nack,omitempty"`
}

// TypeStatus is a proxy's state for one type.
type TypeStatus struct {
	// Type is the short name (cds, eds, lds, rds, sds).
	Type string `json:"type"`
	// Acked is the version the proxy last ACKed, Sent the newest sent.
	Acked  string `json:"acked"`
	Sent   string `json:"sent"`
	Synced bool   `json:"synced"`
}

// Nack is a proxy's rejection of a response.
type Nack struct {
	Type    string    `json:"type"`
	Version string    `json:"version"`
	Message string    `json:"message"`
	Time    time.Time `json:"time"`
}

// Config is the body of GET ConfigPath: the resources the edge serves the
// proxy now, like an Envoy config dump, with every private key replaced
// by Redacted.
type Config struct {
	Proxy     Proxy      `json:"proxy"`
	Resources []Resource `json:"resources"`
}

// Redacted stands for a private key in a config dump.
const Redacted = "[redacted]"

// Resource is one served resource.
type Resource struct {
	Type    string `json:"type"`
	Name    string `json:"name"`
	Version string `json:"version"`
	// Resource is the resource in protobuf's JSON form, with its "@type".
	Resource json.RawMessage `json:"resource"`
}

// Certs is the body of GET CertsPath: the certificates the edge serves the
// proxy over SDS.
type Certs struct {
	Proxy   Proxy    `json:"proxy"`
	Secrets []Secret `json:"secrets"`
}

// Secret is one SDS secret: the proxy's service certificate chain or the
// mesh's trusted roots.
type Secret struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	// Kind is "certificate" (a chain, leaf first) or "trusted-ca" (roots).
	Kind         string        `json:"kind"`
	Certificates []Certificate `json:"certificates"`
}

// Certificate describes one X.509 certificate.
type Certificate struct {
	Subject   string    `json:"subject"`
	Issuer    string    `json:"issuer"`
	Serial    string    `json:"serial"`
	URISANs   []string  `json:"uri_sans,omitempty"`
	DNSSANs   []string  `json:"dns_sans,omitempty"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	IsCA      bool      `json:"is_ca"`
	// SHA256 is the fingerprint of the DER certificate.
	SHA256 string `json:"sha256"`
}

// CertificatesFromPEM describes every CERTIFICATE block of a PEM bundle, in
// order; any other block (a key) is skipped and never described.
func CertificatesFromPEM(b []byte) ([]Certificate, error) {
	var out []Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out, nil
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(out)+1, err)
		}
		sum := sha256.Sum256(c.Raw)
		d := Certificate{Subject: c.Subject.String(), Issuer: c.Issuer.String(), Serial: c.SerialNumber.Text(16),
			DNSSANs: c.DNSNames, NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC(), IsCA: c.IsCA, SHA256: hex.EncodeToString(sum[:])}
		for _, u := range c.URIs {
			d.URISANs = append(d.URISANs, u.String())
		}
		out = append(out, d)
	}
}

// Error is the body of a refusal or failure.
type Error struct {
	Error string `json:"error"`
}
