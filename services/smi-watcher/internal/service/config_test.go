package service

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/libs/kube"
)

func TestHelpExplainsTheFlags(t *testing.T) {
	var out bytes.Buffer
	if err := app.Run(t.Context(), Spec(Options{}), []string{"--help"}, func(string) string { return "" }, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"publishes the mesh's Kubernetes state to NATS",
		"--kubeconfig", "in-cluster", "env OSM_KUBECONFIG",
		"--mesh-name", "openservicemesh.io/monitored-by=<mesh-name>", "default osm",
		"--namespace", "default osm-system",
		"--lease-duration", "default 15s", "--renew-deadline", "--retry-period", "--leader-elect", "--release-lease",
		"--nats-url",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q:\n%s", want, out.String())
		}
	}
}

func TestConfigErrorsNameTheFlag(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	cases := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--mesh-name", ""}, nil, "--mesh-name"},
		{[]string{"--namespace", ""}, nil, "--namespace"},
		{[]string{"--workers", "0"}, nil, "--workers"},
		{[]string{"--lease-duration", "5s", "--renew-deadline", "10s"}, nil, "--lease-duration"},
		{[]string{"--renew-deadline", "2s", "--retry-period", "2s"}, nil, "--renew-deadline"},
		{[]string{"--retry-period", "0s"}, nil, "--retry-period"},
		{[]string{"--kubeconfig", "/does/not/exist"}, nil, "--kubeconfig"},
		{nil, map[string]string{"OSM_KV_REPLICAS": "0"}, "--kv-replicas"},
		{[]string{"--kube-api-qps", "100", "--kube-api-burst", "10"}, nil, "--kube-api-burst"},
		{[]string{"--resync-period", "-1s"}, nil, "--resync-period"},
	}
	for _, c := range cases {
		err := app.Run(t.Context(), Spec(Options{}), append([]string{"--admin-addr", "127.0.0.1:0"}, c.args...), env(c.env), io.Discard)
		var ce *app.ConfigError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("args %v env %v: err = %v, want a configuration error naming %s", c.args, c.env, err, c.want)
		}
	}
	// Without leader election the lease timings are not checked.
	c := Config{Kube: kube.Client{QPS: 1, Burst: 1}, Workers: 1, KVReplicas: 1}
	if err := c.Validate(); err != nil {
		t.Errorf("a single unelected instance: %v", err)
	}
}
