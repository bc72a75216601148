package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sirupsen/logrus"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// queued is a SecretStore that returns at once, as the real writer does;
// the benchmarks measure the admission path only.
type queued struct{}

func (queued) Store(context.Context, *corev1.Secret, string) error { return nil }

// BenchmarkAdmit is the webhook's own CPU cost per pod: decode, decide,
// patch, bootstrap render and Secret hand-over (admission issues nothing).
func BenchmarkAdmit(b *testing.B) {
	w, _, _ := newWebhook()
	w.o.Secrets = queued{}
	req := request("bookstore", podJSON("bookstore", nil), false)
	b.ReportAllocs()
	for b.Loop() {
		if resp, _ := w.Admit(b.Context(), req); !resp.Allowed {
			b.Fatal(resp.Result.Message)
		}
	}
}

// BenchmarkHandler adds the HTTP layer: the AdmissionReview decoded from
// the body and the response encoded.
func BenchmarkHandler(b *testing.B) {
	w, _, _ := newWebhook()
	log := logrus.New()
	log.SetOutput(io.Discard)
	w.o.Secrets = queued{}
	h := &Handler{Admit: w, Log: logrus.NewEntry(log)}
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request:  request("bookstore", podJSON("bookstore", nil), false)})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, "/mutate-pod", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		h.ServeHTTP(rec, r)
		if rec.Code != http.StatusOK {
			b.Fatal(rec.Code)
		}
	}
}
