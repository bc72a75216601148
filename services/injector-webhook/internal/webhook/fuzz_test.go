package webhook

import (
	"encoding/json"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
)

// FuzzAdmit drives the decode-and-patch path with arbitrary AdmissionReview
// bodies. Nothing may panic (the handler's recover is not in this path, so
// a panic fails the fuzzer), and every patch the webhook returns must apply
// cleanly to the pod it was computed for. The seed corpus is in
// testdata/fuzz/FuzzAdmit; CI runs the fuzzer for 60 seconds.
func FuzzAdmit(f *testing.F) {
	for _, a := range []map[string]string{nil, {"openservicemesh.io/outbound-port-exclusion-list": "6379"}} {
		review := admissionv1.AdmissionReview{Request: request("bookstore", podJSON("bookstore", a), false)}
		b, _ := json.Marshal(review)
		f.Add(b)
	}
	f.Add([]byte(`{"request":{"uid":"x","kind":{"kind":"Pod"},"operation":"CREATE","namespace":"bookstore","object":{"spec":{"containers":[{"name":"a","livenessProbe":{"httpGet":{"port":"http"}}}]}}}}`))
	f.Add([]byte(`{"request":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var review admissionv1.AdmissionReview
		if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
			return
		}
		w, _, _ := newWebhook()
		resp, res := w.Admit(t.Context(), review.Request)
		if resp == nil || res.Outcome == "" {
			t.Fatalf("no decision for %q", body)
		}
		if !resp.Allowed || len(resp.Patch) == 0 {
			return
		}
		patch, err := jsonpatch.DecodePatch(resp.Patch)
		if err != nil {
			t.Fatalf("undecodable patch %s: %v", resp.Patch, err)
		}
		if _, err := patch.Apply(review.Request.Object.Raw); err != nil {
			t.Fatalf("patch %s does not apply to %s: %v", resp.Patch, review.Request.Object.Raw, err)
		}
	})
}
