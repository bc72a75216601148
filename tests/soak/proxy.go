package soak

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/xdstest"
)

// The types a simulated proxy subscribes to, in Envoy's order; SDS last,
// by name, as Envoy asks for its two secrets.
var proxyTypes = []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType, resourcev3.SecretType}

// held is one resource a proxy holds.
type held struct {
	version string
	gen     ver // the epoch and generation of version
	res     *anypb.Any
}

// ver orders versions: by mesh epoch, then generation.
type ver struct{ epoch, gen uint64 }

func (v ver) less(o ver) bool { return v.epoch < o.epoch || v.epoch == o.epoch && v.gen < o.gen }

func (v ver) String() string { return fmt.Sprintf("%d:%d", v.epoch, v.gen) }

// proxy is one simulated Envoy: a delta ADS client that keeps its config
// across streams, reconnects when a stream ends (alternating over the
// edges, with a jittered backoff, as Envoy's xDS cluster of several hosts
// would), and sends what it holds as initial_resource_versions. It checks
// every response it gets: versions never go back, its service-cert is its
// own identity's.
type proxy struct {
	idx  int
	id   identity.ID
	node string
	s    *soak

	conns []*grpc.ClientConn // per edge, made on first use

	mu        sync.Mutex
	held      map[string]map[string]held // type → name → what it holds
	serving   bool                       // the current stream delivered its config
	servedAt  time.Time
	edge      int       // the edge of the current stream
	downSince time.Time // when the last serving stream ended
	certAfter time.Time // NotAfter of the held service-cert
	certLeaf  *x509.Certificate
	everUp    bool
	streams   int
	sysTop    map[string]ver // type → highest system version received
}

func newProxy(s *soak, idx int, id identity.ID) *proxy {
	return &proxy{idx: idx, id: id, s: s, node: fmt.Sprintf("soak-%d.%s.%s", idx, id.ServiceAccount, id.Namespace),
		held: map[string]map[string]held{}, conns: make([]*grpc.ClientConn, len(s.edgeAddrs))}
}

// conn is the proxy's connection to edge e: TLS with the identity's
// current xDS client certificate, verifying the edge against the current
// trust bundle, as Envoy's bootstrap does after the injector rewrote it.
func (p *proxy) conn(e int) (*grpc.ClientConn, error) {
	if p.conns[e] != nil {
		return p.conns[e], nil
	}
	tc := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return p.s.certs.current(p.id)
		},
		InsecureSkipVerify: true, // replaced by VerifyConnection
		VerifyConnection:   p.s.verifyEdge,
	}
	cc, err := grpc.NewClient(p.s.edgeAddrs[e], grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 5 * time.Second}))
	if err != nil {
		return nil, err
	}
	p.conns[e] = cc
	return cc, nil
}

// run keeps a stream open until ctx ends.
func (p *proxy) run(ctx context.Context) {
	defer func() {
		for _, cc := range p.conns {
			if cc != nil {
				cc.Close()
			}
		}
	}()
	attempt := p.idx
	wait := time.Duration(0)
	for ctx.Err() == nil {
		if wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait/2 + rand.N(wait/2+1)):
			}
		}
		e := attempt % len(p.s.edgeAddrs)
		attempt++
		served, err := p.stream(ctx, e)
		if ctx.Err() != nil {
			return
		}
		p.s.rec.streamEnded(err)
		if served {
			wait = 0
			continue
		}
		wait = min(max(2*wait, 100*time.Millisecond), 5*time.Second)
	}
}

// stream runs one ADS stream to edge e, until it ends; served says it
// delivered the proxy's config.
func (p *proxy) stream(ctx context.Context, e int) (served bool, err error) {
	cc, err := p.conn(e)
	if err != nil {
		return false, err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	x, err := xdstest.StartProxy(sctx, cc, xdstest.ProxyOptions{
		NodeID: p.node, Delta: true, Types: proxyTypes,
		Names:   map[string][]string{resourcev3.SecretType: {layout.SecretServiceCert, layout.SecretRootCert}},
		Initial: p.initialVersions(),
	})
	if err != nil {
		return false, err
	}
	defer x.Stop()
	for {
		r, err := x.Next(ctx)
		if err != nil {
			if served {
				p.down(time.Now())
			}
			if serr := x.Err(); serr != nil {
				err = serr
			}
			return served, err
		}
		p.apply(r, e)
		// SDS is subscribed last and its secrets are never sent as held,
		// so its first response follows every type's first flush: the
		// stream has delivered the proxy's config.
		if !served && r.TypeURL == resourcev3.SecretType {
			served = true
			p.up(time.Now(), e)
		}
		p.s.edits.observe(p, r.TypeURL)
	}
}

// initialVersions is what the proxy holds, by type, for a new stream;
// none for SDS (see stream).
func (p *proxy) initialVersions() map[string]map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]map[string]string{}
	for t, hs := range p.held {
		if t == resourcev3.SecretType || len(hs) == 0 {
			continue
		}
		m := make(map[string]string, len(hs))
		for n, h := range hs {
			m[n] = h.version
		}
		out[t] = m
	}
	return out
}

func (p *proxy) up(now time.Time, e int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.serving, p.servedAt, p.edge = true, now, e
	p.streams++
	if p.everUp && !p.downSince.IsZero() {
		p.s.rec.gap(p, p.downSince, now)
	}
	p.everUp, p.downSince = true, time.Time{}
}

func (p *proxy) down(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.serving {
		p.serving, p.downSince = false, now
	}
}

