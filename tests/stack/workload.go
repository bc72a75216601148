package stack

import (
	"context"
	"fmt"
	"time"

	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/identity"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
)

// ServiceCert signs a workload's service (mTLS) certificate of ttl for id,
// as an xds-edge does for its proxies: over a connection authenticated with
// an edge control-plane certificate, bootstrapped for this call with the
// dev bootstrap token. A proxyless workload's certificate provider files
// hold such a certificate.
func (m *Mesh) ServiceCert(ctx context.Context, id identity.ID, ttl time.Duration) (*caclient.Issued, error) {
	boot, err := m.Bootstrap(ctx, cav1.ComponentRole_COMPONENT_ROLE_XDS_EDGE)
	if err != nil {
		return nil, err
	}
	conn, err := m.DialCA(&boot.Pair)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	issued, err := caclient.Sign(ctx, cav1.NewCertificateAuthorityServiceClient(conn), id, identity.UsageService, ttl)
	if err != nil {
		return nil, fmt.Errorf("sign for %s: %w", id, err)
	}
	return issued, nil
}
