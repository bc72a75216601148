// Command kubebox runs a local Kubernetes control plane (embedded etcd,
// kube-apiserver and kube-controller-manager) for OSM's tests and dev stack.
//
// Without a subcommand it is the supervisor; see `kubebox --help`. The
// subcommands apiserver and controller-manager run the upstream commands with
// their own flags; the supervisor re-executes this binary with them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/openservicemesh/osm/tests/kubebox/internal/box"
	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format, as upstream mains
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics, as upstream mains
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric, as upstream mains
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "apiserver":
			os.Exit(runComponent(apiserver.NewAPIServerCommand()))
		case "controller-manager":
			os.Exit(runComponent(controllermanager.NewControllerManagerCommand()))
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			return // stopped by a signal before it was ready
		}
		fmt.Fprintln(os.Stderr, "kubebox:", err)
		os.Exit(1)
	}
}

// runComponent runs an upstream Kubernetes command with the remaining
// arguments, as its own main would.
func runComponent(cmd *cobra.Command) int {
	cmd.SetArgs(os.Args[2:])
	return cli.Run(cmd)
}

// run is the supervisor: it parses flags and runs the control plane until
// ctx is cancelled.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opts, err := box.ParseFlags(args, stderr)
	if err != nil {
		return err
	}
	if opts.Executable, err = os.Executable(); err != nil {
		return fmt.Errorf("locate own executable: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("component", "kubebox")
	return box.Run(ctx, opts, stdout, log)
}
