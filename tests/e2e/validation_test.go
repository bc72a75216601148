package e2e

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/osmpolicy"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	"github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/stack"
)

// policyObject is an object of one of the policy kinds, in namespace ns.
func policyObject(gvr schema.GroupVersionResource, kind, name string, spec map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": gvr.GroupVersion().String(), "kind": kind,
		"metadata": map[string]any{"name": name}, "spec": spec,
	}}
}

// createPolicy creates obj in ns through the apiserver (dry run: nothing
// stored).
func createPolicy(ctx context.Context, gvr schema.GroupVersionResource, ns string, obj *unstructured.Unstructured, dryRun bool) error {
	o := metav1.CreateOptions{}
	if dryRun {
		o.DryRun = []string{metav1.DryRunAll}
	}
	_, err := cluster.Dynamic().Resource(gvr).Namespace(ns).Create(ctx, obj, o)
	return err
}

// deniedBy checks that err is the webhook's refusal: Invalid, the
// message 'admission webhook "<hook>" denied the request: <verdict>', and
// the field and reason as the cause.
func deniedBy(err error, hook, verdict, field, reason string) error {
	if err == nil {
		return errors.New("created; want the webhook's refusal")
	}
	want := fmt.Sprintf("admission webhook %q denied the request: %s", hook, verdict)
	if !apierrors.IsInvalid(err) || err.Error() != want {
		return fmt.Errorf("refused with %q (invalid=%v), want %q", err.Error(), apierrors.IsInvalid(err), want)
	}
	var st apierrors.APIStatus
	if !errors.As(err, &st) || st.Status().Details == nil || len(st.Status().Details.Causes) != 1 ||
		st.Status().Details.Causes[0].Field != field || string(st.Status().Details.Causes[0].Type) != reason {
		return fmt.Errorf("causes %+v, want field %s reason %s", st.Status().Details, field, reason)
	}
	return nil
}

