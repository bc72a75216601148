package layout

import "testing"

func TestRoundTrip(t *testing.T) {
	o, err := ParseObserved(ObservedKey(KindService, "bookstore", "bookstore.v1"))
	if err != nil || o != (Observed{KindService, "bookstore", "bookstore.v1"}) {
		t.Fatalf("observed round trip = %+v, %v", o, err)
	}
	if o, err := ParseObserved(NamespaceKey("book.store")); err != nil || o.Kind != KindNamespace || o.Name != "book.store" {
		t.Fatalf("namespace round trip = %+v, %v", o, err)
	}
	c, err := ParseCompiled(ResourceKey(TypeCluster, "bookstore/bookstore|14001"))
	if err != nil || c.Group || c.Type != TypeCluster || c.Name != "bookstore/bookstore|14001" {
		t.Fatalf("resource round trip = %+v, %v", c, err)
	}
	g, err := ParseCompiled(GroupKey("bookbuyer", "bookbuyer"))
	if err != nil || !g.Group || g.Namespace != "bookbuyer" || g.Name != "bookbuyer" {
		t.Fatalf("group round trip = %+v, %v", g, err)
	}
	s, err := ParseCompiled(SetKey("permissive.v1"))
	if err != nil || !s.Set || s.Group || s.Name != "permissive.v1" {
		t.Fatalf("set round trip = %+v, %v", s, err)
	}
	for _, bad := range []string{"set", "set.a.b", "group.a"} {
		if _, err := ParseCompiled(bad); err == nil {
			t.Errorf("ParseCompiled(%q) accepted", bad)
		}
	}
	for _, bad := range []string{SyncKey, "namespace.a.b", "service.a"} {
		if _, err := ParseObserved(bad); err == nil {
			t.Errorf("ParseObserved(%q) accepted", bad)
		}
	}
	if _, err := ParseCompiled(GenerationKey); err == nil {
		t.Error("ParseCompiled(generation) accepted")
	}
}

func TestNewObservedCoversEveryKind(t *testing.T) {
	for _, k := range []string{KindNamespace, KindService, KindEndpointSlice, KindPod, KindServiceAccount,
		KindTrafficTarget, KindHTTPRouteGroup, KindTCPRoute, KindTrafficSplit, KindMeshConfig, KindRetry, KindEgress,
		KindUpstreamTrafficSetting, KindIngressBackend} {
		if NewObserved(k) == nil {
			t.Errorf("no message for kind %s", k)
		}
	}
	if NewObserved("udproute") != nil {
		t.Error("a message for an unknown kind")
	}
}
