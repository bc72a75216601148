package compile

import (
	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
)

// Selectorless services (no spec.selector, EndpointSlices written by hand)
// compile from their EndpointSlices like any service. No pod selection
// tells which identities their endpoints run as, so the Service declares
// them in the openservicemesh.io/service-accounts annotation
// (model.DeclaredIdentities); its clusters' SAN match names those, and
// TrafficTargets reach it through them. Without a valid annotation the
// Service is refused: a PolicyStatus rejection naming the annotation's
// field path (an Event on the Service, osm verify's rejected policies),
// and no resource at all, so no cluster accepts any certificate for it.
// Only selectorless Services get a verdict.

// selectorlessRejection is the refusal of a selectorless Service (nn, svc)
// whose annotation is missing or malformed; nil for any other Service.
func selectorlessRejection(nn model.NN, svc *meshv1.Service) *Rejection {
	_, rej := model.DeclaredIdentities(nn, svc)
	return rej
}

// reviewService judges the Service nn when it is selectorless, and adds
// the verdict to d when it changed; it forgets the verdict of a Service
// that is gone, outside the mesh, or no longer selectorless.
func (e *Engine) reviewService(nn model.NN, d *Delta) {
	svc := e.m.Service(nn)
	if !model.Selectorless(svc) || !e.m.Meshed(nn.Namespace) {
		e.pol.forget(layout.KindService, nn)
		return
	}
	if st := e.pol.judge(layout.KindService, nn, "v1", svc.GetMeta(), selectorlessRejection(nn, svc), nil); st != nil {
		d.Statuses = append(d.Statuses, st)
	}
}
