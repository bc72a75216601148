package validate

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/openservicemesh/osm/services/injector-webhook/internal/webhook"
)

func resourceOf(t *testing.T, kind string) metav1.GroupVersionResource {
	t.Helper()
	for _, k := range Kinds() {
		if k.Name == kind {
			return metav1.GroupVersionResource{Group: k.Resource.Group, Version: k.Resource.Version, Resource: k.Resource.Resource}
		}
	}
	t.Fatalf("no kind %s", kind)
	return metav1.GroupVersionResource{}
}

func request(t *testing.T, kind, ns, name string, spec string) *admissionv1.AdmissionRequest {
	t.Helper()
	raw := `{"apiVersion":"x/v1","kind":"` + kind + `","metadata":{"name":"` + name + `","namespace":"` + ns + `"},"spec":` + spec + `}`
	return &admissionv1.AdmissionRequest{UID: "uid-1", Kind: metav1.GroupVersionKind{Kind: kind}, Resource: resourceOf(t, kind),
		Namespace: ns, Name: name, Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: []byte(raw)}}
}

// TestEveryKind: per kind, an invalid object is refused with the
// compiler's words (object, field path, reason as the cause) and a valid
// one is allowed.
func TestEveryKind(t *testing.T) {
	v := New(Options{MeshConfigNamespace: "osm-system", MeshConfigName: "osm-mesh-config"})
	cases := []struct {
		kind, ns, name, spec string
		field, reason, msg   string // empty: allowed
	}{
		{kind: "TrafficTarget", ns: "bookstore", name: "tt",
			spec: `{"destination":{"kind":"ServiceAccount","name":"bookstore","namespace":"bookstore"},"sources":[{"kind":"ServiceAccount","name":"bookbuyer","namespace":"bookbuyer"}],"rules":[{"kind":"HTTPRouteGroup","name":"not-yet-created"}]}`},
		{kind: "TrafficTarget", ns: "bookstore", name: "tt",
			spec:  `{"destination":{"kind":"ServiceAccount","name":"bookbuyer","namespace":"bookbuyer"},"rules":[{"kind":"HTTPRouteGroup","name":"r"}]}`,
			field: "spec.destination.namespace", reason: "CrossNamespaceDestination",
			msg: `TrafficTarget bookstore/tt rejected: spec.destination.namespace: namespace "bookbuyer" differs from the TrafficTarget's namespace "bookstore"; a TrafficTarget counts only in its destination's namespace`},
		{kind: "HTTPRouteGroup", ns: "bookstore", name: "routes",
			spec: `{"matches":[{"name":"buy","methods":["GET"],"pathRegex":"/buy","headers":[{"user-agent":".*"}]}]}`},
		{kind: "HTTPRouteGroup", ns: "bookstore", name: "routes",
			spec:  `{"matches":[{"name":"buy","headers":[{"user-agent":"(moz"}]}]}`,
			field: "spec.matches[0].headers[user-agent]", reason: "InvalidRegex",
			msg: "HTTPRouteGroup bookstore/routes rejected: spec.matches[0].headers[user-agent]: invalid RE2 regular expression \"(moz\": error parsing regexp: missing closing ): `(moz`"},
		{kind: "TCPRoute", ns: "db", name: "mysql", spec: `{"matches":{"ports":[3306]}}`},
		{kind: "TCPRoute", ns: "db", name: "mysql", spec: `{"matches":{"ports":[3306, 99999999999]}}`,
			field: "spec.matches.ports[1]", reason: "InvalidPort",
			msg: "TCPRoute db/mysql rejected: spec.matches.ports[1]: port 2147483647 is outside 1-65535"},
		{kind: "TrafficSplit", ns: "bookstore", name: "split", spec: `{"service":"bookstore","backends":[{"service":"v1","weight":1},{"service":"v2","weight":0}]}`},
		{kind: "TrafficSplit", ns: "bookstore", name: "split", spec: `{"service":"bookstore","backends":[{"service":"v1","weight":0},{"service":"v2","weight":0}]}`,
			field: "spec.backends", reason: "ZeroTotalWeight",
			msg: "TrafficSplit bookstore/split rejected: spec.backends: the weights of the 2 backends sum to 0"},
		{kind: "UpstreamTrafficSetting", ns: "bookstore", name: "uts",
			spec: `{"host":"bookstore.bookstore.svc.cluster.local","connectionSettings":{"tcp":{"maxConnections":100,"connectTimeout":"2s"}},"rateLimit":{"local":{"http":{"requests":10,"unit":"second"}}},"httpRoutes":[{"path":"/books","rateLimit":{"local":{"requests":1,"unit":"minute"}}}]}`},
		{kind: "UpstreamTrafficSetting", ns: "bookstore", name: "uts",
			spec:  `{"host":"bookstore.bookstore.svc.cluster.local","connectionSettings":{"tcp":{"connectTimeout":"2 seconds"}}}`,
			field: "spec.connectionSettings.tcp.connectTimeout", reason: "InvalidValue",
			msg: `UpstreamTrafficSetting bookstore/uts rejected: spec.connectionSettings.tcp.connectTimeout: "2 seconds" is not a duration (e.g. "500ms", "5s"): time: unknown unit " seconds" in duration "2 seconds"`},
		{kind: "UpstreamTrafficSetting", ns: "bookstore", name: "uts",
			spec: `{"host":"bookstore","outlierDetection":{"consecutive5xxErrors":3,"failurePercentage":{"threshold":50,"minimumHosts":2,"requestVolume":10,"enforcementPercentage":100}}}`},
		{kind: "UpstreamTrafficSetting", ns: "bookstore", name: "uts",
			spec:  `{"host":"bookstore","outlierDetection":{"failurePercentage":{"threshold":101}}}`,
			field: "spec.outlierDetection.failurePercentage.threshold", reason: "InvalidValue",
			msg: "UpstreamTrafficSetting bookstore/uts rejected: spec.outlierDetection.failurePercentage.threshold: 101 is not a percentage (0 to 100)"},
		{kind: "IngressBackend", ns: "httpbin", name: "ib",
			spec: `{"backends":[{"name":"httpbin","port":{"number":14001,"protocol":"http"}}],"sources":[{"kind":"Service","name":"ingress-nginx-controller","namespace":"ingress-nginx"},{"kind":"IPRange","name":"10.0.0.0/8"}]}`},
		{kind: "IngressBackend", ns: "httpbin", name: "ib",
			spec:  `{"backends":[{"name":"httpbin","port":{"number":14001,"protocol":"http"}}],"sources":[{"kind":"IPRange","name":"10.0.0.1"}]}`,
			field: "spec.sources[0].name", reason: "InvalidValue",
			msg: `IngressBackend httpbin/ib rejected: spec.sources[0].name: "10.0.0.1" is not a CIDR range (e.g. 10.0.0.0/8): netip.ParsePrefix("10.0.0.1"): no '/'`},
		{kind: "Retry", ns: "bookbuyer", name: "retry",
			spec: `{"source":{"kind":"ServiceAccount","name":"bookbuyer","namespace":"bookbuyer"},"destinations":[{"kind":"Service","name":"bookstore","namespace":"bookstore"}],"retryPolicy":{"retryOn":"5xx,unavailable","perTryTimeout":"1s","numRetries":3,"retryBackoffBaseInterval":"25ms"}}`},
		{kind: "Retry", ns: "bookbuyer", name: "retry",
			spec:  `{"source":{"kind":"ServiceAccount","name":"bookbuyer","namespace":"bookbuyer"},"destinations":[{"kind":"Service","name":"bookstore","namespace":"bookstore"}],"retryPolicy":{"retryOn":"5xx,4xx","perTryTimeout":"1s","numRetries":3,"retryBackoffBaseInterval":"25ms"}}`,
			field: "spec.retryPolicy.retryOn", reason: "InvalidRetryOn",
			msg: `Retry bookbuyer/retry rejected: spec.retryPolicy.retryOn: unknown retry condition "4xx"; want one of 5xx, gateway-error, reset, reset-before-request, connect-failure, envoy-ratelimited, retriable-4xx, refused-stream, retriable-status-codes, retriable-headers, http3-post-connect-failure (HTTP) or cancelled, deadline-exceeded, internal, resource-exhausted, unavailable (gRPC)`},
		{kind: "Retry", ns: "bookbuyer", name: "retry",
			spec:  `{"source":{"kind":"Group","name":"bookbuyer","namespace":"bookbuyer"},"destinations":[{"kind":"Service","name":"bookstore","namespace":"bookstore"}],"retryPolicy":{"retryOn":"5xx","perTryTimeout":"1s","numRetries":3,"retryBackoffBaseInterval":"25ms"}}`,
			field: "spec.source.kind", reason: "InvalidKind",
			msg: `Retry bookbuyer/retry rejected: spec.source.kind: kind "Group" is not supported, want "ServiceAccount"`},
		{kind: "Retry", ns: "bookbuyer", name: "retry",
			spec:  `{"source":{"kind":"ServiceAccount","name":"bookbuyer","namespace":"bookbuyer"},"destinations":[{"kind":"Service","name":"bookstore","namespace":"bookstore"}],"retryPolicy":{"retryOn":"5xx","perTryTimeout":"1s","numRetries":-1,"retryBackoffBaseInterval":"25ms"}}`,
			field: "spec.retryPolicy.numRetries", reason: "InvalidValue",
			msg: `Retry bookbuyer/retry rejected: spec.retryPolicy.numRetries: -1 is negative`},
		{kind: "Egress", ns: "bookbuyer", name: "github",
			spec: `{"sources":[{"kind":"ServiceAccount","name":"bookbuyer","namespace":"bookbuyer"}],"hosts":["api.github.com"],"ports":[{"number":443,"protocol":"https"}],"matches":[]}`},
		{kind: "Egress", ns: "bookbuyer", name: "books-api", // its HTTPRouteGroup may come later: the compiler's to check
			spec: `{"sources":[{"kind":"ServiceAccount","name":"bookbuyer","namespace":"bookbuyer"}],"hosts":["api.books.example"],"ports":[{"number":80,"protocol":"http"}],"matches":[{"apiGroup":"specs.smi-spec.io/v1alpha4","kind":"HTTPRouteGroup","name":"not-yet-created"}]}`},
		{kind: "Egress", ns: "bookbuyer", name: "db",
			spec:  `{"sources":[{"kind":"ServiceAccount","name":"bookbuyer","namespace":"bookbuyer"}],"ipAddresses":["10.20.0.0/16","10.30.0.0"],"ports":[{"number":5432,"protocol":"tcp"}]}`,
			field: "spec.ipAddresses[1]", reason: "InvalidValue",
			msg: `Egress bookbuyer/db rejected: spec.ipAddresses[1]: "10.30.0.0" is not a CIDR range (e.g. 203.0.113.0/24): netip.ParsePrefix("10.30.0.0"): no '/'`},
		{kind: "Egress", ns: "bookbuyer", name: "gw",
			spec:  `{"sources":[{"kind":"ServiceAccount","name":"bookbuyer","namespace":"bookbuyer","mtls":{"issuer":"osm"}}],"hosts":["api.github.com"],"ports":[{"number":443,"protocol":"https"}]}`,
			field: "spec.sources[0].mtls", reason: "UnsupportedField",
			msg: "Egress bookbuyer/gw rejected: spec.sources[0].mtls: client certificates toward an egress gateway are not supported; remove mtls (the source's traffic leaves its sidecar as the application sent it)"},
		{kind: "MeshConfig", ns: "osm-system", name: "osm-mesh-config", spec: `{"sidecar":{"resources":{"limits":{"cpu":"1"},"requests":{"cpu":"500m"}}}}`},
		{kind: "MeshConfig", ns: "osm-system", name: "osm-mesh-config", spec: `{"sidecar":{"resources":{"limits":{"cpu":"1"},"requests":{"cpu":"2"}}}}`,
			field: "spec.sidecar.resources.requests[cpu]", reason: "InvalidValue",
			msg: "MeshConfig osm-system/osm-mesh-config rejected: spec.sidecar.resources.requests[cpu]: request 2 is above the limit 1; every injected pod would be refused"},
		{kind: "MeshConfig", ns: "osm-system", name: "osm-mesh-config", spec: `{"certificate":{"serviceCertValidityDuration":"0s"}}`,
			field: "spec.certificate.serviceCertValidityDuration", reason: "InvalidValue",
			msg: "MeshConfig osm-system/osm-mesh-config rejected: spec.certificate.serviceCertValidityDuration: 0s is not a positive duration"},
		{kind: "MeshConfig", ns: "osm-system", name: "osm-mesh-config", spec: `{"sidecar":{"tlsMinProtocolVersion":"TLSv1_2","tlsMaxProtocolVersion":"TLSv1_3","cipherSuites":["ECDHE-RSA-AES128-GCM-SHA256"],"ecdhCurves":["X25519"]}}`},
		{kind: "MeshConfig", ns: "osm-system", name: "osm-mesh-config", spec: `{"sidecar":{"tlsMinProtocolVersion":"TLSv1.2"}}`,
			field: "spec.sidecar.tlsMinProtocolVersion", reason: "InvalidValue",
			msg: `MeshConfig osm-system/osm-mesh-config rejected: spec.sidecar.tlsMinProtocolVersion: "TLSv1.2" is not a TLS version; one of TLS_AUTO, TLSv1_0, TLSv1_1, TLSv1_2, TLSv1_3`},
		{kind: "MeshConfig", ns: "osm-system", name: "osm-mesh-config", spec: `{"sidecar":{"cipherSuites":["ECDHE-RSA-AES128-GCM-SHA256","RC4-MD5"]}}`,
			field: "spec.sidecar.cipherSuites[1]", reason: "InvalidValue",
			msg: `MeshConfig osm-system/osm-mesh-config rejected: spec.sidecar.cipherSuites[1]: "RC4-MD5" is not a cipher suite Envoy knows, such as ECDHE-ECDSA-AES128-GCM-SHA256`},
		{kind: "MeshConfig", ns: "osm-system", name: "osm-mesh-config", spec: `{"observability":{"tracing":{"enable":true,"provider":"opentelemetry","address":"otel.tracing","port":4317,"sampledFraction":0.5}}}`},
		{kind: "MeshConfig", ns: "osm-system", name: "osm-mesh-config", spec: `{"observability":{"tracing":{"enable":true,"port":9411}}}`,
			field: "spec.observability.tracing.address", reason: "InvalidValue",
			msg: "MeshConfig osm-system/osm-mesh-config rejected: spec.observability.tracing.address: tracing is enabled but no collector address is set"},
		{kind: "MeshConfig", ns: "osm-system", name: "osm-mesh-config", spec: `{"observability":{"tracing":{"provider":"opentelemetry","endpoint":"/v1/traces"}}}`,
			field: "spec.observability.tracing.endpoint", reason: "InvalidValue",
			msg: `MeshConfig osm-system/osm-mesh-config rejected: spec.observability.tracing.endpoint: "/v1/traces" is set, but the opentelemetry provider sends OTLP over gRPC to address:port and has no endpoint`},
	}
	for _, c := range cases {
		name := c.kind + " valid"
		if c.field != "" {
			name = c.kind + " " + c.reason
		}
		t.Run(name, func(t *testing.T) {
			resp, res := v.Admit(t.Context(), request(t, c.kind, c.ns, c.name, c.spec))
			if c.field == "" {
				if !resp.Allowed || res.Outcome != "allowed" || len(resp.Warnings) != 0 {
					t.Fatalf("valid %s: allowed=%v %+v %v", c.kind, resp.Allowed, res, resp.Result)
				}
				return
			}
			if resp.Allowed || res.Outcome != "denied" {
				t.Fatalf("invalid %s allowed", c.kind)
			}
			st := resp.Result
			if st.Message != c.msg || st.Code != 422 || st.Reason != metav1.StatusReasonInvalid {
				t.Fatalf("status %d %s %q\nwant 422 Invalid %q", st.Code, st.Reason, st.Message, c.msg)
			}
			if d := st.Details; d == nil || d.Kind != c.kind || d.Name != c.name || len(d.Causes) != 1 ||
				d.Causes[0].Field != c.field || string(d.Causes[0].Type) != c.reason {
				t.Fatalf("details %+v, want %s %s, cause %s %s", st.Details, c.kind, c.name, c.field, c.reason)
			}
		})
	}
}

