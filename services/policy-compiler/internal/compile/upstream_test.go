package compile

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	httplrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/policy"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

// withUpstreams is the bookstore with synth.BookstoreUpstreams.
func withUpstreams(t *testing.T, permissive bool) (*Engine, *Delta) {
	t.Helper()
	e := newEngine()
	d := load(t, e, append(synth.Bookstore(permissive), synth.BookstoreUpstreams()...))
	return e, d
}

// TestUpstreamGolden: the Envoy resources of the bookstore with
// UpstreamTrafficSettings on bookstore-v1 (http) and mysql (tcp), in both
// modes; every resource passed ValidateAll (load fails on Invalid).
func TestUpstreamGolden(t *testing.T) {
	for _, mode := range []string{"smi", "permissive"} {
		t.Run(mode, func(t *testing.T) {
			e, d := withUpstreams(t, mode == "permissive")
			for _, st := range d.Statuses {
				if st.GetCondition() != meshv1.PolicyCondition_POLICY_CONDITION_ACCEPTED {
					t.Errorf("%s", st.GetMessage())
				}
			}
			got := dump(t, e)
			path := filepath.Join("testdata", "upstream_"+mode+".golden")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("compiled output differs from %s (run with -update after checking the change):\n%s", path, firstDiff(string(want), string(got)))
			}
		})
	}
}

// TestUpstreamEnvoyMapping reads the settings back from the resources:
// the client cluster's circuit breakers, outlier detection and connect
// timeout, and the inbound HTTP rate limits (virtual host, route) and
// route timeout.
func TestUpstreamEnvoyMapping(t *testing.T) {
	e, _ := withUpstreams(t, false)
	c := decode(t, e, layout.TypeCluster, "bookstore/bookstore-v1|14001", &clusterv3.Cluster{})
	th := c.GetCircuitBreakers().GetThresholds()
	if len(th) != 1 || th[0].GetMaxConnections().GetValue() != 100 || th[0].GetMaxRequests().GetValue() != 200 ||
		th[0].GetMaxPendingRequests().GetValue() != 50 || th[0].GetMaxRetries().GetValue() != 3 {
		t.Errorf("circuit breakers = %v", th)
	}
	if od := c.GetOutlierDetection(); od.GetConsecutive_5Xx().GetValue() != 3 || od.GetInterval().AsDuration().Seconds() != 5 ||
		od.GetBaseEjectionTime().AsDuration().Seconds() != 30 || od.GetMaxEjectionPercent().GetValue() != 100 ||
		od.GetFailurePercentageThreshold().GetValue() != 50 || od.GetFailurePercentageMinimumHosts().GetValue() != 2 ||
		od.GetFailurePercentageRequestVolume().GetValue() != 20 || od.GetEnforcingFailurePercentage().GetValue() != 100 {
		t.Errorf("outlier detection = %v", od)
	}
	if c.GetConnectTimeout().AsDuration().Seconds() != 3 {
		t.Errorf("connect timeout = %v", c.GetConnectTimeout())
	}
	// The other services' clusters carry none of it.
	if v2 := decode(t, e, layout.TypeCluster, "bookstore/bookstore-v2|14001", &clusterv3.Cluster{}); v2.GetCircuitBreakers() != nil || v2.GetOutlierDetection() != nil {
		t.Errorf("bookstore-v2's cluster has bookstore-v1's settings")
	}
	l := decode(t, e, layout.TypeListener, InboundListenerName(id("bookstore", "bookstore-v1")), &listenerv3.Listener{})
	h := unpack(t, l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig(), &hcmv3.HttpConnectionManager{})
	var names []string
	for _, f := range h.GetHttpFilters() {
		names = append(names, f.GetName())
	}
	if !slices.Equal(names, []string{httpRBACFilter, httpRateLimitFilterName, "envoy.filters.http.router"}) {
		t.Errorf("http filters = %v", names)
	}
	vh := h.GetRouteConfig().GetVirtualHosts()[0]
	vl := unpack(t, vh.GetTypedPerFilterConfig()[httpRateLimitFilterName], &httplrlv3.LocalRateLimit{})
	if b := vl.GetTokenBucket(); b.GetMaxTokens() != 110 || b.GetTokensPerFill().GetValue() != 100 || b.GetFillInterval().AsDuration().Minutes() != 1 ||
		vl.GetStatus().GetCode() != 503 || vl.GetFilterEnforced().GetDefaultValue().GetNumerator() != 100 {
		t.Errorf("virtual host limit = %v", vl)
	}
	found := false
	for _, rt := range vh.GetRoutes() {
		if rt.GetMatch().GetSafeRegex().GetRegex() != "/books-bought" {
			if rt.GetTypedPerFilterConfig()[httpRateLimitFilterName] != nil {
				t.Errorf("route %s has the /books-bought limit", rt.GetName())
			}
			continue
		}
		found = true
		rl := unpack(t, rt.GetTypedPerFilterConfig()[httpRateLimitFilterName], &httplrlv3.LocalRateLimit{})
		if rl.GetTokenBucket().GetTokensPerFill().GetValue() != 10 || rl.GetTokenBucket().GetFillInterval().AsDuration().Seconds() != 1 {
			t.Errorf("route limit = %v", rl)
		}
		if rt.GetRoute().GetTimeout().AsDuration().Seconds() != 2 {
			t.Errorf("route timeout = %v", rt.GetRoute().GetTimeout())
		}
	}
	if !found {
		t.Error("no /books-bought route on bookstore-v1's inbound")
	}
	ml := decode(t, e, layout.TypeListener, InboundListenerName(id("bookwarehouse", "mysql")), &listenerv3.Listener{})
	if f := ml.GetFilterChains()[0].GetFilters(); len(f) != 3 || f[0].GetName() != netRateLimitFilterName {
		t.Errorf("mysql inbound filters = %v, want the network local rate limit first", f)
	}
}

