package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	healthcheckv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/health_check/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	// The types packed in the bootstrap's Any fields, for protojson.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestProbesRewrittenThroughTheWebhook: a pod with HTTP, HTTPS, gRPC and
// TCP probes, created through the real apiserver in a meshed namespace,
// is stored with each probe sent through the sidecar and the originals in
// the annotation; its bootstrap Secret serves them.
//
// Then the test plays the kubelet and Envoy's health checker for what needs
// no Envoy: from the stored TCP probe (its port and Original-Tcp-Port
// header) it finds, in the bootstrap, the health_check filter of the
// health-check listener that matches the request, the cluster that filter
// asks about and that cluster's endpoint, and connects to that endpoint
// as the cluster's connect-only health check does: it succeeds while a
// real app listens on loopback and fails once it has stopped. Envoy's
// listener, filter and health checker themselves are not run (there is no
// Envoy binary here).
func TestProbesRewrittenThroughTheWebhook(t *testing.T) {
	ctx := t.Context()
	m := meshUp(t)
	// The app's TCP port is a free loopback port, so that the bootstrap's
	// cluster can be dialled for real.
	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	go func() {
		for {
			c, err := app.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	appPort := int32(app.Addr().(*net.TCPAddr).Port)

	svc := "grpc.health.v1.Health"
	p := pod("probes"+uniq(), nil)
	c := &p.Spec.Containers[0]
	c.Ports = append(c.Ports, corev1.ContainerPort{Name: "https", ContainerPort: 8443})
	c.LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intOrName("http")}}}
	c.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intOrName("https"), Scheme: corev1.URISchemeHTTPS}}}
	c.StartupProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 9090, Service: &svc}}}
	p.Spec.Containers = append(p.Spec.Containers, corev1.Container{
		Name: "cache", Image: "cache:v1",
		Ports: []corev1.ContainerPort{{Name: "cache", ContainerPort: appPort}},
		LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intOrName("cache")}},
			PeriodSeconds: 5, FailureThreshold: 4},
	})
	var created *corev1.Pod
	eventually(t, "an injected pod", 30*time.Second, func() error {
		_ = cluster.Clientset().CoreV1().Pods("bookstore").Delete(ctx, p.Name, metav1.DeleteOptions{})
		got, err := cluster.Clientset().CoreV1().Pods("bookstore").Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		if len(got.Spec.Containers) != 3 {
			return fmt.Errorf("pod created with %d containers (webhook not called yet?)", len(got.Spec.Containers))
		}
		created = got
		return nil
	})

	api, cache := created.Spec.Containers[0], created.Spec.Containers[1]
	if l := api.LivenessProbe.HTTPGet; l == nil || l.Port.IntValue() != 15901 || l.Path != "/osm-liveness-probe" {
		t.Errorf("HTTP liveness probe: %+v", api.LivenessProbe)
	}
	if r := api.ReadinessProbe.HTTPGet; r == nil || r.Port.IntValue() != 15902 || r.Path != "/ready" || r.Scheme != corev1.URISchemeHTTPS {
		t.Errorf("HTTPS readiness probe: %+v", api.ReadinessProbe)
	}
	if s := api.StartupProbe.GRPC; s == nil || s.Port != 15903 || s.Service == nil || *s.Service != svc {
		t.Errorf("gRPC startup probe: %+v", api.StartupProbe)
	}
	tcp := cache.LivenessProbe
	if tcp.TCPSocket != nil || tcp.HTTPGet == nil || tcp.HTTPGet.Port != intstr.FromInt32(15904) || tcp.HTTPGet.Path != "/osm-healthcheck" ||
		len(tcp.HTTPGet.HTTPHeaders) != 1 || tcp.HTTPGet.HTTPHeaders[0] != (corev1.HTTPHeader{Name: "Original-Tcp-Port", Value: fmt.Sprint(appPort)}) ||
		tcp.PeriodSeconds != 5 || tcp.FailureThreshold != 4 {
		t.Fatalf("TCP liveness probe as stored: %+v", tcp)
	}
	if args := created.Spec.InitContainers[0].Args[0]; !strings.Contains(args, "--dports 15010,15901,15902,15903,15904 -j RETURN") {
		t.Errorf("15904 is not exempt from the inbound redirection:\n%s", args)
	}

	var recorded []map[string]any
	if err := json.Unmarshal([]byte(created.Annotations["openservicemesh.io/original-probes"]), &recorded); err != nil {
		t.Fatalf("original-probes annotation: %v", err)
	}
	protocols := map[string]string{}
	for _, r := range recorded {
		protocols[fmt.Sprint(r["container"], "/", r["kind"])] = fmt.Sprint(r["protocol"], ":", r["port"])
	}
	want := map[string]string{
		"bookstore/liveness": "<nil>:14001", "bookstore/readiness": "https:8443", "bookstore/startup": "grpc:9090",
		"cache/liveness": fmt.Sprintf("tcp:%d", appPort),
	}
	if fmt.Sprint(protocols) != fmt.Sprint(want) {
		t.Fatalf("annotation records %v, want %v", protocols, want)
	}

	// The bootstrap the sidecar would start with.
	sec := checkBootstrapSecret(t, created, m.Bundle())
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(sec.Data["bootstrap.json"], &b); err != nil {
		t.Fatal(err)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	endpoint := healthcheckTarget(t, &b, tcp.HTTPGet)
	if endpoint != app.Addr().String() {
		t.Fatalf("the probe's health check connects to %s, the app listens on %s", endpoint, app.Addr())
	}
	// What the connect-only health check does, against the real app.
	conn, err := net.DialTimeout("tcp", endpoint, time.Second)
	if err != nil {
		t.Fatalf("connect to the running app: %v", err)
	}
	conn.Close()
	app.Close()
	if conn, err := net.DialTimeout("tcp", endpoint, time.Second); err == nil {
		conn.Close()
		t.Fatal("connect to the stopped app succeeded")
	}
	// Other probe kinds keep their listeners.
	names := map[string]bool{}
	for _, l := range b.GetStaticResources().GetListeners() {
		names[l.GetName()] = true
	}
	for _, n := range []string{"osm-liveness-probe", "osm-readiness-probe", "osm-startup-probe", "osm-healthcheck"} {
		if !names[n] {
			t.Errorf("bootstrap has no listener %s (has %v)", n, names)
		}
	}
}

