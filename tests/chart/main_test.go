package chart

import (
	"testing"

	"github.com/openservicemesh/osm/tests/kube"
)

// cluster is the package's kube-apiserver harness (tests/kube). The chart
// installs the CRDs itself, so the harness does not. The apiserver audits
// the requests of the release namespace's ServiceAccounts (the chart
// identities), which the chart-identity test checks against the chart's
// RBAC (audit_test.go).
var cluster *kube.Cluster

func run(m *testing.M) int {
	return kube.MainOptions(m, kube.Options{AuditPolicy: kube.AuditPolicyForGroups("system:serviceaccounts:" + namespace)},
		&cluster, false)
}
