package telemetry

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestMetricsReachPrometheusRegistry(t *testing.T) {
	tel, err := Setup(t.Context(), Options{Service: "osm-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	if len(tel.Exporting) != 0 {
		t.Fatalf("OTLP export on without configuration: %v", tel.Exporting)
	}
	c, err := tel.Meter("test").Int64Counter("osm_test_pushes")
	if err != nil {
		t.Fatal(err)
	}
	c.Add(t.Context(), 3)
	n, err := testutil.GatherAndCount(tel.Registry, "osm_test_pushes_total")
	if err != nil || n != 1 {
		t.Fatalf("osm_test_pushes_total series = %d, %v", n, err)
	}
	err = testutil.GatherAndCompare(tel.Registry, strings.NewReader(`
# HELP osm_test_pushes_total 
# TYPE osm_test_pushes_total counter
osm_test_pushes_total{otel_scope_name="test",otel_scope_schema_url="",otel_scope_version=""} 3
`), "osm_test_pushes_total")
	if err != nil {
		t.Fatal(err)
	}
}

func TestExportSelection(t *testing.T) {
	cases := []struct {
		env     map[string]string
		want    string
		wantErr bool
	}{
		{map[string]string{}, "", false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, "traces,metrics", false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_METRICS_EXPORTER": "none"}, "traces", false},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "traces", false},
		{map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, "", true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"}, "", true},
	}
	for _, c := range cases {
		tel, err := Setup(t.Context(), Options{Service: "osm-test", Getenv: env(c.env)})
		if (err != nil) != c.wantErr {
			t.Errorf("%v: err = %v, want error %v", c.env, err, c.wantErr)
			continue
		}
		if err != nil {
			continue
		}
		if got := strings.Join(tel.Exporting, ","); got != c.want {
			t.Errorf("%v: exporting %q, want %q", c.env, got, c.want)
		}
		// Nothing listens at the endpoint: give the final flush a short deadline.
		sctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		_ = tel.Shutdown(sctx)
		cancel()
	}
}
