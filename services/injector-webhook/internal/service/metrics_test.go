package service

import (
	"strings"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

func TestMetricCreationErrorsAreReturnedNamed(t *testing.T) {
	meter := sdkmetric.NewMeterProvider().Meter(Name)
	if _, err := newAdmissionMetrics(meter); err != nil {
		t.Fatalf("admission metrics: %v", err)
	}
	if _, err := counter(meter, "osm injector bad name", "an instrument name the SDK refuses"); err == nil ||
		!strings.Contains(err.Error(), "metric osm injector bad name") {
		t.Fatalf("counter with a bad name: %v, want an error naming it", err)
	}
	if _, err := seconds(meter, "osm injector bad name", "an instrument name the SDK refuses"); err == nil ||
		!strings.Contains(err.Error(), "metric osm injector bad name") {
		t.Fatalf("histogram with a bad name: %v, want an error naming it", err)
	}
}
