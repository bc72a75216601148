// Command build-testbins builds the real servers the integration tests run
// (kubebox: etcd, kube-apiserver and controllers; vault: the Vault dev
// server) into the test binary cache, as the tests would on first use, and
// prints each cached binary's path. Run it (through
// scripts/build-testbins.sh or make testbins) before go test: a cold build
// takes longer than go test's default timeout.
//
// With arguments, it builds only the named binaries. The cache is
// $OSM_TESTBIN_DIR, or $HOME/.cache/osm-testbin.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/testbin"
	"github.com/openservicemesh/osm/tests/vaultdev"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	all := []testbin.Spec{kube.Kubebox, vaultdev.Vault}
	want := map[string]bool{}
	for _, a := range os.Args[1:] {
		want[a] = true
	}
	for _, s := range all {
		if len(want) > 0 && !want[s.Name] {
			continue
		}
		delete(want, s.Name)
		start := time.Now()
		bin, err := testbin.Build(ctx, s, testbin.Options{Output: os.Stderr})
		if err != nil {
			fmt.Fprintln(os.Stderr, "build-testbins:", err)
			os.Exit(1)
		}
		fmt.Printf("%s: %s (%s)\n", s.Name, bin, time.Since(start).Round(time.Second))
	}
	for name := range want {
		fmt.Fprintf(os.Stderr, "build-testbins: no test binary named %q\n", name)
		os.Exit(2)
	}
}
