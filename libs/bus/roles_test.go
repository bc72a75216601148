package bus_test

import (
	"github.com/openservicemesh/osm/libs/bus"
	"slices"
	"testing"
)

func TestPermissionsSingleWriter(t *testing.T) {
	writers := map[string][]bus.Role{}
	for _, r := range bus.Roles() {
		p, err := bus.PermissionsFor(r)
		if err != nil {
			t.Fatal(err)
		}
		if r == bus.RoleAdmin {
			if p != nil {
				t.Fatal("admin must be unrestricted")
			}
			continue
		}
		for _, b := range bus.Buckets() {
			if slices.Contains(p.Publish, "$KV."+b+".>") {
				writers[b] = append(writers[b], r)
			}
		}
		if !slices.Contains(p.Subscribe, r.InboxPrefix()+".>") {
			t.Errorf("%s cannot receive its replies", r)
		}
	}
	want := map[string]bus.Role{bus.BucketObserved: bus.RoleWatcher, bus.BucketCompiled: bus.RoleCompiler, bus.BucketTrust: bus.RoleCA, bus.BucketLeases: bus.RoleCompiler}
	for b, r := range want {
		if len(writers[b]) != 1 || writers[b][0] != r {
			t.Errorf("writers of %s = %v, want only %s", b, writers[b], r)
		}
	}
	if _, err := bus.PermissionsFor("nobody"); err == nil {
		t.Error("unknown role accepted")
	}
}
