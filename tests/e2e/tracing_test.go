package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	sotwclient "github.com/envoyproxy/go-control-plane/pkg/client/sotw/v3"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/tests/stack"
)

// tracingCluster is the compiler's cluster of the trace collector.
const tracingCluster = "envoy-tracing-cluster"

// connectionManagerTracing is the tracing config of the HTTP connection
// managers of listener name: an error when there is no such listener or
// its chains' connection managers differ.
func connectionManagerTracing(rs []any, name string) (*hcmv3.HttpConnectionManager_Tracing, error) {
	l := findListener(rs, name)
	if l == nil {
		return nil, fmt.Errorf("no listener %s in %v", name, names(rs))
	}
	var out *hcmv3.HttpConnectionManager_Tracing
	seen := 0
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			if f.GetName() != "envoy.filters.network.http_connection_manager" {
				continue
			}
			h := &hcmv3.HttpConnectionManager{}
			if err := f.GetTypedConfig().UnmarshalTo(h); err != nil {
				return nil, err
			}
			if seen > 0 && (out == nil) != (h.GetTracing() == nil) {
				return nil, fmt.Errorf("listener %s: chains differ in tracing", name)
			}
			out = h.GetTracing()
			seen++
		}
	}
	if seen == 0 {
		return nil, fmt.Errorf("listener %s has no HTTP connection manager", name)
	}
	return out, nil
}

// nextWithin is nextUntil that also gives up when no response comes for
// 30 s: a listener the compiler leaves untouched is never pushed again,
// and nextUntil would wait in Fetch until the test's timeout.
func nextWithin(t *testing.T, c sotwclient.ADSClient, what string, check func([]any) error) {
	t.Helper()
	type fetched struct {
		resp *sotwclient.Response
		err  error
	}
	deadline := time.After(30 * time.Second)
	last := fmt.Errorf("no response")
	for {
		ch := make(chan fetched, 1)
		go func() {
			resp, err := c.Fetch()
			ch <- fetched{resp, err}
		}()
		select {
		case <-deadline:
			t.Fatalf("%s after 30s: %v", what, last)
		case f := <-ch:
			if f.err != nil {
				t.Fatalf("%s: %v", what, f.err)
			}
			if err := c.Ack(); err != nil {
				t.Fatal(err)
			}
			if last = check(unpack(t, f.resp.Resources)); last == nil {
				return
			}
		}
	}
}

