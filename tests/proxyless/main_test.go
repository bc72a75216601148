package proxyless

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/netns"
	"github.com/openservicemesh/osm/tests/stack"
)

// The pod IPs of the demo, on the namespace's loopback.
const (
	ipStoreV1 = "10.244.2.10"
	ipStoreV2 = "10.244.2.20"
	// Two more pods of bookstore v1, for the endpoint churn.
	ipStoreV1b = "10.244.2.11"
	ipStoreV1c = "10.244.2.12"
	ipBuyer    = "10.244.1.10"
	ipThief    = "10.244.1.20"
	// The Retry test's server and client.
	ipFlaky      = "10.244.3.10"
	ipRetryBuyer = "10.244.3.20"
	// The outlier detection test's two servers and client.
	ipOutlierGood  = "10.244.4.10"
	ipOutlierBad   = "10.244.4.11"
	ipOutlierBuyer = "10.244.4.20"
)

// Environment the outer process gives the tests in the namespace: where
// the binaries it built are.
const (
	envBinDir  = "OSM_PROXYLESS_BIN_DIR"
	envKubebox = "OSM_PROXYLESS_KUBEBOX"
)

// appName is the example app's binary in the bin dir.
const appName = "bookstore-grpc"

// components are the control plane's services the tests run: the
// injector admits the pods and writes their bootstrap Secrets.
var components = []stack.Component{stack.CertAuthority, stack.Injector, stack.Watcher, stack.Compiler, stack.Edge}

var (
	cluster *kube.Cluster
	builder *stack.Builder
	// appBin is the bookstore-grpc binary.
	appBin string
)

func TestMain(m *testing.M) {
	var addrs []netip.Prefix
	for _, ip := range []string{ipStoreV1, ipStoreV1b, ipStoreV1c, ipStoreV2, ipBuyer, ipThief, ipFlaky, ipRetryBuyer, ipOutlierGood, ipOutlierBad, ipOutlierBuyer} {
		addrs = append(addrs, netip.PrefixFrom(netip.MustParseAddr(ip), 32))
	}
	os.Exit(netns.Main(m, netns.Options{Addrs: addrs, Prepare: prepare, Run: func() int {
		if !netns.Inside() {
			return m.Run() // every test skips, saying why
		}
		dir := os.Getenv(envBinDir)
		builder = stack.NewBuilder(dir)
		for _, c := range components {
			builder.Use(string(c), filepath.Join(dir, string(c)))
		}
		appBin = filepath.Join(dir, appName)
		return kube.MainOptions(m, kube.Options{Binary: os.Getenv(envKubebox)}, &cluster, true)
	}}))
}

// prepare builds, outside the namespace (where the module proxy is
// reachable should a build need it), kubebox (cached), the services the
// tests run and bookstore-grpc.
func prepare(ctx context.Context) (map[string]string, func(), error) {
	kubebox, err := kube.Binary(ctx, kube.BuildOptions{Output: os.Stderr})
	if err != nil {
		return nil, nil, err
	}
	dir, err := os.MkdirTemp("", "osm-proxyless-bin-")
	if err != nil {
		return nil, nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	b := stack.NewBuilder(dir)
	for _, c := range components {
		if _, err := b.Build(ctx, string(c)); err != nil {
			cleanup()
			return nil, nil, err
		}
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, appName), "./cmd/"+appName)
	cmd.Dir = filepath.Join(stack.RepoRoot(), "tests")
	if out, err := cmd.CombinedOutput(); err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("build %s: %w\n%s", appName, err, out)
	}
	return map[string]string{envBinDir: dir, envKubebox: kubebox}, cleanup, nil
}
