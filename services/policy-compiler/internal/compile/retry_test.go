package compile

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

// buyerRetry is a Retry from bookbuyer to the bookstore apex and to
// bookwarehouse, which bookbuyer may reach only in permissive mode (no
// copy for it in SMI mode).
func buyerRetry() synth.Object {
	o := synth.Retry("bookbuyer", "bookbuyer-retry", "bookbuyer", "bookstore", "bookstore")
	r := o.Msg.(*meshv1.Retry)
	r.Destinations = append(r.Destinations, &meshv1.RetrySubject{Kind: "Service", Name: "bookwarehouse", Namespace: "bookwarehouse"})
	return o
}

// TestRetryGolden: bookbuyer's copies of bookstore's route (with the
// retry policy) and listener (RDS naming the copy), and its group listing
// them instead of the shared ones, against testdata/bookstore_retry.golden.
// Every resource passes ValidateAll (newResource); the test checks it again
// on the copies.
func TestRetryGolden(t *testing.T) {
	for _, mode := range []string{"smi", "permissive"} {
		t.Run(mode, func(t *testing.T) {
			e := newEngine()
			load(t, e, append(synth.Bookstore(mode == "permissive"), buyerRetry()))
			route := decode(t, e, layout.TypeRoute, "bookstore/bookstore|14001|retry|bookbuyer/bookbuyer", &routev3.RouteConfiguration{})
			if err := route.ValidateAll(); err != nil {
				t.Fatal(err)
			}
			rp := route.GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetRetryPolicy()
			if rp.GetRetryOn() != "5xx,unavailable" || rp.GetNumRetries().GetValue() != 3 || rp.GetPerTryTimeout().AsDuration().String() != "1s" ||
				rp.GetRetryBackOff().GetBaseInterval().AsDuration().String() != "25ms" {
				t.Errorf("retry policy %v", rp)
			}
			if wc := route.GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetWeightedClusters(); len(wc.GetClusters()) != 2 {
				t.Errorf("the copy lost the split: %v", wc)
			}
			l := decode(t, e, layout.TypeListener, "outbound-listener:bookstore/bookstore|14001|retry|bookbuyer/bookbuyer", &listenerv3.Listener{})
			if err := l.ValidateAll(); err != nil {
				t.Fatal(err)
			}
			hcm := unpack(t, l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig(), &hcmv3.HttpConnectionManager{})
			if got := hcm.GetRds().GetRouteConfigName(); got != "bookstore/bookstore|14001|retry|bookbuyer/bookbuyer" {
				t.Errorf("the listener copy's RDS names %q", got)
			}
			// bookbuyer reaches bookwarehouse only in permissive mode.
			if got := e.Resource(layout.TypeRoute, "bookwarehouse/bookwarehouse|14001|retry|bookbuyer/bookbuyer") != nil; got != (mode == "permissive") {
				t.Errorf("a copy for bookwarehouse: %v, want it only where bookbuyer may reach it", got)
			}
			buyer := id("bookbuyer", "bookbuyer")
			routes := groupNames(t, e, buyer, resourcev3.RouteType)
			listeners := groupNames(t, e, buyer, resourcev3.ListenerType)
			if !slices.Contains(routes, "bookstore/bookstore|14001|retry|bookbuyer/bookbuyer") || slices.Contains(routes, "bookstore/bookstore|14001") {
				t.Errorf("bookbuyer routes %v: want the copy instead of the shared route", routes)
			}
			if !slices.Contains(listeners, "outbound-listener:bookstore/bookstore|14001|retry|bookbuyer/bookbuyer") ||
				slices.Contains(listeners, "outbound-listener:bookstore/bookstore|14001") {
				t.Errorf("bookbuyer listeners %v: want the copy instead of the shared listener", listeners)
			}
			if got := groupNames(t, e, id("bookthief", "bookthief"), resourcev3.RouteType); slices.ContainsFunc(got, func(n string) bool { return strings.Contains(n, "|retry|") }) {
				t.Errorf("bookthief got a retry copy: %v", got)
			}
			// The copies and bookbuyer's group; the rest is in
			// bookstore_<mode>.golden.
			var b bytes.Buffer
			for _, entry := range strings.Split("\n"+string(dump(t, e)), "\n=== ")[1:] {
				header, _, _ := strings.Cut(entry, "\n")
				if strings.Contains(header, "|retry|") || strings.HasPrefix(header, "group bookbuyer/bookbuyer ") {
					b.WriteString("=== " + entry + "\n")
				}
			}
			got := b.Bytes()
			path := filepath.Join("testdata", "bookstore_retry_"+mode+".golden")
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
				t.Errorf("retry output differs from %s (run with -update after checking the change):\n%s", path, firstDiff(string(want), string(got)))
			}
		})
	}
}

