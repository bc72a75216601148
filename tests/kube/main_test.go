package kube_test

import (
	"os"
	"testing"

	"github.com/openservicemesh/osm/tests/kube"
)

// cluster is the package's control plane, started once by TestMain.
var cluster *kube.Cluster

func TestMain(m *testing.M) { os.Exit(kube.Main(m, &cluster, true)) }