// healthcheckTarget follows a rewritten TCP probe through the bootstrap:
// the listener on its port, the health_check filter whose headers the
// kubelet's request matches, the one cluster it asks about (which must be
// health-checked by connecting only) and that cluster's endpoint.
func healthcheckTarget(t *testing.T, b *bootstrapv3.Bootstrap, get *corev1.HTTPGetAction) string {
	t.Helper()
	request := map[string]string{":path": get.Path}
	for _, h := range get.HTTPHeaders {
		request[strings.ToLower(h.Name)] = h.Value
	}
	var clusterName string
	for _, l := range b.GetStaticResources().GetListeners() {
		if l.GetAddress().GetSocketAddress().GetPortValue() != uint32(get.Port.IntValue()) {
			continue
		}
		var hcm hcmv3.HttpConnectionManager
		if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
			t.Fatalf("listener %s: %v", l.GetName(), err)
		}
		for _, f := range hcm.GetHttpFilters() {
			var hc healthcheckv3.HealthCheck
			if f.GetTypedConfig().UnmarshalTo(&hc) != nil {
				continue
			}
			matches := true
			for _, h := range hc.GetHeaders() {
				if v, ok := request[h.GetName()]; !ok || v != h.GetStringMatch().GetExact() {
					matches = false
				}
			}
			if matches && clusterName == "" {
				if hc.GetPassThroughMode().GetValue() || len(hc.GetClusterMinHealthyPercentages()) != 1 {
					t.Fatalf("filter %s: %v", f.GetName(), &hc)
				}
				for name, pct := range hc.GetClusterMinHealthyPercentages() {
					if pct.GetValue() != 100 {
						t.Fatalf("filter %s asks %v%% of %s", f.GetName(), pct.GetValue(), name)
					}
					clusterName = name
				}
			}
		}
	}
	if clusterName == "" {
		t.Fatalf("no health_check filter on port %s answers %v", get.Port.String(), request)
	}
	var cl *clusterv3.Cluster
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() == clusterName {
			cl = c
		}
	}
	if cl == nil || len(cl.GetHealthChecks()) != 1 {
		t.Fatalf("cluster %s: %v", clusterName, cl)
	}
	if tcp := cl.GetHealthChecks()[0].GetTcpHealthCheck(); tcp == nil || tcp.GetSend() != nil || len(tcp.GetReceive()) != 0 {
		t.Fatalf("cluster %s is not checked by connecting only: %v", clusterName, cl.GetHealthChecks()[0])
	}
	sa := cl.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	return net.JoinHostPort(sa.GetAddress(), fmt.Sprint(sa.GetPortValue()))
}
