package edge

import (
	"time"

	"github.com/sirupsen/logrus"

	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/meshcfg"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/xds-edge/internal/sds"
	"github.com/openservicemesh/osm/services/xds-edge/internal/xds"
)

// MinCertLifetime is the shortest service certificate lifetime the edge
// asks for a MeshConfig (caclient.MinServiceLifetime): a shorter one is
// raised to it (and logged). It equals --cert-ttl's minimum.
const MinCertLifetime = caclient.MinServiceLifetime

// awaitMeshConfig is how long the first service certificates wait for the
// MeshConfig's lifetime after the edge starts (sds.Options.AwaitLifetime);
// after it they are issued with the default and follow the MeshConfig at
// their renewal.
const awaitMeshConfig = 10 * time.Second

// newMeshConfigFollower follows the MeshConfig d names: it gives the
// issuer (nil: none) its certificate lifetime and srv its stream limit.
func newMeshConfigFollower(d Deps, issuer *sds.Issuer, srv *xds.Server) (*meshcfg.Follower, error) {
	log := d.Log.WithField("component", "meshconfig")
	return meshcfg.New(meshcfg.Options{
		Conn: d.Conn, Namespace: d.MeshConfigNamespace, Name: d.MeshConfigName, Log: log,
		Apply: func(mc *meshv1.MeshConfig) {
			if issuer != nil {
				if d, ok := certLifetime(mc, log); ok {
					issuer.SetLifetime(d)
				}
			}
			applyMaxStreams(srv, mc, log)
			if d.Observe != nil {
				d.Observe(mc)
			}
		},
	})
}

// applyMaxStreams gives srv the MeshConfig's
// spec.sidecar.maxDataPlaneConnections (none, or no MeshConfig: no limit),
// logging a change.
func applyMaxStreams(srv *xds.Server, mc *meshv1.MeshConfig, log *logrus.Entry) {
	n := max(int(mc.GetSidecar().GetMaxDataPlaneConnections()), 0)
	if old := srv.MaxStreams(); old != n {
		srv.SetMaxStreams(n)
		log.WithFields(logrus.Fields{"field": "spec.sidecar.maxDataPlaneConnections", "old": old, "new": n}).
			Info("xds stream limit of this edge replica set from the meshconfig (0: none)")
	}
}

// certLifetime is the service certificate lifetime mc names
// (caclient.ServiceLifetime): 0 when it names none (or there is no
// MeshConfig). ok is false when the field is invalid: the last good
// lifetime stays, while the validating webhook and the compiler's
// PolicyStatus report the field.
func certLifetime(mc *meshv1.MeshConfig, log *logrus.Entry) (time.Duration, bool) {
	d, raised, err := caclient.ServiceLifetime(mc)
	switch {
	case err != nil:
		log.WithError(err).WithField("field", caclient.FieldServiceCertValidity).Warn("meshconfig certificate validity is invalid; keeping the last lifetime")
		return 0, false
	case raised:
		log.WithFields(logrus.Fields{"field": caclient.FieldServiceCertValidity, "value": mc.GetCertificate().GetServiceCertValidityDuration().AsDuration().String(), "lifetime": d.String()}).
			Warn("meshconfig certificate validity is under the minimum; raised to it")
	}
	return d, true
}
