package watch

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

const (
	opPut    = "put"
	opDelete = "delete"
)

// metrics are the watcher's instruments:
//
//	osm_watcher_objects{kind}                 objects published, by kind (gauge)
//	osm_watcher_kv_writes_total{kind,op}      KV puts and deletes written
//	osm_watcher_kv_skipped_total{kind,op}     writes skipped because nothing changed
//	osm_watcher_event_to_write_seconds{kind}  informer event to KV write (histogram)
//	osm_watcher_leader                        1 while this instance writes
//	osm_watcher_epoch                         sync epoch of the current term
//	osm_watcher_takeover_seconds              takeover start to SYNCED marker
//	osm_watcher_objects_too_large_total{kind} objects left unpublished: their value exceeds the NATS limit
type metrics struct {
	tooLarge     metric.Int64Counter
	writes       metric.Int64Counter
	skipped      metric.Int64Counter
	latency      metric.Float64Histogram
	syncDuration metric.Float64Histogram
}

func newMetrics(m metric.Meter, w *Watcher) (*metrics, error) {
	if m == nil {
		m = noop.NewMeterProvider().Meter("smi-watcher")
	}
	var out metrics
	var err error
	if out.writes, err = m.Int64Counter("osm_watcher_kv_writes",
		metric.WithDescription("KV puts and deletes the watcher wrote to mesh-observed")); err != nil {
		return nil, err
	}
	if out.tooLarge, err = m.Int64Counter("osm_watcher_objects_too_large",
		metric.WithDescription("Objects not published because their normalised value exceeds the NATS payload limit")); err != nil {
		return nil, err
	}
	if out.skipped, err = m.Int64Counter("osm_watcher_kv_skipped",
		metric.WithDescription("KV writes skipped because the normalised value did not change")); err != nil {
		return nil, err
	}
	if out.latency, err = m.Float64Histogram("osm_watcher_event_to_write", metric.WithUnit("s"),
		metric.WithDescription("Time from an informer event to the KV write it caused"),
		metric.WithExplicitBucketBoundaries(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)); err != nil {
		return nil, err
	}
	if out.syncDuration, err = m.Float64Histogram("osm_watcher_takeover", metric.WithUnit("s"),
		metric.WithDescription("Time from the start of a term to its SYNCED marker")); err != nil {
		return nil, err
	}
	objects, err := m.Int64ObservableGauge("osm_watcher_objects",
		metric.WithDescription("Objects published in mesh-observed, by kind"))
	if err != nil {
		return nil, err
	}
	leader, err := m.Int64ObservableGauge("osm_watcher_leader",
		metric.WithDescription("1 while this instance holds the lease and writes"))
	if err != nil {
		return nil, err
	}
	epoch, err := m.Int64ObservableGauge("osm_watcher_epoch",
		metric.WithDescription("Sync epoch of the current or last term"))
	if err != nil {
		return nil, err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for kind, n := range w.counts() {
			o.ObserveInt64(objects, int64(n), metric.WithAttributes(attribute.String("kind", kind)))
		}
		var l int64
		if w.Leading() {
			l = 1
		}
		o.ObserveInt64(leader, l)
		o.ObserveInt64(epoch, int64(w.Epoch()))
		return nil
	}, objects, leader, epoch)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// recordSync counts one converged item and, for a write caused by an
// informer event, the event-to-write latency.
func (m *metrics) recordSync(ctx context.Context, kind, op string, wrote bool, t0 time.Time, timed bool) {
	attrs := metric.WithAttributes(attribute.String("kind", kind), attribute.String("op", op))
	if !wrote {
		if op == opPut {
			m.skipped.Add(ctx, 1, attrs)
		}
		return
	}
	m.writes.Add(ctx, 1, attrs)
	if timed {
		m.latency.Record(ctx, time.Since(t0).Seconds(), metric.WithAttributes(attribute.String("kind", kind)))
	}
}
