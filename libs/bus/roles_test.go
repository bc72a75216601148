package bus

import (
	"slices"
	"testing"
)

func TestPermissionsSingleWriter(t *testing.T) {
	writers := map[string][]Role{}
	for _, r := range Roles() {
		p, err := PermissionsFor(r)
		if err != nil {
			t.Fatal(err)
		}
		if r == RoleAdmin {
			if p != nil {
				t.Fatal("admin must be unrestricted")
			}
			continue
		}
		for _, b := range Buckets() {
			if slices.Contains(p.Publish, "$KV."+b+".>") {
				writers[b] = append(writers[b], r)
			}
		}
		if !slices.Contains(p.Subscribe, r.InboxPrefix()+".>") {
			t.Errorf("%s cannot receive its replies", r)
		}
	}
	want := map[string]Role{BucketObserved: RoleWatcher, BucketCompiled: RoleCompiler, BucketTrust: RoleCA, BucketLeases: RoleCompiler}
	for b, r := range want {
		if len(writers[b]) != 1 || writers[b][0] != r {
			t.Errorf("writers of %s = %v, want only %s", b, writers[b], r)
		}
	}
	if _, err := PermissionsFor("nobody"); err == nil {
		t.Error("unknown role accepted")
	}
}
