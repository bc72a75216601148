package kube

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const kubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}
users:
- name: u
  user: {token: admin}
contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
`

func TestRESTConfigFromAKubeconfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	c := Client{Kubeconfig: path, QPS: 20, Burst: 40}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg, err := c.RESTConfig("smi-watcher")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "https://127.0.0.1:6443" || cfg.QPS != 20 || cfg.Burst != 40 || cfg.UserAgent != "smi-watcher" || cfg.BearerToken != "admin" {
		t.Errorf("config: host %s qps %v burst %d agent %s", cfg.Host, cfg.QPS, cfg.Burst, cfg.UserAgent)
	}
}

func TestErrorsNameTheFlag(t *testing.T) {
	for _, c := range []struct {
		c    Client
		want string
	}{
		{Client{QPS: 0, Burst: 10}, "--kube-api-qps"},
		{Client{QPS: 10, Burst: 5}, "--kube-api-burst"},
		{Client{QPS: 10, Burst: 10, Kubeconfig: "/does/not/exist"}, "--kubeconfig"},
	} {
		if err := c.c.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: err = %v, want one naming %s", c.c, err, c.want)
		}
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	c := Client{QPS: 1, Burst: 1}
	if _, err := c.RESTConfig("x"); err == nil || !strings.Contains(err.Error(), "--kubeconfig") {
		t.Errorf("outside a cluster without a kubeconfig: err = %v", err)
	}
}
