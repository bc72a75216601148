package server

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

const (
	rpcSign      = "sign"
	rpcBootstrap = "bootstrap"
)

// metrics are the CA's instruments. In Prometheus they appear as
// osm_ca_signs_total{rpc,result} (its rate is signs per second),
// osm_ca_sign_duration_seconds{rpc} and osm_ca_sign_failures_total{rpc,reason}.
type metrics struct {
	signs    metric.Int64Counter
	failures metric.Int64Counter
	latency  metric.Float64Histogram
	attrs    map[string]rpcAttrs
}

func newMetrics(m metric.Meter) (*metrics, error) {
	if m == nil {
		m = noop.NewMeterProvider().Meter("")
	}
	signs, err := m.Int64Counter("osm_ca_signs", metric.WithDescription("Certificate requests handled, by rpc and result (ok or the refusal reason)."))
	if err != nil {
		return nil, err
	}
	failures, err := m.Int64Counter("osm_ca_sign_failures", metric.WithDescription("Refused or failed certificate requests, by rpc and reason."))
	if err != nil {
		return nil, err
	}
	latency, err := m.Float64Histogram("osm_ca_sign_duration", metric.WithUnit("s"),
		metric.WithDescription("Time to validate and sign one certificate request."),
		metric.WithExplicitBucketBoundaries(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
	if err != nil {
		return nil, err
	}
	attrs := map[string]rpcAttrs{rpcSign: newRPCAttrs(rpcSign), rpcBootstrap: newRPCAttrs(rpcBootstrap)}
	return &metrics{signs: signs, failures: failures, latency: latency, attrs: attrs}, nil
}

func (m *metrics) record(ctx context.Context, rpc string, start time.Time, err error) {
	elapsed := time.Since(start).Seconds()
	a := m.attrs[rpc]
	if err == nil {
		// The success path is the hot one: its attribute sets are built once.
		m.signs.Add(ctx, 1, a.ok)
		m.latency.Record(ctx, elapsed, a.rpc)
		return
	}
	label := reasonLabel(err)
	rpcAttr := attribute.String("rpc", rpc)
	m.signs.Add(ctx, 1, metric.WithAttributes(rpcAttr, attribute.String("result", label)))
	m.latency.Record(ctx, elapsed, a.rpc)
	m.failures.Add(ctx, 1, metric.WithAttributes(rpcAttr, attribute.String("reason", label)))
}

// rpcAttrs are the precomputed attribute options of one rpc label.
type rpcAttrs struct {
	rpc metric.MeasurementOption // {rpc}
	ok  metric.MeasurementOption // {rpc, result="ok"}
}

func newRPCAttrs(rpc string) rpcAttrs {
	r := attribute.String("rpc", rpc)
	return rpcAttrs{
		rpc: metric.WithAttributeSet(attribute.NewSet(r)),
		ok:  metric.WithAttributeSet(attribute.NewSet(r, attribute.String("result", "ok"))),
	}
}
