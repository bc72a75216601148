package service

import (
	"time"

	"github.com/sirupsen/logrus"

	"github.com/openservicemesh/osm/libs/caclient"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/webhook"
)

// lifetimeSetter takes the service certificate lifetime the MeshConfig
// names: the bootstrap certificates' issuer, for proxyless gRPC pods.
type lifetimeSetter interface {
	SetServiceLifetime(d time.Duration)
	ServiceLifetime() time.Duration
}

var _ lifetimeSetter = (*webhook.CAIssuer)(nil)

// applyLifetime gives w.lifetime the lifetime of spec.certificate.
// serviceCertValidityDuration of mc (nil: no MeshConfig, so none). An
// invalid value keeps the last lifetime; it is applied independently of
// the injection settings, which a MeshConfig invalid elsewhere leaves as
// they were.
func (w *meshConfigWatch) applyLifetime(mc *meshv1.MeshConfig) {
	if w.lifetime == nil {
		return
	}
	d, raised, err := caclient.ServiceLifetime(mc)
	if err != nil {
		w.log.WithError(err).WithField("field", caclient.FieldServiceCertValidity).Warn("meshconfig certificate validity is invalid; keeping the last service certificate lifetime")
		return
	}
	if raised {
		w.log.WithFields(logrus.Fields{"field": caclient.FieldServiceCertValidity, "lifetime": d.String()}).Warn("meshconfig certificate validity is under the minimum; raised to it")
	}
	if w.lifetime.ServiceLifetime() != d {
		w.log.WithField("lifetime", d.String()).Info("proxyless service certificate lifetime set; it applies at each certificate's next issue or renewal")
	}
	w.lifetime.SetServiceLifetime(d)
}
