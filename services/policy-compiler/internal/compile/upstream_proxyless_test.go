package compile

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

// upstreamStatus is the status d carries for UpstreamTrafficSetting
// ns/name, nil if none.
func upstreamStatus(d *Delta, ns, name string) *meshv1.PolicyStatus {
	for _, st := range d.Statuses {
		if o := st.GetObject(); o.GetKind() == "UpstreamTrafficSetting" && o.GetNamespace() == ns && o.GetName() == name {
			return st
		}
	}
	return nil
}

// outlierOnly is bookstore-v1's setting with outlierDetection od and
// nothing else.
func outlierOnly(od *meshv1.UpstreamOutlierDetection) synth.Object {
	return synth.UpstreamTrafficSetting("bookstore", "bookstore-v1", "bookstore-v1", &meshv1.UpstreamTrafficSetting{OutlierDetection: od})
}

func failurePct(threshold int64) *meshv1.UpstreamFailurePercentageEjection {
	return &meshv1.UpstreamFailurePercentageEjection{Threshold: proto.Int64(threshold), MinimumHosts: proto.Int64(2), RequestVolume: proto.Int64(10)}
}

// TestUpstreamGRPCGolden: with the gRPC flavour, bookbuyer's gRPC
// resources with synth.BookstoreUpstreams: bookstore-v1's gRPC cluster
// has the max_requests circuit breaker and outlier detection with the
// failure-percentage ejection only (threshold 50, minimum hosts 2, request
// volume 20, enforcing 100; interval, base ejection time, max ejection
// percent; success rate off; no consecutive 5xx), while its Envoy cluster
// keeps consecutive 5xx beside the failure percentage. The setting is
// accepted with a warning naming consecutive5xxErrors; mysql's (tcp, no
// gRPC cluster) plainly. Checked against
// testdata/upstream_grpc_<mode>.golden; every resource passes ValidateAll.
func TestUpstreamGRPCGolden(t *testing.T) {
	for _, mode := range []string{"smi", "permissive"} {
		t.Run(mode, func(t *testing.T) {
			e := grpcEngine()
			d := load(t, e, append(append(synth.Bookstore(mode == "permissive"), grpcRoutes()), synth.BookstoreUpstreams()...))
			if st := upstreamStatus(d, "bookstore", "bookstore-v1"); st.GetCondition() != meshv1.PolicyCondition_POLICY_CONDITION_ACCEPTED_WITH_WARNING ||
				st.GetReason() != ReasonConsecutive5xxIgnoredByProxylessGRPC || st.GetFieldPath() != "spec.outlierDetection.consecutive5xxErrors" {
				t.Errorf("bookstore-v1's status %v, want accepted with warning %s on spec.outlierDetection.consecutive5xxErrors", st, ReasonConsecutive5xxIgnoredByProxylessGRPC)
			}
			if st := upstreamStatus(d, "bookwarehouse", "mysql"); st.GetCondition() != meshv1.PolicyCondition_POLICY_CONDITION_ACCEPTED {
				t.Errorf("mysql's status %v, want accepted", st)
			}
			c := decode(t, e, layout.TypeCluster, "grpc:bookstore/bookstore-v1|14001", &clusterv3.Cluster{})
			od := c.GetOutlierDetection()
			if od.GetFailurePercentageThreshold().GetValue() != 50 || od.GetFailurePercentageMinimumHosts().GetValue() != 2 ||
				od.GetFailurePercentageRequestVolume().GetValue() != 20 || od.GetEnforcingFailurePercentage().GetValue() != 100 ||
				od.GetEnforcingSuccessRate() == nil || od.GetEnforcingSuccessRate().GetValue() != 0 || od.GetConsecutive_5Xx() != nil ||
				od.GetInterval().AsDuration().Seconds() != 5 || od.GetBaseEjectionTime().AsDuration().Seconds() != 30 || od.GetMaxEjectionPercent().GetValue() != 100 {
				t.Errorf("gRPC cluster outlier detection = %v", od)
			}
			env := decode(t, e, layout.TypeCluster, "bookstore/bookstore-v1|14001", &clusterv3.Cluster{}).GetOutlierDetection()
			if env.GetConsecutive_5Xx().GetValue() != 3 || env.GetFailurePercentageThreshold().GetValue() != 50 || env.GetEnforcingFailurePercentage().GetValue() != 100 ||
				env.GetEnforcingSuccessRate() != nil {
				t.Errorf("Envoy cluster outlier detection = %v", env)
			}
			if v2 := decode(t, e, layout.TypeCluster, "grpc:bookstore/bookstore-v2|14001", &clusterv3.Cluster{}); v2.GetOutlierDetection() != nil {
				t.Errorf("bookstore-v2's gRPC cluster has bookstore-v1's outlier detection")
			}
			client, err := e.GRPCClient(id("bookbuyer", "bookbuyer"))
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, filepath.Join("testdata", "upstream_grpc_"+mode+".golden"), client)
		})
	}
}