func TestWhatIsNotValidated(t *testing.T) {
	v := New(Options{MeshConfigNamespace: "osm-system", MeshConfigName: "osm-mesh-config"})
	bad := `{"service":"s","backends":[]}`

	del := request(t, "TrafficSplit", "ns", "s", bad)
	del.Operation = admissionv1.Delete
	if resp, res := v.Admit(t.Context(), del); !resp.Allowed || res.Outcome != "skipped" {
		t.Errorf("a delete: %v %+v", resp.Allowed, res)
	}
	status := request(t, "TrafficSplit", "ns", "s", bad)
	status.SubResource = "status"
	if resp, _ := v.Admit(t.Context(), status); !resp.Allowed {
		t.Error("a status update was validated")
	}
	other := request(t, "TrafficSplit", "ns", "s", bad)
	other.Resource.Version = "v1alpha1"
	if resp, res := v.Admit(t.Context(), other); !resp.Allowed || !strings.Contains(res.Reason, "trafficsplits") {
		t.Errorf("another version: %v %+v", resp.Allowed, res)
	}
	upd := request(t, "TrafficSplit", "ns", "s", bad)
	upd.Operation = admissionv1.Update
	if resp, _ := v.Admit(t.Context(), upd); resp.Allowed {
		t.Error("an update to an invalid object was allowed")
	}
}

