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
// Only selectorless Services, and headless ones sharing an endpoint
// address with another (headless.go), get a verdict.

// selectorlessRejection is the refusal of a selectorless Service (nn, svc)
// whose annotation is missing or malformed; nil for any other Service.
func selectorlessRejection(nn model.NN, svc *meshv1.Service) *Rejection {
	_, rej := model.DeclaredIdentities(nn, svc)
	return rej
}

// reviewService judges the Service nn when it is selectorless or one of its
// headless ports lost an address to another Service (headless.go), and
// adds the verdict to d when it changed; it forgets the verdict of a
// Service that is gone, outside the mesh, or neither. A headless Service
// whose warning cleared is judged accepted once, then forgotten.
func (e *Engine) reviewService(nn model.NN, d *Delta) {
	svc := e.m.Service(nn)
	if svc == nil || !e.m.Meshed(nn.Namespace) {
		e.pol.forget(layout.KindService, nn)
		return
	}
	selectorless := model.Selectorless(svc)
	rej := selectorlessRejection(nn, svc)
	var warn *Rejection
	if rej == nil {
		warn = e.headlessWarning(nn, svc)
	}
	if !selectorless && warn == nil && !e.pol.judged(layout.KindService, nn) {
		return
	}
	if st := e.pol.judge(layout.KindService, nn, "v1", svc.GetMeta(), rej, warn); st != nil {
		d.Statuses = append(d.Statuses, st)
	}
	if !selectorless && warn == nil {
		e.pol.forget(layout.KindService, nn)
	}
}
