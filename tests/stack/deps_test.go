package stack

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestServiceBinariesCarryNoTestTooling: no service binary links the test
// tooling of the repository (the embedded NATS server, the xDS test client,
// the service test helpers of apptest,
// go-control-plane's cache and stock server), as each service's module
// alone builds it.
func TestServiceBinariesCarryNoTestTooling(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list for every service")
	}
	banned := []string{
		"github.com/nats-io/nats-server/",
		"github.com/envoyproxy/go-control-plane/pkg/cache/",
		"github.com/envoyproxy/go-control-plane/pkg/server/",
		"github.com/openservicemesh/osm/libs/bus/bustest/",
		"github.com/openservicemesh/osm/libs/xdstest/",
		"github.com/openservicemesh/osm/libs/app/apptest/",
	}
	for _, c := range Components() {
		t.Run(string(c), func(t *testing.T) {
			cmd := exec.CommandContext(t.Context(), "go", "list", "-deps", ".")
			cmd.Dir = filepath.Join(RepoRoot(), "services", string(c))
			cmd.Env = append(cmd.Environ(), "GOWORK=off")
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("go list -deps: %v", err)
			}
			deps := strings.Fields(string(out))
			if len(deps) < 50 {
				t.Fatalf("go list -deps listed only %d packages; the check would prove nothing", len(deps))
			}
			for _, d := range deps {
				for _, b := range banned {
					if strings.HasPrefix(d+"/", b) {
						t.Errorf("the %s binary links %s", c, d)
					}
				}
			}
		})
	}
}