// apply records a response the proxy accepted (and ACKed), checking it.
func (p *proxy) apply(r xdstest.Response, edge int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	hs := p.held[r.TypeURL]
	if hs == nil {
		hs = map[string]held{}
		p.held[r.TypeURL] = hs
	}
	if r.TypeURL != resourcev3.SecretType {
		// A response from an edge older than what the proxy holds of the
		// type, or a resource older than the one held, is a regression.
		sys, ok := genOf(r.Version)
		var top ver
		for _, h := range hs {
			if top.less(h.gen) {
				top = h.gen
			}
		}
		if ok && sys.less(top) {
			p.s.rec.regression(fmt.Sprintf("proxy %s: %s response at generation %d from edge %d while holding generation %d", p.node, short(r.TypeURL), sys, edge, top))
		} else if !ok && r.Version != "" {
			p.s.rec.unparsed(r.Version)
		}
		for n, v := range r.Versions {
			g, ok := genOf(v)
			if !ok {
				p.s.rec.unparsed(v)
			}
			if old, had := hs[n]; had && g.less(old.gen) {
				what := fmt.Sprintf("proxy %s: %s %s at version %s from edge %d while holding %s", p.node, short(r.TypeURL), n, v, edge, old.version)
				if contentHash(v) != "" && contentHash(v) == contentHash(old.version) {
					// The same bytes under an older generation: an edge that
					// missed the writes between keeps the generation that
					// first brought them (docs/faults.md, F5).
					p.s.rec.sameContentBack(what)
				} else {
					p.s.rec.regression(what)
				}
			}
		}
		if ok {
			p.s.rec.sysVersion(p, r.TypeURL, sys)
		}
	}
	for n, a := range r.Resources {
		g, _ := genOf(r.Versions[n])
		hs[n] = held{version: r.Versions[n], gen: g, res: a}
		if r.TypeURL == resourcev3.SecretType && n == layout.SecretServiceCert {
			p.checkServiceCert(a, edge)
		}
	}
	for _, n := range r.Removed {
		delete(hs, n)
	}
}

// checkServiceCert counts a service-cert whose URI SAN is not the proxy's
// identity. p.mu is held.
func (p *proxy) checkServiceCert(a *anypb.Any, edge int) {
	leaf, err := serviceLeaf(a)
	if err != nil {
		p.s.rec.wrongIdentity(fmt.Sprintf("proxy %s: unreadable service-cert from edge %d: %v", p.node, edge, err))
		return
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != p.id.String() {
		p.s.rec.wrongIdentity(fmt.Sprintf("proxy %s (%s): service-cert for %v from edge %d", p.node, p.id, leaf.URIs, edge))
	}
	p.certAfter, p.certLeaf = leaf.NotAfter, leaf
}

// serviceCert is the leaf of the service-cert the proxy holds; nil before
// the first.
func (p *proxy) serviceCert() *x509.Certificate {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.certLeaf
}

// rootVersion is the version of the root-cert (the trust bundle) the
// proxy holds.
func (p *proxy) rootVersion() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held[resourcev3.SecretType][layout.SecretRootCert].version
}

// serviceLeaf is the leaf certificate of a service-cert secret.
func serviceLeaf(a *anypb.Any) (*x509.Certificate, error) {
	s := &tlsv3.Secret{}
	if err := a.UnmarshalTo(s); err != nil {
		return nil, err
	}
	block, _ := pem.Decode(s.GetTlsCertificate().GetCertificateChain().GetInlineBytes())
	if block == nil {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

// heldRes returns the resource the proxy holds of typeURL under name.
func (p *proxy) heldRes(typeURL, name string) *anypb.Any {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held[typeURL][name].res
}

// holds reports whether the proxy holds typeURL's name.
func (p *proxy) holds(typeURL, name string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.held[typeURL][name]
	return ok
}

// state is the proxy's serving state, for the samplers.
func (p *proxy) state() (serving bool, edge int, downSince, certAfter time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.serving, p.edge, p.downSince, p.certAfter
}

// genOf is the epoch and generation of a version: the whole of a system
// version ("12", or "<epoch>:12" once the compiler numbers epochs) or the
// part before the dot of a resource version ("12.ab34", "<epoch>:12.ab34").
func genOf(v string) (ver, bool) {
	head, _, _ := strings.Cut(v, ".")
	var out ver
	if e, g, ok := strings.Cut(head, ":"); ok {
		ep, err := strconv.ParseUint(e, 10, 64)
		if err != nil {
			return ver{}, false
		}
		out.epoch, head = ep, g
	}
	g, err := strconv.ParseUint(head, 10, 64)
	out.gen = g
	return out, err == nil
}

// contentHash is the content hash of a resource version, the part after
// the dot; empty when there is none.
func contentHash(v string) string {
	_, h, _ := strings.Cut(v, ".")
	return h
}

// short is the last word of a type URL.
func short(typeURL string) string {
	switch typeURL {
	case resourcev3.ClusterType:
		return "CDS"
	case resourcev3.EndpointType:
		return "EDS"
	case resourcev3.ListenerType:
		return "LDS"
	case resourcev3.RouteType:
		return "RDS"
	case resourcev3.SecretType:
		return "SDS"
	}
	return typeURL
}

// describe says where the proxy is, for an example line.
func (p *proxy) describe() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.serving {
		return fmt.Sprintf("%s (serving on edge %d since %s)", p.node, p.edge, p.s.rec.at(p.servedAt))
	}
	return fmt.Sprintf("%s (without a control plane since %s)", p.node, p.s.rec.at(p.downSince))
}
