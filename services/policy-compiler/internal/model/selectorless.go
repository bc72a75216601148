package model

import (
	"fmt"
	"strings"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/policy"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// ServiceAccountsField is the field path of the annotation that declares
// the identities of a Service without a selector.
const ServiceAccountsField = `metadata.annotations["` + layout.AnnotationServiceAccounts + `"]`

// Selectorless reports whether svc is a Service whose endpoints are written
// by hand: no selector, and not of type ExternalName (which has no
// endpoints; see egress.go).
func Selectorless(svc *meshv1.Service) bool {
	return svc != nil && len(svc.GetSelector()) == 0 && svc.GetType() != "ExternalName"
}

// DeclaredIdentities are the identities a selectorless Service nn declares
// in its openservicemesh.io/service-accounts annotation
// ("ns/sa,ns/sa2", each in the Service's namespace), sorted and without
// duplicates. No pod selection tells which certificates its endpoints
// present, so the mesh takes them from there, and refuses the Service (the
// rejection, with its field path) when the annotation is missing or
// malformed. A Service with a selector returns nil, nil: its identities are
// those of its pods.
func DeclaredIdentities(nn NN, svc *meshv1.Service) ([]Identity, *policy.Rejection) {
	if !Selectorless(svc) {
		return nil, nil
	}
	v, ok := svc.GetOsmAnnotations()[layout.AnnotationServiceAccounts]
	if !ok || strings.TrimSpace(v) == "" {
		return nil, &policy.Rejection{
			Reason:    policy.ReasonMissingField,
			FieldPath: ServiceAccountsField,
			Message: fmt.Sprintf("%s is required on a Service without a selector: it names the service accounts (namespace/name, comma-separated) whose certificates its endpoints present",
				ServiceAccountsField),
		}
	}
	var out []Identity
	seen := map[Identity]bool{}
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		ns, name, ok := strings.Cut(item, "/")
		if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			return nil, &policy.Rejection{
				Reason:    policy.ReasonInvalidValue,
				FieldPath: ServiceAccountsField,
				Message:   fmt.Sprintf("%s: %q is not namespace/serviceaccount", ServiceAccountsField, item),
			}
		}
		if ns != nn.Namespace {
			return nil, &policy.Rejection{
				Reason:    policy.ReasonCrossNamespace,
				FieldPath: ServiceAccountsField,
				Message:   fmt.Sprintf("%s: %q is not in the Service's namespace %q", ServiceAccountsField, item, nn.Namespace),
			}
		}
		id := Identity{Namespace: ns, Name: name}
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out, nil
}