// TestUpstreamProxylessWarning: with the gRPC flavour, a setting of a
// Service with an http or grpc port whose outlierDetection proxyless
// clients cannot apply whole is accepted with a warning naming the field:
// without failurePercentage they eject nothing (on consecutive5xxErrors
// when written, else on spec.outlierDetection), with both they drop
// consecutive5xxErrors. With failurePercentage alone, without the
// flavour, or on a tcp Service (no gRPC cluster) it is accepted plainly.
// The gRPC cluster has outlier detection only with failurePercentage.
func TestUpstreamProxylessWarning(t *testing.T) {
	const msgStart = "UpstreamTrafficSetting bookstore/bookstore-v1 accepted with a warning: "
	for _, tc := range []struct {
		name      string
		proxyless bool
		obj       synth.Object
		reason    string
		field     string
		says      []string
		grpcOD    bool
	}{
		{"consecutive 5xx only", true, outlierOnly(&meshv1.UpstreamOutlierDetection{Consecutive_5XxErrors: proto.Int64(3)}),
			ReasonOutlierDetectionDoesNothingForProxylessGRPC, "spec.outlierDetection.consecutive5xxErrors",
			[]string{"Service bookstore/bookstore-v1 eject no endpoint", "no consecutive 5xx", "set spec.outlierDetection.failurePercentage", "Envoy sidecars eject as written"}, false},
		{"interval only", true, outlierOnly(&meshv1.UpstreamOutlierDetection{Interval: "1s"}),
			ReasonOutlierDetectionDoesNothingForProxylessGRPC, "spec.outlierDetection",
			[]string{"eject no endpoint", "after 5 consecutive 5xx (the default)"}, false},
		{"both", true, outlierOnly(&meshv1.UpstreamOutlierDetection{Consecutive_5XxErrors: proto.Int64(3), FailurePercentage: failurePct(60)}),
			ReasonConsecutive5xxIgnoredByProxylessGRPC, "spec.outlierDetection.consecutive5xxErrors",
			[]string{"dropped for proxyless gRPC clients of Service bookstore/bookstore-v1", "failurePercentage only", "eject on both"}, true},
		{"failure percentage only", true, outlierOnly(&meshv1.UpstreamOutlierDetection{FailurePercentage: failurePct(60)}), ReasonAccepted, "", nil, true},
		{"no gRPC flavour", false, outlierOnly(&meshv1.UpstreamOutlierDetection{Consecutive_5XxErrors: proto.Int64(3)}), ReasonAccepted, "", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEngine()
			if tc.proxyless {
				e = grpcEngine()
			}
			d := load(t, e, append(synth.Bookstore(false), tc.obj, grpcRoutes()))
			st := upstreamStatus(d, "bookstore", "bookstore-v1")
			want := meshv1.PolicyCondition_POLICY_CONDITION_ACCEPTED
			if tc.says != nil {
				want = meshv1.PolicyCondition_POLICY_CONDITION_ACCEPTED_WITH_WARNING
			}
			if st.GetCondition() != want || st.GetReason() != tc.reason {
				t.Fatalf("status %v, want %v %s", st, want, tc.reason)
			}
			if tc.says != nil {
				if st.GetFieldPath() != tc.field || !strings.HasPrefix(st.GetMessage(), msgStart+tc.field+": ") {
					t.Errorf("field %q message %q, want field %s", st.GetFieldPath(), st.GetMessage(), tc.field)
				}
				for _, s := range tc.says {
					if !strings.Contains(st.GetMessage(), s) {
						t.Errorf("message %q does not say %q", st.GetMessage(), s)
					}
				}
			}
			// The Envoy cluster ejects as written.
			if e.Resource(layout.TypeCluster, "bookstore/bookstore-v1|14001") != nil &&
				decode(t, e, layout.TypeCluster, "bookstore/bookstore-v1|14001", &clusterv3.Cluster{}).GetOutlierDetection() == nil {
				t.Error("the Envoy cluster has no outlier detection")
			}
			if tc.proxyless {
				c := decode(t, e, layout.TypeCluster, "grpc:bookstore/bookstore-v1|14001", &clusterv3.Cluster{})
				if got := c.GetOutlierDetection() != nil; got != tc.grpcOD {
					t.Errorf("gRPC cluster has outlier detection: %v, want %v (%v)", got, tc.grpcOD, c.GetOutlierDetection())
				}
			}
		})
	}
	// mysql's port is tcp: no gRPC cluster, no proxyless client, no warning.
	e := grpcEngine()
	d := load(t, e, append(synth.Bookstore(false), synth.UpstreamTrafficSetting("bookwarehouse", "mysql", "mysql",
		&meshv1.UpstreamTrafficSetting{OutlierDetection: &meshv1.UpstreamOutlierDetection{Consecutive_5XxErrors: proto.Int64(3)}})))
	if st := upstreamStatus(d, "bookwarehouse", "mysql"); st.GetCondition() != meshv1.PolicyCondition_POLICY_CONDITION_ACCEPTED {
		t.Errorf("tcp Service's setting: status %v, want accepted", st)
	}
}

