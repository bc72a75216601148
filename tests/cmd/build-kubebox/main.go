// Command build-kubebox builds the kubebox test control plane into the test
// binary cache, as the tests would on first use, and prints the cached
// binary's path. Run it (through scripts/build-testbins.sh) before go test:
// a cold build takes longer than go test's default timeout.
//
// The cache is $OSM_TESTBIN_DIR, or $HOME/.cache/osm-testbin.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/openservicemesh/osm/tests/kube"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	bin, err := kube.Binary(ctx, kube.BuildOptions{Output: os.Stderr})
	if err != nil {
		fmt.Fprintln(os.Stderr, "build-kubebox:", err)
		os.Exit(1)
	}
	fmt.Println(bin)
}
