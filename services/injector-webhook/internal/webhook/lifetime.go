package webhook

import (
	"time"

	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/identity"
)

// SetServiceLifetime sets the lifetime of the service certificates the
// issuer asks for (a proxyless gRPC pod's, in its bootstrap Secret): the
// MeshConfig's spec.certificate.serviceCertValidityDuration, asked with
// clamp_ttl (the CA grants at most its --max-ttl); 0 means the MeshConfig
// names none, and TTL applies as for the xDS client certificates. It
// applies at each certificate's next issue or renewal.
func (c *CAIssuer) SetServiceLifetime(d time.Duration) { c.serviceTTL.Store(int64(max(d, 0))) }

// ServiceLifetime is the lifetime set with SetServiceLifetime.
func (c *CAIssuer) ServiceLifetime() time.Duration { return time.Duration(c.serviceTTL.Load()) }

// signOptions are the lifetime fields of a request for usage u.
func (c *CAIssuer) signOptions(u identity.Usage) caclient.SignOptions {
	if d := c.ServiceLifetime(); u == identity.UsageService && d > 0 {
		return caclient.SignOptions{TTL: d, ClampTTL: true}
	}
	return caclient.SignOptions{TTL: c.TTL}
}
