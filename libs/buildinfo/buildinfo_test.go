package buildinfo

import (
	"runtime/debug"
	"testing"
)

// TestOfFallsBackOnTheCommit: a binary built from a checkout has
// the module version "(devel)"; its version is then the commit it was built
// from (what `make images` records), marked dirty when the tree had
// changes. Before, every such binary logged version=(devel).
func TestOfFallsBackOnTheCommit(t *testing.T) {
	rev := []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123"}}
	for _, c := range []struct {
		bi   debug.BuildInfo
		want string
	}{
		{debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}, Settings: rev}, "v1.2.3"},
		{debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: rev}, "0123456789ab"},
		{debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: append(rev, debug.BuildSetting{Key: "vcs.modified", Value: "true"})}, "0123456789ab-dirty"},
		{debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "(devel)"},
	} {
		if got := Of(&c.bi); got != c.want {
			t.Errorf("Of(%+v) = %q, want %q", c.bi.Main, got, c.want)
		}
	}
}
