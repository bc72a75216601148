// Package status brings the policy-compiler's verdicts back to users: it
// subscribes to mesh.status.policy.> and records every rejection, and every
// acceptance with a warning (part of the object cannot take effect for some
// proxies), as a Warning Event on the object, naming the field and the
// reason.
// It is the only place where compiler results reach the Kubernetes API.
package status

import (
	"context"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/sirupsen/logrus"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// Reporter turns PolicyStatus messages into Events.
type Reporter struct {
	rec    record.EventRecorder
	active func() bool
	log    *logrus.Entry
}

// New returns a Reporter that records with rec, but only while active
// reports true (the instance that holds the lease), so that standbys do not
// duplicate Events.
func New(rec record.EventRecorder, active func() bool, log *logrus.Entry) *Reporter {
	return &Reporter{rec: rec, active: active, log: log}
}

// Run subscribes on nc until ctx ends.
func (r *Reporter) Run(ctx context.Context, nc *nats.Conn) error {
	sub, err := nc.Subscribe(layout.PolicyStatusAll, func(m *nats.Msg) {
		r.Handle(bus.ExtractTrace(ctx, m.Header), m.Data)
	})
	if err != nil {
		return fmt.Errorf("subscribe to %s: %w", layout.PolicyStatusAll, err)
	}
	<-ctx.Done()
	// The connection may already be draining at shutdown; nothing to report.
	_ = sub.Unsubscribe()
	return nil
}

// Handle records one PolicyStatus. Plain acceptances record nothing: only a
// rejection or a warning needs the user's attention.
func (r *Reporter) Handle(ctx context.Context, data []byte) {
	var st meshv1.PolicyStatus
	if err := proto.Unmarshal(data, &st); err != nil {
		r.log.WithContext(ctx).WithError(err).Warn("undecodable policy status dropped")
		return
	}
	warning := st.GetCondition() == meshv1.PolicyCondition_POLICY_CONDITION_ACCEPTED_WITH_WARNING
	if (st.GetCondition() != meshv1.PolicyCondition_POLICY_CONDITION_REJECTED && !warning) || !r.active() {
		return
	}
	obj := st.GetObject()
	if obj.GetKind() == "" || obj.GetName() == "" {
		r.log.WithContext(ctx).Warn("policy status without an object dropped")
		return
	}
	ref := &corev1.ObjectReference{
		APIVersion: obj.GetApiVersion(),
		Kind:       obj.GetKind(),
		Namespace:  obj.GetNamespace(),
		Name:       obj.GetName(),
		UID:        types.UID(obj.GetUid()),
	}
	reason := st.GetReason()
	if reason == "" {
		reason = "Rejected"
		if warning {
			reason = "AcceptedWithWarning"
		}
	}
	r.rec.Event(ref, corev1.EventTypeWarning, reason, Message(&st))
	msg := "recorded policy rejection"
	if warning {
		msg = "recorded policy warning"
	}
	r.log.WithContext(ctx).WithFields(logrus.Fields{
		"kind": obj.GetKind(), "namespace": obj.GetNamespace(), "name": obj.GetName(),
		"reason": reason, "field": st.GetFieldPath(),
	}).Info(msg)
}

// Message is the Event message of a rejection or warning: the compiler's
// explanation, which names the field; a message that does not name it is
// prefixed with it, so the field appears once.
func Message(st *meshv1.PolicyStatus) string {
	msg := st.GetMessage()
	if msg == "" {
		msg = "rejected by the policy compiler"
	}
	if f := st.GetFieldPath(); f != "" && !strings.Contains(msg, f) {
		msg = f + ": " + msg
	}
	if g := st.GetObservedGeneration(); g != 0 {
		msg = fmt.Sprintf("%s (generation %d)", msg, g)
	}
	return msg
}
