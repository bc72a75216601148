package e2e

import (
	"context"
	"os"
	"testing"

	"github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/stack"
)

var cluster *kube.Cluster

func TestMain(m *testing.M) {
	os.Exit(kube.Main(m, &cluster, true, func(context.Context, *kube.Cluster) (func(), error) {
		binDir, err := os.MkdirTemp("", "osm-e2e-bin-")
		if err != nil {
			return nil, err
		}
		builder = stack.NewBuilder(binDir)
		return func() { os.RemoveAll(binDir) }, nil
	}))
}