// TestRetryChangeTouchesItsSource: adding, editing and deleting a Retry
// writes only its source's copies and group, and its deletion brings back
// exactly the output of a mesh that never had it.
func TestRetryChangeTouchesItsSource(t *testing.T) {
	e := bookstore(t, false)
	before := snapshot(e)
	d := apply(t, e, buyerRetry())
	want := []string{
		"listener outbound-listener:bookstore/bookstore|14001|retry|bookbuyer/bookbuyer",
		"route bookstore/bookstore|14001|retry|bookbuyer/bookbuyer",
		"group bookbuyer/bookbuyer",
	}
	if got := keys(d); !slices.Equal(got, want) {
		t.Errorf("adding a Retry wrote %v, want %v", got, want)
	}
	if len(d.Statuses) != 1 || d.Statuses[0].GetCondition() != meshv1.PolicyCondition_POLICY_CONDITION_ACCEPTED || d.Statuses[0].GetObject().GetKind() != "Retry" {
		t.Errorf("statuses %v, want the Retry accepted", d.Statuses)
	}
	edit := buyerRetry()
	n := int64(5)
	edit.Msg.(*meshv1.Retry).RetryPolicy.NumRetries = &n
	if got, want := keys(apply(t, e, edit)), []string{"route bookstore/bookstore|14001|retry|bookbuyer/bookbuyer"}; !slices.Equal(got, want) {
		t.Errorf("editing numRetries wrote %v, want %v", got, want)
	}
	// A change of the destination rebuilds its copies too.
	split := synth.TrafficSplit("bookstore", "bookstore-split", "bookstore.bookstore.svc.cluster.local",
		synth.Backend{Service: "bookstore-v1", Weight: 10}, synth.Backend{Service: "bookstore-v2", Weight: 90})
	got := keys(apply(t, e, split))
	if !slices.Contains(got, "route bookstore/bookstore|14001|retry|bookbuyer/bookbuyer") || !slices.Contains(got, "route bookstore/bookstore|14001") {
		t.Errorf("a split edit wrote %v, want the shared route and bookbuyer's copy", got)
	}
	route := decode(t, e, layout.TypeRoute, "bookstore/bookstore|14001|retry|bookbuyer/bookbuyer", &routev3.RouteConfiguration{})
	if w := route.GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetWeightedClusters().GetClusters(); w[0].GetWeight().GetValue() != 10 {
		t.Errorf("the copy kept the old weights: %v", w)
	}
	apply(t, e, synth.Bookstore(false)[len(synth.Bookstore(false))-1]) // the split back
	d = remove(t, e, layout.KindRetry, "bookbuyer", "bookbuyer-retry")
	wantDel := []string{
		"delete " + layout.ResourceKey(layout.TypeListener, "outbound-listener:bookstore/bookstore|14001|retry|bookbuyer/bookbuyer"),
		"delete " + layout.ResourceKey(layout.TypeRoute, "bookstore/bookstore|14001|retry|bookbuyer/bookbuyer"),
		"group bookbuyer/bookbuyer",
	}
	if got := keys(d); !slices.Equal(got, wantDel) {
		t.Errorf("deleting the Retry wrote %v, want %v", got, wantDel)
	}
	if after := snapshot(e); !slices.Equal(after, before) {
		t.Errorf("after the Retry's deletion the output differs from before it:\n%s", diffLists(before, after))
	}
}

