package webhook

import "testing"

// BenchmarkAdmit is the webhook's own CPU cost per pod: decode, decide,
// patch, bootstrap and Secret build, with a fake issuer and store (no I/O).
func BenchmarkAdmit(b *testing.B) {
	w, _, _ := newWebhook()
	req := request("bookstore", podJSON("bookstore", nil), false)
	b.ReportAllocs()
	for b.Loop() {
		if resp, _ := w.Admit(b.Context(), req); !resp.Allowed {
			b.Fatal(resp.Result.Message)
		}
	}
}