// TestUpstreamProxylessIncrementalEqualsCold: with the gRPC flavour, edits
// of bookstore-v1's outlier detection (consecutive 5xx only, then a
// failure percentage beside it, its threshold changed, consecutive 5xx
// dropped, the Service's port turned tcp and back, the setting deleted)
// each leave the engine holding what a fresh engine compiles from the same
// objects, and each verdict change is published once, as a cold compile
// judges it.
func TestUpstreamProxylessIncrementalEqualsCold(t *testing.T) {
	tcpSvc := synth.Service("bookstore", "bookstore-v1", "10.96.10.2", map[string]string{"app": "bookstore", "version": "v1"},
		synth.Port{Number: 14001, Name: "bookstore-port", AppProtocol: "tcp"})
	var httpSvc synth.Object
	for _, o := range synth.Bookstore(false) {
		if o.Kind == layout.KindService && o.Namespace == "bookstore" && o.Name == "bookstore-v1" {
			httpSvc = o
		}
	}
	for _, mode := range []string{"smi", "permissive"} {
		t.Run(mode, func(t *testing.T) {
			all := append(synth.Bookstore(mode == "permissive"), grpcRoutes())
			e := grpcEngine()
			load(t, e, all)
			steps := []struct {
				name   string
				obj    synth.Object
				reason string // "": no status published
			}{
				{"consecutive 5xx only", outlierOnly(&meshv1.UpstreamOutlierDetection{Consecutive_5XxErrors: proto.Int64(3)}), ReasonOutlierDetectionDoesNothingForProxylessGRPC},
				{"failure percentage added", outlierOnly(&meshv1.UpstreamOutlierDetection{Consecutive_5XxErrors: proto.Int64(3), FailurePercentage: failurePct(60)}), ReasonConsecutive5xxIgnoredByProxylessGRPC},
				{"threshold changed", outlierOnly(&meshv1.UpstreamOutlierDetection{Consecutive_5XxErrors: proto.Int64(3), FailurePercentage: failurePct(80)}), ""},
				{"consecutive 5xx dropped", outlierOnly(&meshv1.UpstreamOutlierDetection{FailurePercentage: failurePct(80)}), ReasonAccepted},
				{"back to consecutive 5xx", outlierOnly(&meshv1.UpstreamOutlierDetection{Consecutive_5XxErrors: proto.Int64(3)}), ReasonOutlierDetectionDoesNothingForProxylessGRPC},
				{"port tcp", tcpSvc, ReasonAccepted},
				{"port http", httpSvc, ReasonOutlierDetectionDoesNothingForProxylessGRPC},
				{"deleted", synth.Object{Kind: layout.KindUpstreamTrafficSetting, Namespace: "bookstore", Name: "bookstore-v1"}, ""},
			}
			for _, s := range steps {
				d := apply(t, e, s.obj)
				i := slices.IndexFunc(all, func(x synth.Object) bool {
					return x.Kind == s.obj.Kind && x.Namespace == s.obj.Namespace && x.Name == s.obj.Name
				})
				switch {
				case s.obj.Msg == nil && i >= 0:
					all = slices.Delete(all, i, i+1)
				case i >= 0:
					all[i] = s.obj
				case s.obj.Msg != nil:
					all = append(all, s.obj)
				}
				st := upstreamStatus(d, "bookstore", "bookstore-v1")
				if s.reason == "" && st != nil || s.reason != "" && st.GetReason() != s.reason {
					t.Errorf("%s: status %v, want reason %q", s.name, st, s.reason)
				}
				cold := grpcEngine()
				cd := load(t, cold, all)
				if got, want := snapshot(e), snapshot(cold); !slices.Equal(got, want) {
					t.Errorf("%s: incremental differs from cold:\n%s", s.name, firstDiff(strings.Join(want, "\n"), strings.Join(got, "\n")))
				}
				if cs := upstreamStatus(cd, "bookstore", "bookstore-v1"); st != nil && cs.GetReason() != st.GetReason() {
					t.Errorf("%s: cold verdict %v, incremental %v", s.name, cs, st)
				}
				if st := upstreamStatus(apply(t, e, s.obj), "bookstore", "bookstore-v1"); st != nil {
					t.Errorf("%s applied again: status %v published again", s.name, st)
				}
			}
		})
	}
}