// TestRetryRejected: an invalid Retry gets a rejection naming the field,
// in the words of libs/policy, and its last good version stays served.
func TestRetryRejected(t *testing.T) {
	e := bookstore(t, false)
	apply(t, e, buyerRetry())
	good := e.Resource(layout.TypeRoute, "bookstore/bookstore|14001|retry|bookbuyer/bookbuyer")
	for _, c := range []struct {
		edit  func(*meshv1.Retry)
		field string
		msg   string
	}{
		{func(r *meshv1.Retry) { r.Source.Kind = "Service" }, "spec.source.kind",
			`Retry bookbuyer/bookbuyer-retry rejected: spec.source.kind: kind "Service" is not supported, want "ServiceAccount"`},
		{func(r *meshv1.Retry) { r.RetryPolicy.RetryOn = "5xx,sometimes" }, "spec.retryPolicy.retryOn", ""},
		{func(r *meshv1.Retry) { n := int64(-1); r.RetryPolicy.NumRetries = &n }, "spec.retryPolicy.numRetries",
			"Retry bookbuyer/bookbuyer-retry rejected: spec.retryPolicy.numRetries: -1 is negative"},
	} {
		o := buyerRetry()
		c.edit(o.Msg.(*meshv1.Retry))
		d := apply(t, e, o)
		if len(d.Statuses) != 1 {
			t.Fatalf("%s: statuses %v", c.field, d.Statuses)
		}
		st := d.Statuses[0]
		if st.GetCondition() != meshv1.PolicyCondition_POLICY_CONDITION_REJECTED || st.GetFieldPath() != c.field ||
			(c.msg != "" && st.GetMessage() != c.msg) || !strings.HasPrefix(st.GetMessage(), "Retry bookbuyer/bookbuyer-retry rejected: "+c.field+": ") {
			t.Errorf("status %v, want rejected at %s %q", st, c.field, c.msg)
		}
		if !d.Empty() {
			t.Errorf("a rejected Retry wrote %v", keys(d))
		}
		if r := e.Resource(layout.TypeRoute, "bookstore/bookstore|14001|retry|bookbuyer/bookbuyer"); r == nil || r.Version != good.Version {
			t.Errorf("the last good copy was not kept")
		}
	}
}

// TestRetryFeatureFlag: spec.featureFlags.enableRetryPolicy false removes
// every copy; unset applies them.
func TestRetryFeatureFlag(t *testing.T) {
	e := bookstore(t, false)
	withRetry := func() []string { apply(t, e, buyerRetry()); return snapshot(e) }
	on := withRetry()
	mc := synth.MeshConfig(false)
	off := false
	mc.Msg.(*meshv1.MeshConfig).FeatureFlags = &meshv1.FeatureFlags{EnableRetryPolicy: &off}
	apply(t, e, mc)
	if r := e.Resource(layout.TypeRoute, "bookstore/bookstore|14001|retry|bookbuyer/bookbuyer"); r != nil {
		t.Error("enableRetryPolicy false kept the retry copy")
	}
	cold := newEngine()
	load(t, cold, append(synth.Bookstore(false), mc))
	if got, want := snapshot(e), snapshot(cold); !slices.Equal(got, want) {
		t.Errorf("with retries off the output differs from a mesh without the Retry:\n%s", diffLists(want, got))
	}
	apply(t, e, synth.MeshConfig(false))
	if got := snapshot(e); !slices.Equal(got, on) {
		t.Errorf("with the flag unset again the output differs:\n%s", diffLists(on, got))
	}
}