// TestPolicyValidation: the real apiserver calls the injector's
// validating webhook for the policy kinds; per kind an invalid object is
// refused naming the object, the field path and the reason in the words
// of the compiler's PolicyStatus, a valid one is stored, and the webhook
// configuration's caBundle follows a trust bundle change. It logs the
// admission latency of a validation call.
func TestPolicyValidation(t *testing.T) {
	ctx := t.Context()
	m := meshUp(t)
	run := uniq()
	const hook, mcHook = "policy-validator.openservicemesh.io", "meshconfig-validator.openservicemesh.io"
	badSplit := func(name string) *unstructured.Unstructured {
		return policyObject(kube.TrafficSplits, "TrafficSplit", name, map[string]any{"service": "bookstore",
			"backends": []any{map[string]any{"service": "bookstore-v1", "weight": int64(0)}, map[string]any{"service": "bookstore-v2", "weight": int64(0)}}})
	}
	// The configuration is written once the injector is ready; the
	// apiserver's webhook informer picks it up shortly after.
	eventually(t, "the webhook refusing an invalid TrafficSplit", 30*time.Second, func() error {
		return deniedBy(createPolicy(ctx, kube.TrafficSplits, "bookstore", badSplit("probe"), true), hook,
			"TrafficSplit bookstore/probe rejected: spec.backends: the weights of the 2 backends sum to 0", "spec.backends", "ZeroTotalWeight")
	})

	cases := []struct {
		name, ns   string
		gvr        schema.GroupVersionResource
		obj        *unstructured.Unstructured
		hook       string
		verdict    string
		field, why string
	}{
		{name: "TrafficTarget to another namespace", ns: "bookstore", gvr: kube.TrafficTargets, hook: hook,
			obj: policyObject(kube.TrafficTargets, "TrafficTarget", "tt"+run, map[string]any{
				"destination": map[string]any{"kind": "ServiceAccount", "name": "bookbuyer", "namespace": "bookbuyer"},
				"rules":       []any{map[string]any{"kind": "HTTPRouteGroup", "name": "routes"}}}),
			verdict: `TrafficTarget bookstore/tt` + run + ` rejected: spec.destination.namespace: namespace "bookbuyer" differs from the TrafficTarget's namespace "bookstore"; a TrafficTarget counts only in its destination's namespace`,
			field:   "spec.destination.namespace", why: "CrossNamespaceDestination"},
		{name: "HTTPRouteGroup with an invalid regex", ns: "bookstore", gvr: kube.HTTPRouteGroups, hook: hook,
			obj: policyObject(kube.HTTPRouteGroups, "HTTPRouteGroup", "hrg"+run, map[string]any{
				"matches": []any{map[string]any{"name": "buy", "pathRegex": "(a-book"}}}),
			verdict: "HTTPRouteGroup bookstore/hrg" + run + " rejected: spec.matches[0].pathRegex: invalid RE2 regular expression \"(a-book\": error parsing regexp: missing closing ): `(a-book`",
			field:   "spec.matches[0].pathRegex", why: "InvalidRegex"},
		{name: "TrafficSplit whose weights sum to 0", ns: "bookstore", gvr: kube.TrafficSplits, hook: hook, obj: badSplit("ts" + run),
			verdict: "TrafficSplit bookstore/ts" + run + " rejected: spec.backends: the weights of the 2 backends sum to 0",
			field:   "spec.backends", why: "ZeroTotalWeight"},
		{name: "Retry with an unknown retryOn condition", ns: "bookstore", gvr: osmpolicy.RetryGVR, hook: hook,
			obj:     &unstructured.Unstructured{Object: retryObject("retry"+run, "bookstore", "bookstore", "bookwarehouse", "bookwarehouse", "5xx,4xx")},
			verdict: "Retry bookstore/retry" + run + ` rejected: spec.retryPolicy.retryOn: unknown retry condition "4xx"; want one of 5xx, gateway-error, reset, reset-before-request, connect-failure, envoy-ratelimited, retriable-4xx, refused-stream, retriable-status-codes, retriable-headers, http3-post-connect-failure (HTTP) or cancelled, deadline-exceeded, internal, resource-exhausted, unavailable (gRPC)`,
			field:   "spec.retryPolicy.retryOn", why: "InvalidRetryOn"},
		{name: "Retry whose source is not a ServiceAccount", ns: "bookstore", gvr: osmpolicy.RetryGVR, hook: hook,
			obj: func() *unstructured.Unstructured {
				o := retryObject("retry-src"+run, "bookstore", "bookstore", "bookwarehouse", "bookwarehouse", "5xx")
				o["spec"].(map[string]any)["source"].(map[string]any)["kind"] = "Service"
				return &unstructured.Unstructured{Object: o}
			}(),
			verdict: "Retry bookstore/retry-src" + run + ` rejected: spec.source.kind: kind "Service" is not supported, want "ServiceAccount"`,
			field:   "spec.source.kind", why: "InvalidKind"},
		{name: "Egress with a malformed CIDR", ns: "bookstore", gvr: osmpolicy.EgressGVR, hook: hook,
			obj: policyObject(osmpolicy.EgressGVR, "Egress", "eg"+run, map[string]any{
				"sources":     []any{map[string]any{"kind": "ServiceAccount", "name": "bookstore-v1", "namespace": "bookstore"}},
				"ipAddresses": []any{"10.20.0.0"},
				"ports":       []any{map[string]any{"number": int64(5432), "protocol": "tcp"}}}),
			verdict: "Egress bookstore/eg" + run + ` rejected: spec.ipAddresses[0]: "10.20.0.0" is not a CIDR range (e.g. 203.0.113.0/24): netip.ParsePrefix("10.20.0.0"): no '/'`,
			field:   "spec.ipAddresses[0]", why: "InvalidValue"},
		{name: "IngressBackend with a malformed IPRange", ns: "bookstore", gvr: kube.IngressBackends, hook: hook,
			obj: policyObject(kube.IngressBackends, "IngressBackend", "ib"+run, map[string]any{
				"backends": []any{map[string]any{"name": "bookstore-v1", "port": map[string]any{"number": int64(14001), "protocol": "http"}}},
				"sources":  []any{map[string]any{"kind": "IPRange", "name": "10.0.0.0/33"}}}),
			verdict: "IngressBackend bookstore/ib" + run + ` rejected: spec.sources[0].name: "10.0.0.0/33" is not a CIDR range (e.g. 10.0.0.0/8): netip.ParsePrefix("10.0.0.0/33"): prefix length out of range`,
			field:   "spec.sources[0].name", why: "InvalidValue"},
		{name: "UpstreamTrafficSetting with a duration that does not parse", ns: "bookstore", gvr: kube.UpstreamTrafficSettings, hook: hook,
			obj: policyObject(kube.UpstreamTrafficSettings, "UpstreamTrafficSetting", "uts"+run, map[string]any{
				"host":               "bookstore.bookstore.svc.cluster.local",
				"connectionSettings": map[string]any{"tcp": map[string]any{"maxConnections": int64(10), "connectTimeout": "2 seconds"}}}),
			verdict: `UpstreamTrafficSetting bookstore/uts` + run + ` rejected: spec.connectionSettings.tcp.connectTimeout: "2 seconds" is not a duration (e.g. "500ms", "5s"): time: unknown unit " seconds" in duration "2 seconds"`,
			field:   "spec.connectionSettings.tcp.connectTimeout", why: "InvalidValue"},
		{name: "UpstreamTrafficSetting for a Service of another namespace", ns: "bookstore", gvr: kube.UpstreamTrafficSettings, hook: hook,
			obj: policyObject(kube.UpstreamTrafficSettings, "UpstreamTrafficSetting", "uts-ns"+run, map[string]any{
				"host": "bookbuyer.bookbuyer.svc.cluster.local"}),
			verdict: `UpstreamTrafficSetting bookstore/uts-ns` + run + ` rejected: spec.host: "bookbuyer.bookbuyer.svc.cluster.local" names Service bookbuyer/bookbuyer, outside the UpstreamTrafficSetting's namespace bookstore: an UpstreamTrafficSetting lives in its upstream's namespace`,
			field:   "spec.host", why: "CrossNamespaceDestination"},
		{name: "MeshConfig with a request above its limit", ns: "osm-system", gvr: kube.MeshConfigs, hook: mcHook,
			obj: policyObject(kube.MeshConfigs, "MeshConfig", "mc"+run, map[string]any{"sidecar": map[string]any{
				"resources": map[string]any{"limits": map[string]any{"cpu": "1"}, "requests": map[string]any{"cpu": "2"}}}}),
			verdict: "MeshConfig osm-system/mc" + run + " rejected: spec.sidecar.resources.requests[cpu]: request 2 is above the limit 1; every injected pod would be refused",
			field:   "spec.sidecar.resources.requests[cpu]", why: "InvalidValue"},
	}
	for _, c := range cases {
		t.Run("refused: "+c.name, func(t *testing.T) {
			err := createPolicy(ctx, c.gvr, c.ns, c.obj, false)
			if err := deniedBy(err, c.hook, c.verdict, c.field, c.why); err != nil {
				t.Fatal(err)
			}
			t.Logf("kubectl would print: %v", err)
		})
	}
	t.Run("refused: TCPRoute with a port out of range, by the CRD's schema before the webhook", func(t *testing.T) {
		// Every TCPRoute rule is structural, so the chart's CRD refuses
		// first (the webhook's TCPRoute check covers CRDs installed
		// without those bounds, e.g. an older install's).
		err := createPolicy(ctx, kube.TCPRoutes, "bookstore", policyObject(kube.TCPRoutes, "TCPRoute", "tcp"+run,
			map[string]any{"matches": map[string]any{"ports": []any{int64(70000)}}}), false)
		var st apierrors.APIStatus
		if !apierrors.IsInvalid(err) || !errors.As(err, &st) || st.Status().Details.Causes[0].Field != "spec.matches.ports[0]" ||
			!strings.Contains(err.Error(), "TCPRoute.specs.smi-spec.io \"tcp"+run+"\" is invalid") {
			t.Fatalf("got %v, want Invalid naming the TCPRoute and spec.matches.ports[0]", err)
		}
	})

	validCalls := func() float64 {
		v, _ := apptest.MetricValue(m.AdminAddr(stack.Injector), "osm_injector_policy_validations_total", `outcome="allowed"`)
		return v
	}
	t.Run("valid objects stored, including a TrafficTarget whose route comes later", func(t *testing.T) {
		before := validCalls()
		valid := []struct {
			gvr schema.GroupVersionResource
			ns  string
			obj *unstructured.Unstructured
		}{
			{kube.TrafficTargets, "bookstore", policyObject(kube.TrafficTargets, "TrafficTarget", "ok-tt"+run, map[string]any{
				"destination": map[string]any{"kind": "ServiceAccount", "name": "bookstore", "namespace": "bookstore"},
				"sources":     []any{map[string]any{"kind": "ServiceAccount", "name": "bookbuyer", "namespace": "bookbuyer"}},
				"rules":       []any{map[string]any{"kind": "HTTPRouteGroup", "name": "not-yet-created" + run}}})},
			{kube.HTTPRouteGroups, "bookstore", policyObject(kube.HTTPRouteGroups, "HTTPRouteGroup", "not-yet-created"+run, map[string]any{
				"matches": []any{map[string]any{"name": "buy", "methods": []any{"GET"}, "pathRegex": "/buy",
					"headers": []any{map[string]any{"user-agent": ".*"}}}}})},
			{kube.TCPRoutes, "bookstore", policyObject(kube.TCPRoutes, "TCPRoute", "ok-tcp"+run, map[string]any{
				"matches": map[string]any{"ports": []any{int64(3306)}}})},
			{kube.TrafficSplits, "bookstore", policyObject(kube.TrafficSplits, "TrafficSplit", "ok-ts"+run, map[string]any{"service": "bookstore",
				"backends": []any{map[string]any{"service": "bookstore-v1", "weight": int64(90)}, map[string]any{"service": "bookstore-v2", "weight": int64(10)}}})},
			{osmpolicy.RetryGVR, "bookstore", &unstructured.Unstructured{Object: retryObject("ok-retry"+run, "bookstore", "bookstore", "bookwarehouse", "bookwarehouse", "5xx,unavailable")}},
			{osmpolicy.EgressGVR, "bookstore", policyObject(osmpolicy.EgressGVR, "Egress", "ok-eg"+run, map[string]any{
				"sources": []any{map[string]any{"kind": "ServiceAccount", "name": "bookstore-v1", "namespace": "bookstore"}},
				"hosts":   []any{"httpbin.org"},
				"ports":   []any{map[string]any{"number": int64(80), "protocol": "http"}},
				"matches": []any{map[string]any{"apiGroup": "specs.smi-spec.io/v1alpha4", "kind": "HTTPRouteGroup", "name": "not-yet-created" + run}}})},
			{kube.UpstreamTrafficSettings, "bookstore", policyObject(kube.UpstreamTrafficSettings, "UpstreamTrafficSetting", "ok-uts"+run, map[string]any{
				"host":               "bookstore-v1",
				"connectionSettings": map[string]any{"http": map[string]any{"maxRequests": int64(100)}},
				"rateLimit":          map[string]any{"local": map[string]any{"http": map[string]any{"requests": int64(10), "unit": "second"}}}})},
			{kube.IngressBackends, "bookstore", policyObject(kube.IngressBackends, "IngressBackend", "ok-ib"+run, map[string]any{
				"backends": []any{map[string]any{"name": "bookstore-v1", "port": map[string]any{"number": int64(14001), "protocol": "https"},
					"tls": map[string]any{"skipClientCertValidation": false, "sniHosts": []any{"bookstore-v1.bookstore.svc.cluster.local"}}}},
				"sources": []any{map[string]any{"kind": "Service", "name": "ingress-nginx-controller", "namespace": "ingress-nginx"},
					map[string]any{"kind": "AuthenticatedPrincipal", "name": "ingress-nginx.ingress-nginx.cluster.local"}}})},
			{kube.MeshConfigs, "osm-system", policyObject(kube.MeshConfigs, "MeshConfig", "ok-mc"+run, map[string]any{"sidecar": map[string]any{
				"resources": map[string]any{"limits": map[string]any{"cpu": "1"}, "requests": map[string]any{"cpu": "500m"}}}})},
		}
		for _, v := range valid {
			if err := createPolicy(ctx, v.gvr, v.ns, v.obj, false); err != nil {
				t.Fatalf("valid %s refused: %v", v.obj.GetKind(), err)
			}
			t.Cleanup(func() {
				_ = cluster.Dynamic().Resource(v.gvr).Namespace(v.ns).Delete(context.Background(), v.obj.GetName(), metav1.DeleteOptions{})
			})
		}
		// Each went through the webhook (the TCPRoute included).
		if got := validCalls() - before; got != float64(len(valid)) {
			t.Fatalf("the webhook allowed %v objects, want %d", got, len(valid))
		}
	})

	t.Run("admission latency of a validation call", func(t *testing.T) {
		// Dry-run creates of a valid HTTPRouteGroup through the apiserver:
		// in the mesh's namespace (the webhook is called) and in one it
		// does not monitor (it is not); the difference is the webhook's
		// share. 200 each, interleaved, on a machine shared with other work.
		namespace(t, "plain", nil)
		obj := policyObject(kube.HTTPRouteGroups, "HTTPRouteGroup", "lat"+run, map[string]any{
			"matches": []any{map[string]any{"name": "buy", "methods": []any{"GET", "POST"}, "pathRegex": "/books/[0-9]+"}}})
		var with, without []time.Duration
		for range 200 {
			for _, ns := range []string{"bookstore", "plain"} {
				start := time.Now()
				if err := createPolicy(ctx, kube.HTTPRouteGroups, ns, obj, true); err != nil {
					t.Fatal(err)
				}
				if ns == "bookstore" {
					with = append(with, time.Since(start))
				} else {
					without = append(without, time.Since(start))
				}
			}
		}
		p := func(d []time.Duration, q float64) time.Duration {
			slices.Sort(d)
			return d[int(q*float64(len(d)-1))].Round(10 * time.Microsecond)
		}
		t.Logf("dry-run create through the apiserver, n=%d: with the webhook p50 %s p99 %s; without p50 %s p99 %s",
			len(with), p(with, 0.5), p(with, 0.99), p(without, 0.5), p(without, 0.99))
		// The webhook's own time per call, from its histogram.
		n, _ := apptest.MetricValue(m.AdminAddr(stack.Injector), "osm_injector_policy_validation_seconds_count", `outcome="allowed"`)
		sum, _ := apptest.MetricValue(m.AdminAddr(stack.Injector), "osm_injector_policy_validation_seconds_sum", `outcome="allowed"`)
		if n > 0 {
			t.Logf("the webhook's handler: %d calls, mean %s", int(n), time.Duration(sum/n*float64(time.Second)).Round(time.Microsecond))
		}
	})

	t.Run("the caBundle follows a trust bundle change and refusals go on", func(t *testing.T) {
		cs := cluster.Clientset()
		second := "osm-ca-root-val" + uniq()
		t.Cleanup(func() {
			_ = cs.CoreV1().Secrets("osm-system").Delete(context.Background(), second, metav1.DeleteOptions{})
		})
		cert := injectorCert(t, m)
		before, err := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, m.ValidatingWebhookConfigName(), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Restart(ctx, stack.CertAuthority, "--trusted-root-secrets", second); err != nil {
			t.Fatal(err)
		}
		conn, err := m.DialCA(cert)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		resp, err := cav1.NewCertificateAuthorityServiceClient(conn).GetTrustBundle(ctx, &cav1.GetTrustBundleRequest{})
		if err != nil {
			t.Fatal(err)
		}
		rotated := caclient.RootsPEM(resp.GetTrustBundle())
		if len(resp.GetTrustBundle().GetRoots()) != 2 || string(rotated) == string(before.Webhooks[0].ClientConfig.CABundle) {
			t.Fatalf("the CA's bundle holds %d roots after adding one, want 2", len(resp.GetTrustBundle().GetRoots()))
		}
		eventually(t, "both validating webhooks with the rotated bundle", 60*time.Second, func() error {
			cfg, err := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, m.ValidatingWebhookConfigName(), metav1.GetOptions{})
			if err != nil {
				return err
			}
			for _, h := range cfg.Webhooks {
				if string(h.ClientConfig.CABundle) != string(rotated) {
					return fmt.Errorf("webhook %s: caBundle holds %d certificates, not the rotated bundle's 2", h.Name, strings.Count(string(h.ClientConfig.CABundle), "BEGIN CERTIFICATE"))
				}
			}
			return nil
		})
		eventually(t, "a refusal after the rotation step", 30*time.Second, func() error {
			return deniedBy(createPolicy(ctx, kube.TrafficSplits, "bookstore", badSplit("after"), true), hook,
				"TrafficSplit bookstore/after rejected: spec.backends: the weights of the 2 backends sum to 0", "spec.backends", "ZeroTotalWeight")
		})
	})
}

