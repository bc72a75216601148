package service

import (
	"fmt"

	"go.opentelemetry.io/otel/metric"

	"github.com/openservicemesh/osm/libs/telemetry"
)

// admissionMetrics are the admission path's instruments.
type admissionMetrics struct {
	admissions metric.Int64Counter
	latency    metric.Float64Histogram
	issuance   metric.Float64Histogram
	phases     metric.Float64Histogram
	// validations and validationLatency are the policy validation
	// webhook's, by outcome (allowed, denied, skipped, error).
	validations       metric.Int64Counter
	validationLatency metric.Float64Histogram
}

func newAdmissionMetrics(meter metric.Meter) (*admissionMetrics, error) {
	var m admissionMetrics
	var err error
	if m.admissions, err = counter(meter, "osm_injector_admissions", "admission reviews handled, by outcome"); err != nil {
		return nil, err
	}
	if m.latency, err = seconds(meter, "osm_injector_admission_seconds", "admission latency"); err != nil {
		return nil, err
	}
	if m.issuance, err = seconds(meter, "osm_injector_cert_issuance_seconds", "bootstrap certificate issuance latency"); err != nil {
		return nil, err
	}
	if m.phases, err = seconds(meter, "osm_injector_admission_phase_seconds",
		"time of each step of an injecting admission: decide, patch, bootstrap, store, encode"); err != nil {
		return nil, err
	}
	if m.validations, err = counter(meter, "osm_injector_policy_validations", "policy validation reviews handled, by outcome"); err != nil {
		return nil, err
	}
	if m.validationLatency, err = seconds(meter, "osm_injector_policy_validation_seconds", "policy validation latency, from the request read to the response written"); err != nil {
		return nil, err
	}
	return &m, nil
}

// counter creates a counter; its error names it.
func counter(meter metric.Meter, name, desc string) (metric.Int64Counter, error) {
	c, err := meter.Int64Counter(name, metric.WithDescription(desc))
	if err != nil {
		return nil, fmt.Errorf("metric %s: %w", name, err)
	}
	return c, nil
}

// seconds creates a latency histogram in seconds with the shared latency
// buckets; its error names it.
func seconds(meter metric.Meter, name, desc string) (metric.Float64Histogram, error) {
	h, err := meter.Float64Histogram(name, metric.WithDescription(desc),
		metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(telemetry.LatencyBuckets...))
	if err != nil {
		return nil, fmt.Errorf("metric %s: %w", name, err)
	}
	return h, nil
}
