package policy

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

func validRetry() *meshv1.Retry {
	n := int64(3)
	return &meshv1.Retry{
		Source:       &meshv1.RetrySubject{Kind: "ServiceAccount", Name: "bookbuyer"},
		Destinations: []*meshv1.RetrySubject{{Kind: "Service", Name: "bookstore", Namespace: "bookstore"}, {Kind: "Service", Name: "bookstore", Namespace: "bookstore"}},
		RetryPolicy:  &meshv1.RetryPolicySpec{RetryOn: "5xx, unavailable,5xx", PerTryTimeout: "1s", NumRetries: &n, RetryBackoffBaseInterval: "25ms"},
	}
}

func TestRetryAccepted(t *testing.T) {
	got, rej := Retry("bookbuyer", validRetry())
	if rej != nil {
		t.Fatal(rej)
	}
	three := uint32(3)
	want := &AcceptedRetry{
		Source:       Subject{"bookbuyer", "bookbuyer"},
		Destinations: []Subject{{"bookstore", "bookstore"}},
		Policy:       RetryPolicy{RetryOn: []string{"5xx", "unavailable"}, PerTryTimeout: time.Second, NumRetries: &three, BackoffBase: 25 * time.Millisecond},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("accepted (-want +got):\n%s", d)
	}
}

// TestRetryRejected: each rule names its field, with the reason and the
// message the compiler's status and the webhook's denial both carry.
func TestRetryRejected(t *testing.T) {
	cases := []struct {
		name        string
		edit        func(*meshv1.Retry)
		field, rsn  string
		wantMessage string
	}{
		{"source kind", func(r *meshv1.Retry) { r.Source.Kind = "Service" }, "spec.source.kind", ReasonInvalidKind,
			`spec.source.kind: kind "Service" is not supported, want "ServiceAccount"`},
		{"source name", func(r *meshv1.Retry) { r.Source.Name = "" }, "spec.source.name", ReasonMissingField,
			"spec.source.name: the source ServiceAccount needs a name"},
		{"no destinations", func(r *meshv1.Retry) { r.Destinations = nil }, "spec.destinations", ReasonMissingField,
			"spec.destinations: at least one destination Service is required"},
		{"destination kind", func(r *meshv1.Retry) { r.Destinations[1].Kind = "ServiceAccount" }, "spec.destinations[1].kind", ReasonInvalidKind,
			`spec.destinations[1].kind: kind "ServiceAccount" is not supported, want "Service"`},
		{"destination name", func(r *meshv1.Retry) { r.Destinations[0].Name = "" }, "spec.destinations[0].name", ReasonMissingField,
			"spec.destinations[0].name: the destination Service needs a name"},
		{"no retryOn", func(r *meshv1.Retry) { r.RetryPolicy.RetryOn = " " }, "spec.retryPolicy.retryOn", ReasonMissingField,
			`spec.retryPolicy.retryOn: at least one retry condition is required, e.g. "5xx"`},
		{"unknown retryOn", func(r *meshv1.Retry) { r.RetryPolicy.RetryOn = "5xx,,unavailable" }, "spec.retryPolicy.retryOn", ReasonInvalidRetryOn, ""},
		{"negative numRetries", func(r *meshv1.Retry) { n := int64(-2); r.RetryPolicy.NumRetries = &n }, "spec.retryPolicy.numRetries", ReasonInvalidValue,
			"spec.retryPolicy.numRetries: -2 is negative"},
		{"huge numRetries", func(r *meshv1.Retry) { n := int64(1 << 40); r.RetryPolicy.NumRetries = &n }, "spec.retryPolicy.numRetries", ReasonInvalidValue, ""},
		{"bad perTryTimeout", func(r *meshv1.Retry) { r.RetryPolicy.PerTryTimeout = "1 second" }, "spec.retryPolicy.perTryTimeout", ReasonInvalidDuration,
			`spec.retryPolicy.perTryTimeout: "1 second" is not a duration such as "1s" or "250ms"`},
		{"negative backoff", func(r *meshv1.Retry) { r.RetryPolicy.RetryBackoffBaseInterval = "-1s" }, "spec.retryPolicy.retryBackoffBaseInterval", ReasonInvalidDuration,
			`spec.retryPolicy.retryBackoffBaseInterval: "-1s" is negative`},
		{"wrong type", func(r *meshv1.Retry) {
			r.InvalidFields = []*meshv1.InvalidField{{FieldPath: "spec.retryPolicy.numRetries", Value: "three", Message: "must be an integer"}}
		}, "spec.retryPolicy.numRetries", ReasonInvalidFieldType, `spec.retryPolicy.numRetries: must be an integer (got "three")`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := validRetry()
			c.edit(r)
			_, rej := Retry("bookbuyer", r)
			if rej == nil {
				t.Fatal("accepted")
			}
			if rej.FieldPath != c.field || rej.Reason != c.rsn {
				t.Fatalf("rejection %s at %s, want %s at %s (%s)", rej.Reason, rej.FieldPath, c.rsn, c.field, rej.Message)
			}
			if c.wantMessage != "" && rej.Message != c.wantMessage {
				t.Fatalf("message %q\nwant    %q", rej.Message, c.wantMessage)
			}
		})
	}
}
