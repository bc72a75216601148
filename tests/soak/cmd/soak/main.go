// Command soak runs the control plane's "day in the life" soak (package
// tests/soak) against a Kubernetes control plane of its own and prints its
// table; it exits 1 when a figure that must be 0 is not. `make soak` runs
// it with the defaults: 10 minutes, 1,000 proxies.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/soak"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "soak: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) (err error) {
	cfg := soak.Full()
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(out)
	short := fs.Bool("short", false, "run the 2-minute CI soak (100 proxies) instead of the full one")
	dir := fs.String("dir", "", "state directory (NATS store, certificates, services.log); default a temporary one, removed after a soak that passed")
	proxies := fs.Int("proxies", 0, "simulated proxies (default 1000, or 100 with --short)")
	duration := fs.Duration("duration", 0, "length of the soak (default 10m, or 2m with --short); the faults keep their times")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *short {
		cfg = soak.Short()
	}
	if *proxies > 0 {
		cfg.Proxies = *proxies
	}
	if *duration > 0 {
		cfg.Duration = *duration
	}
	if *dir == "" {
		d, mkErr := os.MkdirTemp("", "osm-soak-")
		if mkErr != nil {
			return mkErr
		}
		// err is the run's result (not shadowed here), so a failed soak
		// keeps its state.
		defer func() {
			if err == nil {
				os.RemoveAll(d)
			} else {
				fmt.Fprintf(out, "soak: the run's state and services.log are kept in %s\n", d)
			}
		}()
		*dir = d
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	cfg.Dir = abs
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return err
	}
	logFile, err := os.Create(filepath.Join(abs, "services.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	cfg.Log, cfg.Progress = logFile, out

	say := func(f string, a ...any) { fmt.Fprintf(out, "soak: "+f+"\n", a...) }
	start := time.Now()
	cluster, err := kube.StartCluster(ctx, kube.Options{Logf: say})
	if err != nil {
		return err
	}
	defer cluster.Stop()
	crds, err := kube.CRDDir()
	if err == nil {
		err = cluster.ApplyCRDs(ctx, crds)
	}
	if err != nil {
		return err
	}
	say("cluster up in %s; services' output in %s", time.Since(start).Round(time.Second), logFile.Name())
	rep, err := soak.Run(ctx, cluster, cfg)
	if err != nil {
		return err
	}
	rep.Print(out)
	if fs := rep.Failures(); len(fs) > 0 {
		return fmt.Errorf("%d figures that must be 0 are not", len(fs))
	}
	return nil
}
