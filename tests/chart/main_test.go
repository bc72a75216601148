package chart

import (
	"testing"

	"github.com/openservicemesh/osm/tests/kube"
)

// cluster is the package's kube-apiserver harness (tests/kube). The chart
// installs the CRDs itself, so the harness does not.
var cluster *kube.Cluster

func run(m *testing.M) int { return kube.Main(m, &cluster, false) }
