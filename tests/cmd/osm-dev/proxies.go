package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	sotwclient "github.com/envoyproxy/go-control-plane/pkg/client/sotw/v3"
	"google.golang.org/grpc"

	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/tests/stack"
)

// xDS type URLs the simulated proxies subscribe to.
var proxyTypes = []struct{ short, url string }{
	{"CDS", "type.googleapis.com/envoy.config.cluster.v3.Cluster"},
	{"RDS", "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"},
	{"SDS", "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"},
}

// proxy is one simulated sidecar: go-control-plane's ADS client with a
// workload certificate, as the injector's bootstrap would give Envoy.
type proxy struct {
	id   identity.ID
	node string
	conn *grpc.ClientConn

	mu       sync.Mutex
	received map[string]int
	acked    map[string]string // from the edge's ProxyStatus
	clusters []string
	routes   []string
	certSAN  string
}

// startProxies connects one simulated proxy per identity to the mesh's
// edge, each with a workload certificate from the CA. nodes names the
// node id of an identity's proxy: the UUID the injector gave the demo pod
// whose sidecar it stands in for, so that the osm CLI finds it by its
// pod; an identity without one gets osm-dev-<namespace>-<name>.
func startProxies(ctx context.Context, m *stack.Mesh, ids []identity.ID, nodes map[identity.ID]string) ([]*proxy, error) {
	var out []*proxy
	for _, id := range ids {
		cert, err := m.WorkloadCert(ctx, id, time.Hour)
		if err != nil {
			return nil, err
		}
		conn, err := m.DialEdge(cert.Pair)
		if err != nil {
			return nil, err
		}
		node := nodes[id]
		if node == "" {
			node = "osm-dev-" + id.Namespace + "-" + id.ServiceAccount
		}
		p := &proxy{id: id, node: node, conn: conn, received: map[string]int{}, acked: map[string]string{}}
		out = append(out, p)
	}
	return out, nil
}

// run subscribes to each type and keeps the latest state, reporting each
// new version on changes when it is not nil.
func (p *proxy) run(ctx context.Context, changes io.Writer, first *sync.WaitGroup) {
	node := &corev3.Node{Id: p.nodeID(), Cluster: p.id.ServiceAccount + "." + p.id.Namespace}
	for _, typ := range proxyTypes {
		first.Add(1)
		go func() {
			c := sotwclient.NewADSClient(ctx, node, typ.url)
			if err := c.InitConnect(p.conn); err != nil {
				first.Done()
				return
			}
			initial := true
			for ctx.Err() == nil {
				resp, err := c.Fetch()
				if err != nil {
					if initial {
						first.Done()
					}
					return
				}
				p.apply(typ.short, resp.Resources)
				_ = c.Ack()
				if initial {
					first.Done()
					initial = false
				} else if changes != nil {
					fmt.Fprintf(changes, "osm-dev: proxy %s/%s received %s update %d: %s\n", p.id.Namespace, p.id.ServiceAccount, typ.short, p.updates(typ.short), p.summary(typ.short))
				}
			}
		}()
	}
}

func (p *proxy) updates(typ string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.received[typ]
}

// nodeID is the proxy's node id.
func (p *proxy) nodeID() string { return p.node }

// setAcked records the versions the edge says the proxy acknowledged (each
// of the proxy's streams reports its own types).
func (p *proxy) setAcked(v map[string]string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, ver := range v {
		p.acked[k] = ver
	}
}

func shortVersion(v string) string {
	if len(v) > 14 {
		return v[:14]
	}
	return v
}

func (p *proxy) apply(typ string, rs []*anypbAny) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.received[typ]++
	switch typ {
	case "CDS":
		p.clusters = nil
	case "RDS":
		p.routes = nil
	}
	for _, a := range rs {
		m, err := a.UnmarshalNew()
		if err != nil {
			continue
		}
		switch r := m.(type) {
		case *clusterv3.Cluster:
			p.clusters = append(p.clusters, r.GetName())
		case *routev3.RouteConfiguration:
			p.routes = append(p.routes, splits(r)...)
		case *tlsv3.Secret:
			if r.GetName() == layout.SecretServiceCert {
				p.certSAN = leafSAN(r.GetTlsCertificate().GetCertificateChain().GetInlineBytes())
			}
		}
	}
	sort.Strings(p.clusters)
	sort.Strings(p.routes)
}

// splits describes the weighted routes of a route configuration.
func splits(rc *routev3.RouteConfiguration) []string {
	var out []string
	seen := map[string]bool{}
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			wc := r.GetRoute().GetWeightedClusters()
			if wc == nil {
				continue
			}
			var parts []string
			for _, c := range wc.GetClusters() {
				parts = append(parts, fmt.Sprintf("%s=%d", strings.TrimSuffix(c.GetName(), "|14001"), c.GetWeight().GetValue()))
			}
			s := strings.Join(parts, " ")
			if !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
	}
	return out
}

func (p *proxy) summary(typ string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch typ {
	case "CDS":
		return "clusters " + orNone(p.clusters)
	case "RDS":
		return "splits " + orNone(p.routes)
	}
	return "service-cert " + p.certSAN
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "(none)"
	}
	return strings.Join(s, ", ")
}

// rows describes the proxy for the report.
func (p *proxy) rows() []row {
	p.mu.Lock()
	defer p.mu.Unlock()
	name := "proxy " + p.id.Namespace + "/" + p.id.ServiceAccount
	var vs []string
	for _, t := range proxyTypes {
		if v, ok := p.acked[t.url]; ok {
			vs = append(vs, t.short+" "+shortVersion(v))
		}
	}
	return []row{
		{name, "reaches " + orNone(p.clusters)},
		{name, "splits " + orNone(p.routes)},
		{name, "edge recorded ACKs: " + orNone(vs)},
		{name, "service-cert " + p.certSAN},
	}
}

// leafSAN is the URI SAN of the first certificate of a PEM chain.
func leafSAN(chain []byte) string {
	block, _ := pemDecode(chain)
	if block == nil {
		return "(none)"
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil || len(c.URIs) == 0 {
		return "(none)"
	}
	return c.URIs[0].String()
}