// TestMeshConfigTracingFlow runs MeshConfig spec.observability.tracing
// through the real apiserver (the chart's CRD, which keeps sampledFraction
// and provider and refuses an opentelemetry endpoint), the watcher, the
// compiler and an edge to real xDS clients: turned on, the client is
// served the tracing cluster to the collector, and the HTTP connection
// managers of its outbound listener and of the server's inbound listener
// carry the Zipkin tracer with the sampled fraction; switched to
// opentelemetry, the tracer follows; turned off, both go away.
func TestMeshConfigTracingFlow(t *testing.T) {
	ctx := t.Context()
	run := uniq()
	storeNS, buyerNS, meshName, mcName := "mctrace-store"+run, "mctrace-buyer"+run, "mctrace"+run, "mctrace-mesh-config"+run
	namespace(t, "osm-system", nil)
	for ns, sa := range map[string]string{storeNS: "bookstore", buyerNS: "bookbuyer"} {
		namespace(t, ns, map[string]string{layout.LabelMonitoredBy: meshName}, sa)
	}
	meshConfig(t, mcName, true)
	kubelet := node(t, "mctrace-node")
	service(t, storeNS, "bookstore", 14001)
	readyPod(t, kubelet, storeNS, "bookstore-1", "bookstore", "bookstore", "10.244.9.10")
	readyPod(t, kubelet, buyerNS, "bookbuyer-1", "bookbuyer", "bookbuyer", "10.244.9.20")

	m := startMesh(t, stack.Options{Name: "mctrace", MeshName: meshName, MeshConfig: mcName},
		stack.CertAuthority, stack.Watcher, stack.Compiler, stack.Edge)
	dial := func(ns, sa string) *proxyConn {
		t.Helper()
		cert, err := m.WorkloadCert(ctx, identityOf(ns, sa), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		cc, err := m.DialEdge(cert.Pair)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return &proxyConn{t: t, cc: cc, node: nodeOf(sa+"-1-uuid", sa, ns)}
	}
	buyer, store := dial(buyerNS, "bookbuyer"), dial(storeNS, "bookstore")
	outbound, inbound := "outbound-listener:"+storeNS+"/bookstore|14001", "inbound-listener:"+storeNS+"/bookstore"

	// clusterTo checks the tracing cluster: to addr, or absent when addr is empty.
	clusterTo := func(addr string) func([]any) error {
		return func(rs []any) error {
			for _, r := range rs {
				c, ok := r.(*clusterv3.Cluster)
				if !ok || c.GetName() != tracingCluster {
					continue
				}
				sa := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
				if got := fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue()); got != addr {
					return fmt.Errorf("tracing cluster to %s, want %q", got, addr)
				}
				return nil
			}
			if addr != "" {
				return fmt.Errorf("no cluster %s in %v", tracingCluster, names(rs))
			}
			return nil
		}
	}
	// traced checks the tracing config of listener: tracer (empty: none)
	// to the tracing cluster, with random sampling percent (0: unset).
	traced := func(listener, tracer string, percent float64) func([]any) error {
		return func(rs []any) error {
			tr, err := connectionManagerTracing(rs, listener)
			if err != nil {
				return err
			}
			switch {
			case tracer == "" && tr == nil:
				return nil
			case tracer == "":
				return fmt.Errorf("%s traced with %s, want untraced", listener, tr.GetProvider().GetName())
			case tr.GetProvider().GetName() != tracer:
				return fmt.Errorf("%s tracer %q, want %s", listener, tr.GetProvider().GetName(), tracer)
			case tr.GetRandomSampling().GetValue() != percent:
				return fmt.Errorf("%s random sampling %v, want %v%%", listener, tr.GetRandomSampling(), percent)
			}
			var to string
			switch tracer {
			case "envoy.tracers.zipkin":
				z := &tracev3.ZipkinConfig{}
				if err := tr.GetProvider().GetTypedConfig().UnmarshalTo(z); err != nil {
					return err
				}
				to = z.GetCollectorCluster()
			default:
				o := &tracev3.OpenTelemetryConfig{}
				if err := tr.GetProvider().GetTypedConfig().UnmarshalTo(o); err != nil {
					return err
				}
				to = o.GetGrpcService().GetEnvoyGrpc().GetClusterName()
			}
			if to != tracingCluster {
				return fmt.Errorf("%s tracer sends to %q, want %s", listener, to, tracingCluster)
			}
			return nil
		}
	}

	cds, clusters := buyer.fetch(typeCDS)
	lds, listeners := buyer.fetch(typeLDS)
	slds, storeListeners := store.fetch(typeLDS)
	for _, c := range []error{clusterTo("")(clusters), traced(outbound, "", 0)(listeners), traced(inbound, "", 0)(storeListeners)} {
		if c != nil {
			t.Fatalf("before: %v", c)
		}
	}

	start := time.Now()
	if err := patchMeshConfig(t, mcName, `{"spec":{"observability":{"tracing":{"enable":true,"address":"jaeger.tracing.svc.cluster.local",`+
		`"port":9411,"endpoint":"/api/v2/spans","sampledFraction":0.25}}}}`); err != nil {
		t.Fatal(err)
	}
	nextWithin(t, cds, "the client's tracing cluster", clusterTo("jaeger.tracing.svc.cluster.local:9411"))
	nextWithin(t, lds, "the client's outbound listener traced with zipkin at 25%", traced(outbound, "envoy.tracers.zipkin", 25))
	nextWithin(t, slds, "the server's inbound listener traced with zipkin at 25%", traced(inbound, "envoy.tracers.zipkin", 25))
	t.Logf("MeshConfig tracing on, to both proxies: %s (shared machine)", time.Since(start).Round(time.Millisecond))

	err := patchMeshConfig(t, mcName, `{"spec":{"observability":{"tracing":{"provider":"opentelemetry"}}}}`)
	if err == nil || !strings.Contains(err.Error(), "has no endpoint") {
		t.Fatalf("opentelemetry with an endpoint: %v, want the CRD's refusal", err)
	}
	if err := patchMeshConfig(t, mcName, `{"spec":{"observability":{"tracing":{"provider":"opentelemetry","endpoint":null,"port":4317,"sampledFraction":null}}}}`); err != nil {
		t.Fatal(err)
	}
	nextWithin(t, cds, "the tracing cluster to the OTLP port", clusterTo("jaeger.tracing.svc.cluster.local:4317"))
	nextWithin(t, lds, "the client's outbound listener traced with opentelemetry", traced(outbound, "envoy.tracers.opentelemetry", 0))

	if err := patchMeshConfig(t, mcName, `{"spec":{"observability":{"tracing":{"enable":false}}}}`); err != nil {
		t.Fatal(err)
	}
	nextWithin(t, cds, "the tracing cluster gone", clusterTo(""))
	nextWithin(t, lds, "the client's outbound listener untraced", traced(outbound, "", 0))
	nextWithin(t, slds, "the server's inbound listener untraced", traced(inbound, "", 0))
}
