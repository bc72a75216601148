package sds

import (
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/openservicemesh/osm/libs/xdstest"
)

// gaugeValues collects the issuer's two lifetime gauges: the smallest
// remaining ratio (ok false when absent) and the low-lifetime count.
func gaugeValues(t *testing.T, r *sdkmetric.ManualReader) (ratio float64, ok bool, low int64) {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(t.Context(), &rm); err != nil {
		t.Fatal(err)
	}
	low = -1
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Gauge[float64]:
				if m.Name == "osm_xds_service_cert_lifetime_remaining_min_ratio" && len(d.DataPoints) == 1 {
					ratio, ok = d.DataPoints[0].Value, true
				}
			case metricdata.Gauge[int64]:
				if m.Name == "osm_xds_service_certs_low_lifetime" && len(d.DataPoints) == 1 {
					low = d.DataPoints[0].Value
				}
			}
		}
	}
	if low < 0 {
		t.Fatal("osm_xds_service_certs_low_lifetime was not collected")
	}
	return ratio, ok, low
}

// TestLifetimeGaugesShowFailingRenewals is the metric of fault F6
// (docs/faults.md): while the CA cannot sign, a held certificate ages past
// its renewal point, and the gauges say so before it expires: the smallest
// remaining ratio falls under a quarter and the low-lifetime count turns 1.
// While renewals succeed the count stays 0.
func TestLifetimeGaugesShowFailingRenewals(t *testing.T) {
	ca, client := startCA(t)
	reader := sdkmetric.NewManualReader()
	meter := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test")
	s := newSink()
	i := newIssuer(t, client, s, Options{TTL: 4 * time.Second, Linger: time.Hour, RetryMin: 50 * time.Millisecond, RetryMax: 100 * time.Millisecond, Meter: meter})
	if _, ok, low := gaugeValues(t, reader); ok || low != 0 {
		t.Errorf("with no certificate: ratio reported %v, low %d; want no ratio and 0", ok, low)
	}
	i.Acquire(idA)
	xdstest.WaitFor(t, "the first certificate", func() bool { return len(s.serials(idA)) == 1 })
	if ratio, ok, low := gaugeValues(t, reader); !ok || ratio < 0.5 || low != 0 {
		t.Errorf("fresh certificate: ratio %v (reported %v), low %d; want above 0.5 and 0", ratio, ok, low)
	}
	// The CA fails from now on: the renewal at half-life does not happen.
	ca.FailNext(1 << 30)
	cert := i.Current(idA)
	life := cert.NotAfter.Sub(cert.NotBefore)
	xdstest.WaitFor(t, "the low-lifetime count", func() bool { _, _, low := gaugeValues(t, reader); return low == 1 })
	ratio, _, _ := gaugeValues(t, reader)
	left := time.Until(cert.NotAfter)
	if ratio >= LowLifetime || left <= 0 {
		t.Errorf("low-lifetime count at ratio %v with %s left, want under %v and before expiry", ratio, left, LowLifetime)
	}
	if left < life/5 {
		t.Errorf("the count turned 1 with %s of %s left, want at about a quarter", left, life)
	}
	if ca.Calls() < 2 {
		t.Errorf("the issuer tried %d times, want renewal attempts", ca.Calls())
	}
	// The CA is back: the renewal clears the count.
	ca.FailNext(0)
	xdstest.WaitFor(t, "the renewal", func() bool { return len(s.serials(idA)) == 2 })
	if ratio, _, low := gaugeValues(t, reader); low != 0 || ratio < 0.5 {
		t.Errorf("after the renewal: ratio %v, low %d", ratio, low)
	}
}