func TestGeneratedNameAndUnreadableObject(t *testing.T) {
	v := New(Options{})
	req := request(t, "TrafficSplit", "ns", "", `{"service":"s"}`)
	req.Object.Raw = []byte(`{"metadata":{"generateName":"split-"},"spec":{"service":"s"}}`)
	resp, _ := v.Admit(t.Context(), req)
	if resp.Allowed || !strings.HasPrefix(resp.Result.Message, "TrafficSplit ns/split-<generated> rejected: spec.backends:") {
		t.Fatalf("generateName: %v %q", resp.Allowed, resp.Result.Message)
	}
	req.Object.Raw = []byte(`{"spec":{"backends":"x"}}`)
	resp, res := v.Admit(t.Context(), req)
	if resp.Allowed || resp.Result.Code != 400 || !strings.Contains(res.Reason, "TrafficSplit ns/<generated> cannot be read") {
		t.Fatalf("unreadable: %v %+v", resp.Allowed, res)
	}
}

func TestAnotherMeshConfigIsWarnedAbout(t *testing.T) {
	v := New(Options{MeshConfigNamespace: "osm-system", MeshConfigName: "osm-mesh-config"})
	resp, _ := v.Admit(t.Context(), request(t, "MeshConfig", "osm-system", "spare", `{}`))
	if !resp.Allowed || len(resp.Warnings) != 1 || resp.Warnings[0] != "MeshConfig osm-system/spare is not read by this mesh, which reads osm-system/osm-mesh-config" {
		t.Fatalf("allowed=%v warnings %q", resp.Allowed, resp.Warnings)
	}
}

