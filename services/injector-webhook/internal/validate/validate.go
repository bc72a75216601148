// Package validate is the injector-webhook's validating admission webhook
// for the mesh's policy kinds (Kinds): it refuses an object the
// policy-compiler would reject on its own, naming the object, the field
// path and the reason in the compiler's words (libs/policy,
// libs/meshconfig.Validate). Rules that need another object (a route a
// TrafficTarget names) stay the compiler's: the objects of one apply
// arrive in any order. The webhook reads nothing and writes nothing, so it
// is cheap, safe on dry runs and a denial is the whole of its effect.
package validate

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/openservicemesh/osm/libs/policy"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/webhook"
)

// Options configure a Validator.
type Options struct {
	// Kinds are the kinds validated; nil means Kinds().
	Kinds []Kind
	// MeshConfig is the namespace and name of the MeshConfig the mesh
	// reads; another MeshConfig is validated too, and admitted with a
	// warning that the mesh ignores it.
	MeshConfigNamespace, MeshConfigName string
}

// Validator decides admissions of policy objects.
type Validator struct {
	o     Options
	kinds map[schema.GroupVersionResource]Kind
}

var _ webhook.Admitter = (*Validator)(nil)

// New returns a Validator.
func New(o Options) *Validator {
	if o.Kinds == nil {
		o.Kinds = Kinds()
	}
	v := &Validator{o: o, kinds: make(map[schema.GroupVersionResource]Kind, len(o.Kinds))}
	for _, k := range o.Kinds {
		v.kinds[k.Resource] = k
	}
	return v
}

// Admit validates one AdmissionRequest: a create or update of an object of
// one of the kinds. Anything else is allowed ("skipped"): a webhook
// configuration that sends more than it should must not block it.
func (v *Validator) Admit(_ context.Context, req *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, webhook.Result) {
	res := schema.GroupVersionResource{Group: req.Resource.Group, Version: req.Resource.Version, Resource: req.Resource.Resource}
	k, ok := v.kinds[res]
	if !ok || req.SubResource != "" {
		return allowed(req, "skipped", fmt.Sprintf("%s is not a policy kind this webhook validates", res.String()))
	}
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update {
		return allowed(req, "skipped", fmt.Sprintf("%s of %s is not validated", req.Operation, k.Name))
	}
	name := objectName(req)
	rej, err := k.Check(req.Namespace, name, req.Object.Raw)
	if err != nil {
		msg := fmt.Sprintf("osm policy validator: %s %s/%s cannot be read: %v", k.Name, req.Namespace, name, err)
		return &admissionv1.AdmissionResponse{UID: req.UID, Allowed: false, Result: &metav1.Status{Status: metav1.StatusFailure,
			Message: msg, Reason: metav1.StatusReasonBadRequest, Code: http.StatusBadRequest}}, webhook.Result{Outcome: "denied", Reason: msg}
	}
	if rej != nil {
		return Deny(req, k, name, rej)
	}
	resp, r := allowed(req, "allowed", "")
	if k.Resource == v.meshConfigResource() && v.o.MeshConfigName != "" &&
		(req.Namespace != v.o.MeshConfigNamespace || name != v.o.MeshConfigName) {
		resp.Warnings = []string{fmt.Sprintf("MeshConfig %s/%s is not read by this mesh, which reads %s/%s",
			req.Namespace, name, v.o.MeshConfigNamespace, v.o.MeshConfigName)}
	}
	return resp, r
}

func (v *Validator) meshConfigResource() schema.GroupVersionResource {
	for _, k := range v.o.Kinds {
		if k.Name == "MeshConfig" {
			return k.Resource
		}
	}
	return schema.GroupVersionResource{}
}

// Deny is the refusal of the object name of kind k for rej: status 422
// Invalid, the message the compiler's PolicyStatus carries
// (policy.Verdict), and the field as a cause, which kubectl prints.
func Deny(req *admissionv1.AdmissionRequest, k Kind, name string, rej *policy.Rejection) (*admissionv1.AdmissionResponse, webhook.Result) {
	msg := policy.Verdict(k.Name, req.Namespace, name, rej)
	return &admissionv1.AdmissionResponse{UID: req.UID, Allowed: false, Result: &metav1.Status{
		Status: metav1.StatusFailure, Message: msg, Reason: metav1.StatusReasonInvalid, Code: http.StatusUnprocessableEntity,
		Details: &metav1.StatusDetails{Name: name, Group: k.Resource.Group, Kind: k.Name, Causes: []metav1.StatusCause{{
			Type: metav1.CauseType(rej.Reason), Field: rej.FieldPath, Message: rej.Message,
		}}},
	}}, webhook.Result{Outcome: "denied", Reason: msg}
}

func allowed(req *admissionv1.AdmissionRequest, outcome, reason string) (*admissionv1.AdmissionResponse, webhook.Result) {
	return &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}, webhook.Result{Outcome: outcome, Reason: reason}
}

// objectName is the request's name, or, for a create with generateName,
// the prefix followed by "<generated>".
func objectName(req *admissionv1.AdmissionRequest) string {
	if req.Name != "" {
		return req.Name
	}
	var o struct {
		Metadata struct {
			Name         string `json:"name"`
			GenerateName string `json:"generateName"`
		} `json:"metadata"`
	}
	_ = json.Unmarshal(req.Object.Raw, &o)
	if o.Metadata.Name != "" {
		return o.Metadata.Name
	}
	return o.Metadata.GenerateName + "<generated>"
}
