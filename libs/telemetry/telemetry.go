// Package telemetry sets up OpenTelemetry for an OSM component: a tracer
// provider and a meter provider configured from the standard OTEL_*
// environment variables, with metrics always exposed to Prometheus through an
// injected registry. OTLP export is off unless the environment turns it on.
//
// It is the only package in the project that touches the OTel SDK.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Options configure Setup.
type Options struct {
	// Service is the service.name resource attribute, unless OTEL_SERVICE_NAME is set.
	Service string
	// Version is the service.version resource attribute.
	Version string
	// Getenv reads the environment; nil means no OTEL_* variable is set.
	Getenv func(string) string
}

// Telemetry holds the configured providers.
type Telemetry struct {
	// Registry is where the Prometheus exporter and the Go runtime collectors
	// register; serve it on /metrics.
	Registry *prometheus.Registry
	// TracerProvider is also installed as the global provider, so that
	// instrumentation libraries (gRPC, HTTP) use it.
	TracerProvider *sdktrace.TracerProvider
	// MeterProvider is also installed as the global provider.
	MeterProvider *sdkmetric.MeterProvider
	// Exporting lists the OTLP signals turned on ("traces", "metrics").
	Exporting []string
}

// Setup configures tracing and metrics.
//
// Traces and metrics are exported over OTLP when OTEL_TRACES_EXPORTER or
// OTEL_METRICS_EXPORTER is "otlp", or when either is unset and an OTLP
// endpoint (OTEL_EXPORTER_OTLP_ENDPOINT or the per-signal variable) is set.
// OTEL_EXPORTER_OTLP_PROTOCOL picks "grpc" (default) or "http/protobuf". The
// exporters read the remaining standard variables (headers, TLS, timeouts)
// themselves, as does the SDK for OTEL_TRACES_SAMPLER and OTEL_RESOURCE_ATTRIBUTES.
func Setup(ctx context.Context, o Options) (*Telemetry, error) {
	getenv := o.Getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	name := o.Service
	if v := getenv("OTEL_SERVICE_NAME"); v != "" {
		name = v
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		semconv.ServiceName(name), semconv.ServiceVersion(o.Version)))
	if err != nil {
		return nil, fmt.Errorf("telemetry resource: %w", err)
	}
	t := &Telemetry{Registry: prometheus.NewRegistry()}
	t.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	promExp, err := otelprom.New(otelprom.WithRegisterer(t.Registry))
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	mopts := []sdkmetric.Option{sdkmetric.WithResource(res), sdkmetric.WithReader(promExp)}
	topts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}

	on, err := exportOn(getenv, "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if err != nil {
		return nil, err
	}
	if on {
		exp, err := traceExporter(ctx, protocol(getenv, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
		if err != nil {
			return nil, err
		}
		topts = append(topts, sdktrace.WithBatcher(exp))
		t.Exporting = append(t.Exporting, "traces")
	}
	on, err = exportOn(getenv, "OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
	if err != nil {
		return nil, err
	}
	if on {
		exp, err := metricExporter(ctx, protocol(getenv, "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"))
		if err != nil {
			return nil, err
		}
		mopts = append(mopts, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp)))
		t.Exporting = append(t.Exporting, "metrics")
	}
	t.TracerProvider = sdktrace.NewTracerProvider(topts...)
	t.MeterProvider = sdkmetric.NewMeterProvider(mopts...)
	otel.SetTracerProvider(t.TracerProvider)
	otel.SetMeterProvider(t.MeterProvider)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	return t, nil
}

func exportOn(getenv func(string) string, selector, signalEndpoint string) (bool, error) {
	switch v := strings.TrimSpace(getenv(selector)); v {
	case "otlp":
		return true, nil
	case "none":
		return false, nil
	case "":
		return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv(signalEndpoint) != "", nil
	default:
		return false, fmt.Errorf("%s=%q: supported values are otlp and none", selector, v)
	}
}

func protocol(getenv func(string) string, signalVar string) string {
	if v := getenv(signalVar); v != "" {
		return v
	}
	if v := getenv("OTEL_EXPORTER_OTLP_PROTOCOL"); v != "" {
		return v
	}
	return "grpc"
}

func traceExporter(ctx context.Context, proto string) (sdktrace.SpanExporter, error) {
	switch proto {
	case "grpc":
		return otlptracegrpc.New(ctx)
	case "http/protobuf":
		return otlptracehttp.New(ctx)
	}
	return nil, fmt.Errorf("OTLP protocol %q: supported values are grpc and http/protobuf", proto)
}

func metricExporter(ctx context.Context, proto string) (sdkmetric.Exporter, error) {
	switch proto {
	case "grpc":
		return otlpmetricgrpc.New(ctx)
	case "http/protobuf":
		return otlpmetrichttp.New(ctx)
	}
	return nil, fmt.Errorf("OTLP protocol %q: supported values are grpc and http/protobuf", proto)
}

// LatencyBuckets are histogram bucket boundaries, in seconds, for request
// and push latencies: 100µs to 10s. The OTel default boundaries suit
// milliseconds, not seconds.
var LatencyBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// Meter returns a meter of the component's provider.
func (t *Telemetry) Meter(name string) metric.Meter { return t.MeterProvider.Meter(name) }

// Tracer returns a tracer of the component's provider.
func (t *Telemetry) Tracer(name string) trace.Tracer { return t.TracerProvider.Tracer(name) }

// Shutdown flushes and stops the providers.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	return errors.Join(t.TracerProvider.Shutdown(ctx), t.MeterProvider.Shutdown(ctx))
}