func upstreamWith(mut func(u *meshv1.UpstreamTrafficSetting)) synth.Object {
	o := synth.BookstoreUpstreams()[0]
	o.Msg = proto.Clone(o.Msg)
	mut(o.Msg.(*meshv1.UpstreamTrafficSetting))
	return o
}

// TestUpstreamRejections: each rejection names the field, in the words
// of libs/policy (which the validating webhook uses too), and the last
// accepted version stays applied.
func TestUpstreamRejections(t *testing.T) {
	cases := []struct {
		name          string
		obj           synth.Object
		reason, field string
		message       string
	}{
		{
			name:   "host names no Service",
			obj:    upstreamWith(func(u *meshv1.UpstreamTrafficSetting) { u.Host = "bookstore-v9.bookstore.svc.cluster.local" }),
			reason: policy.ReasonServiceNotFound, field: "spec.host",
			message: `UpstreamTrafficSetting bookstore/bookstore-v1 rejected: spec.host: "bookstore-v9.bookstore.svc.cluster.local" names Service bookstore/bookstore-v9, which does not exist`,
		},
		{
			name:   "host in another namespace",
			obj:    upstreamWith(func(u *meshv1.UpstreamTrafficSetting) { u.Host = "mysql.bookwarehouse" }),
			reason: policy.ReasonCrossNamespace, field: "spec.host",
			message: `UpstreamTrafficSetting bookstore/bookstore-v1 rejected: spec.host: "mysql.bookwarehouse" names Service bookwarehouse/mysql, outside the UpstreamTrafficSetting's namespace bookstore: an UpstreamTrafficSetting lives in its upstream's namespace`,
		},
		{
			name:   "bad duration",
			obj:    upstreamWith(func(u *meshv1.UpstreamTrafficSetting) { u.ConnectionSettings.Tcp.ConnectTimeout = "3 seconds" }),
			reason: policy.ReasonInvalidValue, field: "spec.connectionSettings.tcp.connectTimeout",
			message: `UpstreamTrafficSetting bookstore/bookstore-v1 rejected: spec.connectionSettings.tcp.connectTimeout: "3 seconds" is not a duration (e.g. "500ms", "5s"): time: unknown unit " seconds" in duration "3 seconds"`,
		},
		{
			name:   "bad route regex",
			obj:    upstreamWith(func(u *meshv1.UpstreamTrafficSetting) { u.HttpRoutes[0].Path = "/books(" }),
			reason: policy.ReasonInvalidRegex, field: "spec.httpRoutes[0].path",
			message: "UpstreamTrafficSetting bookstore/bookstore-v1 rejected: spec.httpRoutes[0].path: invalid RE2 regular expression \"/books(\": error parsing regexp: missing closing ): `/books(`",
		},
		{
			name: "failure percentage threshold over 100",
			obj: upstreamWith(func(u *meshv1.UpstreamTrafficSetting) {
				u.OutlierDetection.FailurePercentage.Threshold = proto.Int64(120)
			}),
			reason: policy.ReasonInvalidValue, field: "spec.outlierDetection.failurePercentage.threshold",
			message: "UpstreamTrafficSetting bookstore/bookstore-v1 rejected: spec.outlierDetection.failurePercentage.threshold: 120 is not a percentage (0 to 100)",
		},
		{
			name: "failure percentage enforcement negative",
			obj: upstreamWith(func(u *meshv1.UpstreamTrafficSetting) {
				u.OutlierDetection.FailurePercentage.EnforcementPercentage = proto.Int64(-1)
			}),
			reason: policy.ReasonInvalidValue, field: "spec.outlierDetection.failurePercentage.enforcementPercentage",
			message: "UpstreamTrafficSetting bookstore/bookstore-v1 rejected: spec.outlierDetection.failurePercentage.enforcementPercentage: -1 is not a percentage (0 to 100)",
		},
		{
			name: "failure percentage request volume out of range",
			obj: upstreamWith(func(u *meshv1.UpstreamTrafficSetting) {
				u.OutlierDetection.FailurePercentage.RequestVolume = proto.Int64(-3)
			}),
			reason: policy.ReasonInvalidValue, field: "spec.outlierDetection.failurePercentage.requestVolume",
			message: "UpstreamTrafficSetting bookstore/bookstore-v1 rejected: spec.outlierDetection.failurePercentage.requestVolume: -3 is out of range (0 to 4294967295)",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, _ := withUpstreams(t, false)
			before := e.Resource(layout.TypeCluster, "bookstore/bookstore-v1|14001").Version
			d := apply(t, e, c.obj)
			if len(d.Statuses) != 1 {
				t.Fatalf("statuses = %v", d.Statuses)
			}
			st := d.Statuses[0]
			if st.GetCondition() != meshv1.PolicyCondition_POLICY_CONDITION_REJECTED || st.GetReason() != c.reason || st.GetFieldPath() != c.field || st.GetMessage() != c.message {
				t.Errorf("status = %s %s %s %q\nwant %s %s %q", st.GetCondition(), st.GetReason(), st.GetFieldPath(), st.GetMessage(), c.reason, c.field, c.message)
			}
			if st.GetObject().GetKind() != "UpstreamTrafficSetting" {
				t.Errorf("kind = %q", st.GetObject().GetKind())
			}
			if got := e.Resource(layout.TypeCluster, "bookstore/bookstore-v1|14001").Version; got != before {
				t.Error("a rejected edit changed the cluster: the last accepted version must stay")
			}
		})
	}
}

