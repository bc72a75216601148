package bus

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/protobuf/proto"
)

// HeaderCarrier adapts nats.Header to the OpenTelemetry TextMapCarrier.
//
// nats.Header is a plain map and, unlike http.Header, its keys are
// case-sensitive. The W3C propagator writes "traceparent" and "tracestate" in
// lower case; this carrier stores and reads keys exactly as given so that the
// header a Go publisher writes is the header every consumer reads.
type HeaderCarrier nats.Header

var _ propagation.TextMapCarrier = HeaderCarrier(nil)

// Get returns the first value for key.
func (c HeaderCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Set replaces the values for key.
func (c HeaderCarrier) Set(key, value string) { c[key] = []string{value} }

// Keys lists the header names.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// propagator is the W3C trace-context plus baggage propagator used on the bus.
var propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// InjectTrace writes the trace context of ctx into h.
func InjectTrace(ctx context.Context, h nats.Header) {
	propagator.Inject(ctx, HeaderCarrier(h))
}

// ExtractTrace returns ctx carrying the remote span context found in h, if any.
func ExtractTrace(ctx context.Context, h nats.Header) context.Context {
	if len(h) == 0 {
		return ctx
	}
	return propagator.Extract(ctx, HeaderCarrier(h))
}

// Publisher sends one core NATS message; *nats.Conn is one.
type Publisher interface {
	PublishMsg(m *nats.Msg) error
}

var _ Publisher = (*nats.Conn)(nil)

// Publish marshals m and publishes it on subject with the trace context of
// ctx in the message headers, so that the receiver's spans join the
// sender's trace. Core NATS publishing is fire-and-forget: a nil error means
// the message was handed to the connection, not that anyone received it.
func Publish(ctx context.Context, p Publisher, subject string, m proto.Message) error {
	data, err := proto.Marshal(m)
	if err != nil {
		return fmt.Errorf("marshal %s for %s: %w", m.ProtoReflect().Descriptor().FullName(), subject, err)
	}
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	InjectTrace(ctx, msg.Header)
	if err := p.PublishMsg(msg); err != nil {
		return fmt.Errorf("publish on %s: %w", subject, err)
	}
	return nil
}
