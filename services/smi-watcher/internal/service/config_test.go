package service

import (
	"testing"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/kube"
)

func TestHelpExplainsTheFlags(t *testing.T) {
	apptest.HelpContains(t, Spec,
		"publishes the mesh's Kubernetes state to NATS",
		"--kubeconfig", "in-cluster", "env OSM_KUBECONFIG",
		"--mesh-name", "openservicemesh.io/monitored-by=<mesh-name>", "default osm",
		"--namespace", "default osm-system",
		"--lease-duration", "default 15s", "--renew-deadline", "--retry-period", "--leader-elect", "--release-lease",
		"--nats-url",
	)
}

func TestConfigErrorsNameTheFlag(t *testing.T) {
	// The admin listener takes any free port, not the default :9091.
	admin := func(args ...string) []string { return append([]string{"--admin-addr", "127.0.0.1:0"}, args...) }
	apptest.RefusesConfig(t, Spec,
		apptest.BadConfig{Args: admin("--mesh-name", ""), Flag: "--mesh-name"},
		apptest.BadConfig{Args: admin("--namespace", ""), Flag: "--namespace"},
		apptest.BadConfig{Args: admin("--workers", "0"), Flag: "--workers"},
		apptest.BadConfig{Args: admin("--lease-duration", "5s", "--renew-deadline", "10s"), Flag: "--lease-duration"},
		apptest.BadConfig{Args: admin("--renew-deadline", "2s", "--retry-period", "2s"), Flag: "--renew-deadline"},
		apptest.BadConfig{Args: admin("--retry-period", "0s"), Flag: "--retry-period"},
		apptest.BadConfig{Args: admin("--kubeconfig", "/does/not/exist"), Flag: "--kubeconfig"},
		apptest.BadConfig{Args: admin(), Flag: "--kv-replicas", Env: apptest.Env{"OSM_KV_REPLICAS": "0"}},
		apptest.BadConfig{Args: admin("--kube-api-qps", "100", "--kube-api-burst", "10"), Flag: "--kube-api-burst"},
		apptest.BadConfig{Args: admin("--resync-period", "-1s"), Flag: "--resync-period"},
	)
	// Without leader election the lease timings are not checked.
	c := Config{Kube: kube.Client{QPS: 1, Burst: 1}, Workers: 1, KVReplicas: 1}
	if err := c.Validate(); err != nil {
		t.Errorf("a single unelected instance: %v", err)
	}
}