// TestUpstreamHostConflict: a second setting for one Service is rejected
// naming the first (by name), applies nothing, and takes over when the
// first is deleted.
func TestUpstreamHostConflict(t *testing.T) {
	e, _ := withUpstreams(t, false)
	second := synth.UpstreamTrafficSetting("bookstore", "zz-bookstore-v1", "bookstore-v1", nil)
	d := apply(t, e, second)
	if len(d.Statuses) != 1 || d.Statuses[0].GetReason() != policy.ReasonHostConflict || d.Statuses[0].GetFieldPath() != "spec.host" ||
		d.Statuses[0].GetMessage() != `UpstreamTrafficSetting bookstore/zz-bookstore-v1 rejected: spec.host: "bookstore-v1" names Service bookstore/bookstore-v1, which UpstreamTrafficSetting bookstore/bookstore-v1 already configures: one UpstreamTrafficSetting per upstream` {
		t.Fatalf("statuses = %v", d.Statuses)
	}
	if len(d.Resources) != 0 {
		t.Errorf("a rejected setting changed %v", keys(d))
	}
	d = remove(t, e, layout.KindUpstreamTrafficSetting, "bookstore", "bookstore-v1")
	if len(d.Statuses) != 1 || d.Statuses[0].GetCondition() != meshv1.PolicyCondition_POLICY_CONDITION_ACCEPTED || d.Statuses[0].GetObject().GetName() != "zz-bookstore-v1" {
		t.Fatalf("after the first's deletion, statuses = %v", d.Statuses)
	}
	c := decode(t, e, layout.TypeCluster, "bookstore/bookstore-v1|14001", &clusterv3.Cluster{})
	if c.GetCircuitBreakers().GetThresholds()[0].GetMaxConnections().GetValue() != 100 || c.GetConnectTimeout().AsDuration().Seconds() != 2 {
		t.Errorf("cluster after the takeover = %v", c)
	}
	equalsCold(t, e)
}

// TestUpstreamWaitsForItsService: a setting whose Service does not exist
// yet is rejected, then accepted when the Service appears.
func TestUpstreamWaitsForItsService(t *testing.T) {
	e := newEngine()
	var objs []synth.Object
	for _, o := range synth.Bookstore(false) {
		if o.Kind == layout.KindService && o.Name == "mysql" {
			continue
		}
		objs = append(objs, o)
	}
	d := load(t, e, append(objs, synth.BookstoreUpstreams()...))
	var rejected bool
	for _, st := range d.Statuses {
		if st.GetObject().GetName() == "mysql" && st.GetReason() == policy.ReasonServiceNotFound {
			rejected = true
		}
	}
	if !rejected {
		t.Fatal("the mysql setting was not rejected for its missing Service")
	}
	svc := synth.Service("bookwarehouse", "mysql", "10.96.20.2", map[string]string{"app": "mysql"}, synth.Port{Number: 3306, Name: "mysql", AppProtocol: "tcp"})
	d = apply(t, e, svc)
	if len(d.Statuses) != 1 || d.Statuses[0].GetCondition() != meshv1.PolicyCondition_POLICY_CONDITION_ACCEPTED {
		t.Fatalf("statuses = %v", d.Statuses)
	}
	equalsCold(t, e)
}

