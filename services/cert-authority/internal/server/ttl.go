package server

import (
	"time"

	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
)

// signTTL is the lifetime a Sign request asks the workload policy for
// (pki.Policy.TTL resolves it: unset is --default-ttl, over --max-ttl is
// refused), and the lifetime it asked. A request that sets clamp_ttl and
// asks for more than --max-ttl asks for --max-ttl instead; Sign then logs
// the clamp once the certificate is signed.
func (s *Server) signTTL(req *cav1.SignRequest) (ttl, asked time.Duration) {
	asked = ttlOf(req.GetTtl().AsDuration(), req.GetTtl() != nil)
	if req.GetClampTtl() && asked > s.wl.MaxTTL {
		return s.wl.MaxTTL, asked
	}
	return asked, asked
}