// TestThroughTheHandler: the AdmissionReview the apiserver reads back
// carries the UID, the denial and its cause.
func TestThroughTheHandler(t *testing.T) {
	h := &webhook.Handler{Admit: New(Options{}), Log: logrus.NewEntry(logrus.New())}
	review := admissionv1.AdmissionReview{TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: request(t, "TCPRoute", "db", "mysql", `{"matches":{"ports":[0]}}`)}
	body, _ := json.Marshal(review)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/validate-policy", bytes.NewReader(body)).WithContext(t.Context()))
	// (Content-Type is set below; the first call proves it is required.)
	if rec.Code != http.StatusUnsupportedMediaType {
		t.Fatalf("no Content-Type: %d", rec.Code)
	}
	r := httptest.NewRequest(http.MethodPost, "/validate-policy", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	if out.Response.UID != "uid-1" || out.Response.Allowed || out.Response.Result.Details.Causes[0].Field != "spec.matches.ports[0]" {
		t.Fatalf("response %+v", out.Response)
	}
}

// BenchmarkValidate is the webhook's own CPU per validation (decode and
// judge an HTTPRouteGroup of 10 matches), without the HTTP and TLS.
func BenchmarkValidate(b *testing.B) {
	v := New(Options{})
	var ms []string
	for i := range 10 {
		ms = append(ms, `{"name":"m`+string(rune('a'+i))+`","methods":["GET","POST"],"pathRegex":"/books/[0-9]+","headers":[{"x-user":"[a-z]+"}]}`)
	}
	req := &admissionv1.AdmissionRequest{UID: "u", Resource: metav1.GroupVersionResource{Group: "specs.smi-spec.io", Version: "v1alpha4", Resource: "httproutegroups"},
		Namespace: "bookstore", Name: "routes", Operation: admissionv1.Create,
		Object: runtime.RawExtension{Raw: []byte(`{"spec":{"matches":[` + strings.Join(ms, ",") + `]}}`)}}
	for b.Loop() {
		if resp, _ := v.Admit(b.Context(), req); !resp.Allowed {
			b.Fatal(resp.Result.Message)
		}
	}
}