// TestUpstreamFailurePercentageSchema: the UpstreamTrafficSetting CRD
// carries spec.outlierDetection.failurePercentage with its bounds: the
// apiserver stores its four fields as written (no pruning) and refuses a
// threshold or enforcementPercentage above 100 and a negative
// minimumHosts, naming the field, before any webhook.
func TestUpstreamFailurePercentageSchema(t *testing.T) {
	ctx := t.Context()
	namespace(t, "fp-schema", nil)
	uts := func(name string, fp map[string]any) *unstructured.Unstructured {
		return policyObject(kube.UpstreamTrafficSettings, "UpstreamTrafficSetting", name, map[string]any{
			"host": "bookstore", "outlierDetection": map[string]any{"failurePercentage": fp}})
	}
	ok := map[string]any{"threshold": int64(50), "minimumHosts": int64(2), "requestVolume": int64(10), "enforcementPercentage": int64(100)}
	got, err := cluster.Dynamic().Resource(kube.UpstreamTrafficSettings).Namespace("fp-schema").Create(ctx, uts("ok", ok), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if fp, _, _ := unstructured.NestedMap(got.Object, "spec", "outlierDetection", "failurePercentage"); fmt.Sprint(fp) != fmt.Sprint(ok) {
		t.Errorf("stored failurePercentage %v, want %v", fp, ok)
	}
	for field, fp := range map[string]map[string]any{
		"threshold":             {"threshold": int64(101)},
		"enforcementPercentage": {"enforcementPercentage": int64(150)},
		"minimumHosts":          {"minimumHosts": int64(-1)},
	} {
		err := createPolicy(ctx, kube.UpstreamTrafficSettings, "fp-schema", uts("bad", fp), true)
		path := "spec.outlierDetection.failurePercentage." + field
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), path+": Invalid value") {
			t.Errorf("%s %v: %v, want Invalid naming %s", field, fp[field], err, path)
		}
	}
}
