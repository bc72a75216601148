package command

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestNewestRejectionsSkipsWarnings: an object whose newest Warning Event
// of the smi-watcher is an acceptance with a warning is not rejected, even
// after an older rejection; a rejection newer than a warning is.
func TestNewestRejectionsSkipsWarnings(t *testing.T) {
	at := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	ev := func(kind, name, reason, msg string, after time.Duration) corev1.Event {
		return corev1.Event{
			InvolvedObject: corev1.ObjectReference{APIVersion: "policy.openservicemesh.io/v1alpha1", Kind: kind, Namespace: "app", Name: name},
			Type:           corev1.EventTypeWarning, Reason: reason, Message: msg,
			Source:        corev1.EventSource{Component: watcherEventSource},
			LastTimestamp: metav1.NewTime(at.Add(after)),
		}
	}
	const (
		warned   = "Retry app/%s accepted with a warning: spec.retryPolicy.retryOn: 5xx dropped for proxyless gRPC clients of ServiceAccount app/buyer, which retry on unavailable only (generation 2)"
		rejected = `Retry app/%s rejected: spec.retryPolicy.retryOn: unknown retry condition "sometimes" (generation 1)`
	)
	got := newestRejections([]corev1.Event{
		ev("Retry", "fixed", "InvalidRetryOn", fmt.Sprintf(rejected, "fixed"), 0),
		ev("Retry", "fixed", "RetryOnIgnoredByProxylessGRPC", fmt.Sprintf(warned, "fixed"), time.Second),
		ev("Retry", "warned", "RetryOnIgnoredByProxylessGRPC", fmt.Sprintf(warned, "warned"), 0),
		ev("Retry", "broken", "RetryOnIgnoredByProxylessGRPC", fmt.Sprintf(warned, "broken"), 0),
		ev("Retry", "broken", "InvalidRetryOn", fmt.Sprintf(rejected, "broken"), time.Second),
	})
	if len(got) != 1 {
		t.Fatalf("rejections %v, want Retry broken only", got)
	}
	if e, ok := got[policyKey{"Retry", "app", "broken"}]; !ok || e.Reason != "InvalidRetryOn" {
		t.Errorf("Retry broken: %v", e)
	}
}