// TestUpstreamChangeTouchesItsService: a connection limit change rewrites
// only the Service's cluster; a rate limit change only the inbound
// listener of the identity serving it. Nothing else of the mesh.
func TestUpstreamChangeTouchesItsService(t *testing.T) {
	e, _ := withUpstreams(t, false)
	d := apply(t, e, upstreamWith(func(u *meshv1.UpstreamTrafficSetting) { u.ConnectionSettings.Tcp.MaxConnections = proto.Int64(7) }))
	if got := keys(d); !slices.Equal(got, []string{"cluster bookstore/bookstore-v1|14001"}) {
		t.Errorf("a connection limit change wrote %v", got)
	}
	d = apply(t, e, upstreamWith(func(u *meshv1.UpstreamTrafficSetting) {
		u.ConnectionSettings.Tcp.MaxConnections = proto.Int64(7)
		u.RateLimit.Local.Http.Requests = 99
	}))
	if got := keys(d); !slices.Equal(got, []string{"listener " + InboundListenerName(id("bookstore", "bookstore-v1"))}) {
		t.Errorf("a rate limit change wrote %v", got)
	}
	equalsCold(t, e)
	d = remove(t, e, layout.KindUpstreamTrafficSetting, "bookstore", "bookstore-v1")
	if got := keys(d); !slices.Equal(got, []string{"cluster bookstore/bookstore-v1|14001", "listener " + InboundListenerName(id("bookstore", "bookstore-v1"))}) {
		t.Errorf("a deletion wrote %v", got)
	}
	equalsCold(t, e)
}

// equalsCold checks that e holds what a fresh engine compiles from e's
// model's objects.
func equalsCold(t *testing.T, e *Engine) {
	t.Helper()
	cold := newEngine()
	for _, o := range modelObjects(e) {
		if err := cold.Apply(o.Kind, o.Namespace, o.Name, o.Msg); err != nil {
			t.Fatal(err)
		}
	}
	cold.Compile()
	if diff := diffLists(snapshot(cold), snapshot(e)); diff != "" {
		t.Errorf("incremental differs from cold:\n%s", diff)
	}
}

// modelObjects lists the objects of e's model that the bookstore tests use.
func modelObjects(e *Engine) []synth.Object {
	m := e.Model()
	var out []synth.Object
	if mc := m.MeshConfig(); mc != nil {
		out = append(out, synth.Object{Kind: layout.KindMeshConfig, Namespace: mc.GetMeta().GetNamespace(), Name: mc.GetMeta().GetName(), Msg: mc})
	}
	for _, ns := range m.MeshedNamespaces() {
		out = append(out, synth.Namespace(ns))
		for _, s := range m.ServicesIn(ns) {
			out = append(out, synth.Object{Kind: layout.KindService, Namespace: s.Namespace, Name: s.Name, Msg: m.Service(s)})
			for _, sl := range m.EndpointSlices(s) {
				out = append(out, synth.Object{Kind: layout.KindEndpointSlice, Namespace: s.Namespace, Name: sl.GetMeta().GetName(), Msg: sl})
			}
		}
	}
	for _, o := range synth.Bookstore(false) {
		switch o.Kind {
		case layout.KindPod, layout.KindServiceAccount:
			out = append(out, o)
		}
	}
	for _, nn := range m.TrafficTargetNames() {
		out = append(out, synth.Object{Kind: layout.KindTrafficTarget, Namespace: nn.Namespace, Name: nn.Name, Msg: m.TrafficTarget(nn)})
	}
	for _, nn := range m.HTTPRouteGroupNames() {
		out = append(out, synth.Object{Kind: layout.KindHTTPRouteGroup, Namespace: nn.Namespace, Name: nn.Name, Msg: m.HTTPRouteGroup(nn)})
	}
	for _, nn := range m.TCPRouteNames() {
		out = append(out, synth.Object{Kind: layout.KindTCPRoute, Namespace: nn.Namespace, Name: nn.Name, Msg: m.TCPRoute(nn)})
	}
	for _, nn := range m.TrafficSplitNames() {
		out = append(out, synth.Object{Kind: layout.KindTrafficSplit, Namespace: nn.Namespace, Name: nn.Name, Msg: m.TrafficSplit(nn)})
	}
	for _, kind := range []string{layout.KindUpstreamTrafficSetting, layout.KindIngressBackend} {
		for _, nn := range m.ObjectNames(kind) {
			out = append(out, synth.Object{Kind: kind, Namespace: nn.Namespace, Name: nn.Name, Msg: m.Object(kind, nn)})
		}
	}
	return out
}
