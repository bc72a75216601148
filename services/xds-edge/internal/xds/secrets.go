package xds

import (
	"bytes"
	"context"
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/sirupsen/logrus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/xds-edge/internal/pool"
)

const secretType = resourcev3.SecretType

// SecretSource obtains the service certificates of the identities with
// streams on this edge. The server acquires an identity when a stream of it
// opens and releases it when the stream closes; the source hands
// certificates back through Server.SetCertificate.
type SecretSource interface {
	Acquire(id identity.ID)
	Release(id identity.ID)
}

// secretState holds the secret resources, each wrapped once: the trust
// bundle shared by every stream, one service certificate per identity.
type secretState struct {
	root  *pool.Resource
	certs map[string]*pool.Resource // by identity
	// The IDs of the two names (see pool.ID); every certificate and
	// bundle gets a new revision of its ID (pool.NewRev).
	certID, rootID pool.ID
}

func secretResource(s *tlsv3.Secret, version string) (*pool.Resource, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("marshal secret %s: %w", s.GetName(), err)
	}
	a := &anypb.Any{TypeUrl: secretType, Value: b}
	return &pool.Resource{TypeURL: secretType, Name: s.GetName(), Version: version, Any: a,
		Delta: &discovery.Resource{Name: s.GetName(), Version: version, Resource: a}}, nil
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

// SetCertificate installs (or renews) the service certificate of id and
// pushes it to that identity's streams, and to no other.
func (s *Server) SetCertificate(id identity.ID, chainPEM, keyPEM []byte, serial string) error {
	r, err := secretResource(&tlsv3.Secret{Name: layout.SecretServiceCert, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: inline(chainPEM), PrivateKey: inline(keyPEM),
	}}}, serial)
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.sec.certs == nil {
		s.sec.certs = map[string]*pool.Resource{}
	}
	r.ID, r.Rev = s.sec.certID, s.pool.NewRev(s.sec.certID)
	s.sec.certs[id.String()] = r
	s.mu.Unlock()
	for _, c := range s.groupConns(pool.GroupID(id.Namespace, id.ServiceAccount), func(c *conn) bool { return c.id == id }) {
		c.secretChanged(s.sec.certID)
	}
	return nil
}

// DropCertificate forgets the service certificate of id (its last proxy
// left this edge a while ago).
func (s *Server) DropCertificate(id identity.ID) {
	s.mu.Lock()
	delete(s.sec.certs, id.String())
	s.mu.Unlock()
}

// SetTrustBundle installs the mesh's trust bundle as the root-cert secret
// and pushes it to every stream subscribed to secrets.
func (s *Server) SetTrustBundle(b *meshv1.TrustBundle) error {
	var roots bytes.Buffer
	for _, r := range b.GetRoots() {
		roots.Write(bytes.TrimSpace(r.GetCertificatePem()))
		roots.WriteByte('\n')
	}
	if roots.Len() == 0 {
		return fmt.Errorf("trust bundle %q has no root", b.GetVersion())
	}
	r, err := secretResource(&tlsv3.Secret{Name: layout.SecretRootCert, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: inline(roots.Bytes()),
	}}}, b.GetVersion())
	if err != nil {
		return err
	}
	s.mu.Lock()
	r.ID, r.Rev = s.sec.rootID, s.pool.NewRev(s.sec.rootID)
	s.sec.root = r
	s.mu.Unlock()
	for _, c := range s.conns(func(*conn) bool { return true }) {
		c.secretChanged(s.sec.rootID)
	}
	return nil
}

// lookupLocked returns the resource typeURL/name as the stream's identity may
// see it, or nil. s.mu is held.
func (s *Server) lookupLocked(c *conn, typeURL, name string) *pool.Resource {
	if typeURL != secretType {
		return s.pool.Get(c.groupID(), typeURL, name)
	}
	switch name {
	case layout.SecretServiceCert:
		return s.sec.certs[c.id.String()]
	case layout.SecretRootCert:
		return s.sec.root
	}
	return nil
}

// viewLocked returns the stream's resources of typeURL, limited to the
// subscription (sorted IDs; nil: all). s.mu is held.
func (s *Server) viewLocked(c *conn, typeURL string, sub []pool.ID) []*pool.Resource {
	if typeURL != secretType {
		return s.pool.View(c.groupID(), typeURL, sub)
	}
	var out []*pool.Resource
	for _, n := range []string{layout.SecretRootCert, layout.SecretServiceCert} {
		if r := s.lookupLocked(c, typeURL, n); r != nil && pool.Subscribed(sub, r.ID) {
			out = append(out, r)
		}
	}
	return out
}

// viewIDsLocked returns the IDs of every resource of typeURL the stream's
// identity may see. s.mu is held.
func (s *Server) viewIDsLocked(c *conn, typeURL string) []pool.ID {
	view := s.viewLocked(c, typeURL, nil)
	out := make([]pool.ID, len(view))
	for i, r := range view {
		out[i] = r.ID
	}
	return out
}

// checkSecretNames counts and logs requests for secrets outside the
// stream's own: another identity's certificate is never served.
func (s *Server) checkSecretNames(ctx context.Context, c *conn, names []string) {
	for _, n := range names {
		if n == layout.SecretServiceCert || n == layout.SecretRootCert || n == "*" {
			continue
		}
		s.stats.secretRefusals.Add(1)
		s.metrics.secretRefusals.Add(ctx, 1)
		s.log.WithContext(ctx).WithFields(logrus.Fields{"identity": c.id.String(), "secret": n}).Warn("refused a secret outside the proxy's identity")
	}
}
