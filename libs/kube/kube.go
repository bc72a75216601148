// Package kube is the Kubernetes client group every component that calls
// the Kubernetes API shares: the flags --kubeconfig, --kube-api-qps and
// --kube-api-burst, the rest.Config built from them, and the bridge that
// sends client-go's klog output into the component's logrus logger.
package kube

import (
	"os"
	"sync"

	"github.com/sirupsen/logrus"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/openservicemesh/osm/libs/app"
)

// Client holds the Kubernetes client flags.
type Client struct {
	// Kubeconfig is --kubeconfig; empty uses the in-cluster configuration.
	Kubeconfig string
	// QPS is --kube-api-qps and Burst --kube-api-burst.
	QPS, Burst int
}

// Flags registers --kubeconfig, --kube-api-qps and --kube-api-burst, with
// the component's own default rate.
func (c *Client) Flags(f *app.Flags, qps, burst int) {
	f.String(&c.Kubeconfig, "kubeconfig", "", "kubeconfig file; empty uses the in-cluster configuration (the pod's ServiceAccount)")
	f.Int(&c.QPS, "kube-api-qps", qps, "Kubernetes API requests per second this component may make")
	f.Int(&c.Burst, "kube-api-burst", burst, "burst of Kubernetes API requests allowed above --kube-api-qps")
}

// Validate checks the flags; errors name the flag.
func (c *Client) Validate() error {
	if c.QPS < 1 {
		return app.FlagError("kube-api-qps", "must be at least 1, got %d", c.QPS)
	}
	if c.Burst < c.QPS {
		return app.FlagError("kube-api-burst", "must be at least --kube-api-qps (%d), got %d", c.QPS, c.Burst)
	}
	if c.Kubeconfig != "" {
		if _, err := os.Stat(c.Kubeconfig); err != nil {
			return app.FlagError("kubeconfig", "%v", err)
		}
	}
	return nil
}

// RESTConfig builds the client configuration: the kubeconfig file, else the
// in-cluster configuration, with the flags' rate limits and userAgent (the
// component's name) as the User-Agent the apiserver logs and audits.
func (c *Client) RESTConfig(userAgent string) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if c.Kubeconfig == "" {
		cfg, err = rest.InClusterConfig()
		if err != nil {
			return nil, app.FlagError("kubeconfig", "not running in a cluster and no kubeconfig given: %v", err)
		}
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
		if err != nil {
			return nil, app.FlagError("kubeconfig", "%v", err)
		}
	}
	cfg.QPS, cfg.Burst = float32(c.QPS), c.Burst
	cfg.UserAgent = userAgent
	return cfg, nil
}

// klogOnce guards the process-wide klog logger: klog allows setting it only
// while nothing logs, so once per process.
var klogOnce sync.Once

// BridgeKlog sends client-go's klog output (leader election, reflector and
// request errors) to log, structured like the component's own lines, with
// source=client-go. Only the first call in a process takes effect.
func BridgeKlog(log *logrus.Entry) {
	klogOnce.Do(func() { klog.SetLogger(klogLogger(log)) })
}
