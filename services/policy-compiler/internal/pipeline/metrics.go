package pipeline

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Metrics are the compiler's instruments. A nil *Metrics records nothing.
type Metrics struct {
	duration   metric.Float64Histogram
	written    metric.Int64Counter
	skipped    metric.Int64Counter
	invalidRes metric.Int64Counter
	rejected   metric.Int64Gauge
	gen        metric.Int64Gauge
}

// NewMetrics creates the compiler's instruments on meter.
func NewMetrics(meter metric.Meter) (*Metrics, error) {
	var m Metrics
	var err error
	if m.duration, err = meter.Float64Histogram("osm_compiler_compile_duration_seconds",
		metric.WithDescription("Time to compile and commit one batch of observed changes, by trigger (the observed kind that changed, mixed or resync)."),
		metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)); err != nil {
		return nil, err
	}
	if m.written, err = meter.Int64Counter("osm_compiler_keys_written_total",
		metric.WithDescription("Keys of mesh-compiled written, by op (put or delete); the generation record is not counted.")); err != nil {
		return nil, err
	}
	if m.skipped, err = meter.Int64Counter("osm_compiler_keys_skipped_total",
		metric.WithDescription("Compiled keys not written because mesh-compiled already held the same content.")); err != nil {
		return nil, err
	}
	if m.invalidRes, err = meter.Int64Counter("osm_compiler_invalid_resources_total",
		metric.WithDescription("Compiled resources that failed ValidateAll and were not written (compiler bugs).")); err != nil {
		return nil, err
	}
	if m.rejected, err = meter.Int64Gauge("osm_compiler_rejected_policies",
		metric.WithDescription("Policy objects whose latest verdict is a rejection.")); err != nil {
		return nil, err
	}
	if m.gen, err = meter.Int64Gauge("osm_compiler_generation",
		metric.WithDescription("Number of the last generation committed to mesh-compiled.")); err != nil {
		return nil, err
	}
	return &m, nil
}

func (m *Metrics) compiled(ctx context.Context, trigger string, d time.Duration, rejected int) {
	if m == nil {
		return
	}
	m.duration.Record(ctx, d.Seconds(), metric.WithAttributes(attribute.String("trigger", trigger)))
	m.rejected.Record(ctx, int64(rejected))
}

func (m *Metrics) wrote(ctx context.Context, puts, deletes, skipped int) {
	if m == nil {
		return
	}
	m.written.Add(ctx, int64(puts), metric.WithAttributes(attribute.String("op", "put")))
	m.written.Add(ctx, int64(deletes), metric.WithAttributes(attribute.String("op", "delete")))
	m.skipped.Add(ctx, int64(skipped))
}

func (m *Metrics) invalid(ctx context.Context, n int) {
	if m == nil || n == 0 {
		return
	}
	m.invalidRes.Add(ctx, int64(n))
}

func (m *Metrics) generation(ctx context.Context, gen uint64) {
	if m == nil {
		return
	}
	m.gen.Record(ctx, int64(gen))
}
