package status

import (
	"io"
	"testing"

	"github.com/sirupsen/logrus"
	"google.golang.org/protobuf/proto"
	"k8s.io/client-go/tools/record"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

func rejected() *meshv1.PolicyStatus {
	return &meshv1.PolicyStatus{
		Object:             &meshv1.ObjectRef{ApiVersion: "split.smi-spec.io/v1alpha2", Kind: "TrafficSplit", Namespace: "bookstore", Name: "split", Uid: "u1"},
		ObservedGeneration: 4,
		Condition:          meshv1.PolicyCondition_POLICY_CONDITION_REJECTED,
		Reason:             "NegativeWeight",
		FieldPath:          "spec.backends[1].weight",
		Message:            "weight -10 is negative",
	}
}

func TestMessage(t *testing.T) {
	cases := []struct {
		name string
		edit func(*meshv1.PolicyStatus)
		want string
	}{
		{"field, message and generation", func(*meshv1.PolicyStatus) {}, "spec.backends[1].weight: weight -10 is negative (generation 4)"},
		{"no field", func(s *meshv1.PolicyStatus) { s.FieldPath = "" }, "weight -10 is negative (generation 4)"},
		{"no message", func(s *meshv1.PolicyStatus) { s.Message, s.ObservedGeneration = "", 0 }, "spec.backends[1].weight: rejected by the policy compiler"},
		{"message naming the field", func(s *meshv1.PolicyStatus) {
			s.Message = "TrafficSplit bookstore/split rejected: spec.backends[1].weight: weight -10 is negative"
		}, "TrafficSplit bookstore/split rejected: spec.backends[1].weight: weight -10 is negative (generation 4)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := rejected()
			c.edit(st)
			if got := Message(st); got != c.want {
				t.Errorf("Message = %q, want %q", got, c.want)
			}
		})
	}
}

func TestHandle(t *testing.T) {
	log := logrus.New()
	log.SetOutput(io.Discard)
	marshal := func(st *meshv1.PolicyStatus) []byte {
		b, err := proto.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	accepted := rejected()
	accepted.Condition, accepted.Reason = meshv1.PolicyCondition_POLICY_CONDITION_ACCEPTED, "Accepted"
	noObject := rejected()
	noObject.Object = nil
	noReason := rejected()
	noReason.Reason = ""
	warned := &meshv1.PolicyStatus{
		Object:    &meshv1.ObjectRef{ApiVersion: "policy.openservicemesh.io/v1alpha1", Kind: "Retry", Namespace: "bookbuyer", Name: "retry", Uid: "u2"},
		Condition: meshv1.PolicyCondition_POLICY_CONDITION_ACCEPTED_WITH_WARNING,
		Reason:    "RetryOnIgnoredByProxylessGRPC",
		FieldPath: "spec.retryPolicy.retryOn",
		Message:   "Retry bookbuyer/retry accepted with a warning: spec.retryPolicy.retryOn: 5xx dropped for proxyless gRPC clients",
	}
	warnedNoReason := proto.Clone(warned).(*meshv1.PolicyStatus)
	warnedNoReason.Reason = ""
	cases := []struct {
		name   string
		data   []byte
		active bool
		want   []string
	}{
		{"rejection while leading", marshal(rejected()), true, []string{"Warning NegativeWeight spec.backends[1].weight: weight -10 is negative (generation 4)"}},
		{"rejection on a standby", marshal(rejected()), false, nil},
		{"accepted", marshal(accepted), true, nil},
		{"garbage", []byte{0xff, 0x01}, true, nil},
		{"no object", marshal(noObject), true, nil},
		{"no reason", marshal(noReason), true, []string{"Warning Rejected spec.backends[1].weight: weight -10 is negative (generation 4)"}},
		{"accepted with a warning", marshal(warned), true, []string{"Warning RetryOnIgnoredByProxylessGRPC " + warned.Message}},
		{"accepted with a warning on a standby", marshal(warned), false, nil},
		{"accepted with a warning, no reason", marshal(warnedNoReason), true, []string{"Warning AcceptedWithWarning " + warned.Message}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := record.NewFakeRecorder(10)
			r := New(rec, func() bool { return c.active }, logrus.NewEntry(log))
			r.Handle(t.Context(), c.data)
			close(rec.Events)
			var got []string
			for ev := range rec.Events {
				got = append(got, ev)
			}
			if len(got) != len(c.want) {
				t.Fatalf("events = %q, want %q", got, c.want)
			}
			for i := range got {
				if got[i] != c.want[i] {
					t.Errorf("event %d = %q, want %q", i, got[i], c.want[i])
				}
			}
		})
	}
}
