package edge

import (
	"time"

	"github.com/sirupsen/logrus"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/xds-edge/internal/meshcfg"
	"github.com/openservicemesh/osm/services/xds-edge/internal/sds"
)

// MinCertLifetime is the shortest service certificate lifetime the edge
// asks for a MeshConfig: a shorter one is raised to it (and logged), so
// that a typo ("10s") cannot make every identity's certificate renew
// every few seconds. It equals --cert-ttl's minimum.
const MinCertLifetime = time.Minute

// awaitMeshConfig is how long the first service certificates wait for the
// MeshConfig's lifetime after the edge starts (sds.Options.AwaitLifetime);
// after it they are issued with the default and follow the MeshConfig at
// their renewal.
const awaitMeshConfig = 10 * time.Second

// newMeshConfigFollower follows the MeshConfig d names and gives the
// issuer its certificate lifetime.
func newMeshConfigFollower(d Deps, issuer *sds.Issuer) (*meshcfg.Follower, error) {
	log := d.Log.WithField("component", "meshconfig")
	return meshcfg.New(meshcfg.Options{
		Conn: d.Conn, Namespace: d.MeshConfigNamespace, Name: d.MeshConfigName, Log: log,
		Apply: func(mc *meshv1.MeshConfig) {
			if d, ok := certLifetime(mc, log); ok {
				issuer.SetLifetime(d)
			}
		},
	})
}

// certLifetime is the service certificate lifetime mc names: 0 when it
// names none (or there is no MeshConfig), at least MinCertLifetime. ok is
// false when the field is invalid (the watcher could not parse it, or
// it is not positive): the last good lifetime stays, while the validating
// webhook and the compiler's PolicyStatus report the field.
func certLifetime(mc *meshv1.MeshConfig, log *logrus.Entry) (time.Duration, bool) {
	for _, f := range mc.GetInvalidFields() {
		if f.GetFieldPath() == fieldCertValidity {
			log.WithFields(logrus.Fields{"field": fieldCertValidity, "value": f.GetValue(), "message": f.GetMessage()}).
				Warn("meshconfig certificate validity does not parse; keeping the last lifetime")
			return 0, false
		}
	}
	d := mc.GetCertificate().GetServiceCertValidityDuration()
	switch {
	case d == nil:
		return 0, true
	case d.AsDuration() <= 0:
		log.WithFields(logrus.Fields{"field": fieldCertValidity, "value": d.AsDuration().String()}).
			Warn("meshconfig certificate validity is not positive; keeping the last lifetime")
		return 0, false
	case d.AsDuration() < MinCertLifetime:
		log.WithFields(logrus.Fields{"field": fieldCertValidity, "value": d.AsDuration().String(), "lifetime": MinCertLifetime.String()}).
			Warn("meshconfig certificate validity is under the edge's minimum; raised to it")
		return MinCertLifetime, true
	}
	return d.AsDuration(), true
}

// fieldCertValidity is libs/meshconfig.FieldCertValidity, which the edge
// does not import (it brings Kubernetes packages).
const fieldCertValidity = "spec.certificate.serviceCertValidityDuration"
