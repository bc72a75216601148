package soak

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/layout"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/tests/stack"
)

// certs plays the injector's part for the simulated proxies: it keeps
// each identity's xDS client certificate (what a pod's bootstrap Secret
// holds), signed by the cert-authority with the soak's TTL and renewed at
// half of it, as the injector renews bootstrap Secrets; and it keeps the
// trust bundle the proxies verify the edges with, re-read from KV
// mesh-trust as the injector rewrites ca.crt.
type certs struct {
	m   *stack.Mesh
	ttl time.Duration
	ids []identity.ID

	mu       sync.Mutex
	byID     map[identity.ID]*tls.Certificate
	injector *caclient.Issued // the injector control-plane certificate Sign is called with
	roots    *x509.CertPool
	bundle   *meshv1.TrustBundle
	failures int
}

func newCerts(m *stack.Mesh, ttl time.Duration, ids []identity.ID) *certs {
	return &certs{m: m, ttl: ttl, ids: ids, byID: map[identity.ID]*tls.Certificate{}}
}

// current is id's certificate now.
func (c *certs) current(id identity.ID) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cert := c.byID[id]; cert != nil {
		return cert, nil
	}
	return nil, fmt.Errorf("no xDS client certificate for %s yet", id)
}

// pool is the trust bundle's roots now.
func (c *certs) pool() *x509.CertPool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.roots
}

// renewAll signs a new certificate for every identity.
func (c *certs) renewAll(ctx context.Context) error {
	client, closeConn, err := c.client(ctx)
	if err != nil {
		return err
	}
	defer closeConn()
	for _, id := range c.ids {
		is, err := caclient.Sign(ctx, client, id, identity.UsageXDSClient, c.ttl)
		if err != nil {
			c.mu.Lock()
			c.injector = nil // perhaps no longer trusted after a root rotation: bootstrap again
			c.mu.Unlock()
			return fmt.Errorf("sign the xDS client certificate of %s: %w", id, err)
		}
		c.mu.Lock()
		c.byID[id] = &is.Pair
		c.mu.Unlock()
	}
	return nil
}

// client connects to the CA with the injector's control-plane certificate,
// bootstrapping one when there is none or it is past half its life.
func (c *certs) client(ctx context.Context) (cav1.CertificateAuthorityServiceClient, func(), error) {
	c.mu.Lock()
	inj := c.injector
	c.mu.Unlock()
	if inj == nil || time.Until(inj.NotAfter) < c.ttl/2 {
		var err error
		if inj, err = c.m.Bootstrap(ctx, cav1.ComponentRole_COMPONENT_ROLE_INJECTOR_WEBHOOK); err != nil {
			return nil, nil, err
		}
		c.mu.Lock()
		c.injector = inj
		c.mu.Unlock()
	}
	conn, err := c.m.DialCA(&inj.Pair)
	if err != nil {
		return nil, nil, err
	}
	return cav1.NewCertificateAuthorityServiceClient(conn), func() { conn.Close() }, nil
}

// keepRenewed renews every identity's certificate at half the TTL, retrying
// every 2 s after a failure, until ctx ends.
func (c *certs) keepRenewed(ctx context.Context) {
	for {
		next := c.ttl / 2
		if err := c.renewAll(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			c.mu.Lock()
			c.failures++
			c.mu.Unlock()
			next = 2 * time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(next):
		}
	}
}

// readBundle reads the trust bundle from KV mesh-trust over nc.
func (c *certs) readBundle(ctx context.Context, nc *stack.NATS) error {
	trust, err := nc.Admin().Bucket(ctx, bus.BucketTrust)
	if err != nil {
		return err
	}
	b := &meshv1.TrustBundle{}
	if _, err := trust.Get(ctx, layout.BundleKey, b); err != nil {
		return err
	}
	pool, err := caclient.RootPool(b)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.bundle, c.roots = b, pool
	c.mu.Unlock()
	return nil
}

// keepBundle re-reads the trust bundle every second until ctx ends; nc
// gives the current NATS server (a restart replaces it).
func (c *certs) keepBundle(ctx context.Context, nc func() *stack.NATS) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_ = c.readBundle(rctx, nc())
		cancel()
	}
}

// rootCount is the number of roots in the bundle the proxies trust.
func (c *certs) rootCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.bundle.GetRoots())
}

// edgeID is the URI SAN an xds-edge's serving certificate carries.
var edgeID = identity.ControlPlaneURI(stack.TrustDomain, identity.RoleXDSEdge).String()

// verifyEdge verifies an edge as Envoy does, against the current bundle.
func (s *soak) verifyEdge(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the edge sent no certificate")
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: s.certs.pool(), Intermediates: inter}); err != nil {
		s.rec.tlsError(err)
		return err
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != edgeID {
		return fmt.Errorf("edge identity %v, want %s", leaf.URIs, edgeID)
	}
	return nil
}

// bundleNow is the trust bundle last read.
func (c *certs) bundleNow() *meshv1.TrustBundle {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bundle
}
