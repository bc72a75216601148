package osmpolicy

import (
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// RetryGVR is the resource of the Retry kind.
var RetryGVR = GroupVersion.WithResource("retries")

// ParseRetry reads a Retry given as unstructured.
func ParseRetry(u *unstructured.Unstructured) *meshv1.Retry {
	r := reader{}
	out := &meshv1.Retry{Meta: meta(u), ApiVersion: u.GetAPIVersion()}
	if out.ApiVersion == "" {
		out.ApiVersion = GroupVersion.String()
	}
	spec := r.object(u.Object, "", "spec")
	if src := r.object(spec, "spec", "source"); src != nil {
		out.Source = r.subject(src, "spec.source")
	}
	for i, d := range r.list(spec, "spec", "destinations") {
		p := fmt.Sprintf("spec.destinations[%d]", i)
		m, ok := d.(map[string]any)
		if !ok {
			r.bad(p, d, "must be an object")
			out.Destinations = append(out.Destinations, &meshv1.RetrySubject{})
			continue
		}
		out.Destinations = append(out.Destinations, r.subject(m, p))
	}
	if rp := r.object(spec, "spec", "retryPolicy"); rp != nil {
		p := "spec.retryPolicy"
		out.RetryPolicy = &meshv1.RetryPolicySpec{
			RetryOn:                  r.str(rp, p, "retryOn"),
			PerTryTimeout:            r.str(rp, p, "perTryTimeout"),
			NumRetries:               r.integer(rp, p, "numRetries"),
			RetryBackoffBaseInterval: r.str(rp, p, "retryBackoffBaseInterval"),
		}
	}
	out.InvalidFields = r.invalid
	return out
}

// DecodeRetry reads a Retry's JSON (an AdmissionRequest's object).
func DecodeRetry(raw []byte) (*meshv1.Retry, error) {
	// apimachinery's JSON reads whole numbers as int64, as the dynamic
	// client's objects hold them.
	var obj map[string]any
	if err := utiljson.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	return ParseRetry(&unstructured.Unstructured{Object: obj}), nil
}
