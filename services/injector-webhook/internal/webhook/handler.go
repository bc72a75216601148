package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"time"

	"github.com/sirupsen/logrus"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DefaultMaxBody is the largest AdmissionReview the handler reads.
const DefaultMaxBody = 1 << 20

// Admitter decides one admission.
type Admitter interface {
	Admit(ctx context.Context, req *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, Result)
}

var _ Admitter = (*Webhook)(nil)

// Handler serves AdmissionReview over HTTP(S). It is hardened against bad
// input: bodies over MaxBody get 413, a wrong Content-Type 415, malformed
// JSON or a missing request a denial with a message, and a panic anywhere
// below becomes a denial and a log line, never a crash.
type Handler struct {
	Admit   Admitter
	Log     *logrus.Entry
	MaxBody int64
	// Observe, when set, is told each admission's outcome and duration.
	Observe func(outcome string, d time.Duration)
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	outcome := "error"
	defer func() {
		if h.Observe != nil {
			h.Observe(outcome, time.Since(start))
		}
	}()
	if r.Method != http.MethodPost {
		http.Error(w, "admission reviews are POSTed", http.StatusMethodNotAllowed)
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		http.Error(w, fmt.Sprintf("Content-Type %q: want application/json", r.Header.Get("Content-Type")), http.StatusUnsupportedMediaType)
		return
	}
	limit := h.MaxBody
	if limit <= 0 {
		limit = DefaultMaxBody
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, fmt.Sprintf("admission review over %d bytes", limit), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
		return
	}
	review, res := h.review(r.Context(), body)
	outcome = res.Outcome
	out, err := json.Marshal(review)
	if err != nil {
		http.Error(w, "encode response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

// review decodes and decides; every path returns a well-formed review.
func (h *Handler) review(ctx context.Context, body []byte) (review *admissionv1.AdmissionReview, res Result) {
	review = &admissionv1.AdmissionReview{TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"}}
	var in admissionv1.AdmissionReview
	defer func() {
		if p := recover(); p != nil {
			h.Log.WithContext(ctx).WithField("panic", fmt.Sprint(p)).Error("admission panicked")
			uid := ""
			if in.Request != nil {
				uid = string(in.Request.UID)
			}
			review.Response, res = deny(uid, "osm injector: internal error")
		}
	}()
	if err := json.Unmarshal(body, &in); err != nil {
		review.Response, res = deny("", fmt.Sprintf("osm injector: malformed admission review: %v", err))
		return review, res
	}
	if in.Request == nil {
		review.Response, res = deny("", "osm injector: the admission review has no request")
		return review, res
	}
	review.Response, res = h.Admit.Admit(ctx, in.Request)
	review.Response.UID = in.Request.UID
	log := h.Log.WithContext(ctx).WithFields(logrus.Fields{
		"namespace": in.Request.Namespace, "name": in.Request.Name, "uid": in.Request.UID,
		"outcome": res.Outcome, "reason": res.Reason, "dry_run": in.Request.DryRun != nil && *in.Request.DryRun,
	})
	if res.Outcome == "denied" {
		log.Warn("admission denied")
	} else {
		log.Debug("admission decided")
	}
	return review, res
}
