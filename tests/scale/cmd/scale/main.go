// Command scale runs the whole pipeline's scale harness (package
// tests/scale) against a Kubernetes control plane of its own and prints
// its tables: from the apiserver's answer to each edit to the ACK of the
// last affected proxy, per stage (watcher, compiler, edges, proxies), with
// the CPU each process spent and its peak RSS.
//
//	make scale                                   # the full size, one edge
//	make scale ARGS='--edges 3'                  # the full size, three edges
//	make scale ARGS='--then-edges 3'             # one edge, then three, on one mesh
//	make scale ARGS='--services 1000 --pods 2000 --traffic-targets 1000 --route-groups 50 --splits 20 --proxies 1000'
//
// `scale fleet` is the simulated proxies' process the harness starts; it
// is not for use by hand.
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
	"strings"
	"syscall"
	"time"

	"github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/scale"
	"github.com/openservicemesh/osm/tests/stack"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var err error
	if root := os.Getenv(scale.EnvFleet); root != "" {
		err = scale.RunFleet(ctx, root, os.Stdin, os.Stdout)
	} else {
		err = run(ctx, os.Args[1:], os.Stdout)
	}
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "scale: %v\n", err)
		os.Exit(1)
	}
}

const usage = `scale: the whole pipeline at scale. It starts a kube-apiserver (with the
endpointslice controller), NATS, and the cert-authority, smi-watcher,
policy-compiler and xds-edges as processes; writes a synthetic mesh through the
API (Services, pods made Ready by the kubelet stand-in, TrafficTargets,
HTTPRouteGroups, TrafficSplits); connects simulated delta-xDS proxies in a
process of their own; then makes each edit --repeat times: a pod turning not
ready, a TrafficSplit weight change, a new TrafficTarget, a Service gaining a
port, a namespace of 100 pods joining. For each edit and stage it prints p50,
p99 and max from the apiserver's answer, the CPU-seconds each process spent
per edit and each process's peak RSS, and compares the figures with the goals.

Examples:
  scale                               the full size: 10k Services, 50k pods, 10k proxies, 1 edge
  scale --edges 3                     the same over three edges
  scale --then-edges 3                one edge, then the same mesh again over three edges
  scale --services 1000 --pods 2000 --traffic-targets 1000 --route-groups 50 --splits 20 --proxies 1000

Flags:
`

func run(ctx context.Context, args []string, out io.Writer) (err error) {
	cfg := scale.Full()
	fs := flag.NewFlagSet("scale", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() { fmt.Fprint(out, usage); fs.PrintDefaults() }
	fs.IntVar(&cfg.Services, "services", cfg.Services, "Services, each with its own ServiceAccount (identity)")
	fs.IntVar(&cfg.Pods, "pods", cfg.Pods, "pods, spread over the Services and made Ready by the kubelet stand-in")
	fs.IntVar(&cfg.Proxies, "proxies", cfg.Proxies, "simulated delta-xDS proxies; proxy k runs as Service k mod --services's identity")
	fs.IntVar(&cfg.TrafficTargets, "traffic-targets", cfg.TrafficTargets, "TrafficTargets, one per Service from the first, each letting 3 other identities in")
	fs.IntVar(&cfg.RouteGroups, "route-groups", cfg.RouteGroups, "HTTPRouteGroups, spread over the namespaces")
	fs.IntVar(&cfg.Splits, "splits", cfg.Splits, "TrafficSplits, each an apex Service split 90/10 over two others")
	fs.IntVar(&cfg.Edges, "edges", cfg.Edges, "xds-edge processes; the proxies are spread over them")
	fs.IntVar(&cfg.ThenEdges, "then-edges", 0, "when above --edges: after the edits, start more edges up to this many, move the proxies over all of them (each as a restarted proxy) and make the edits again on the same mesh")
	fs.IntVar(&cfg.Repeat, "repeat", cfg.Repeat, "times each edit is made")
	fs.DurationVar(&cfg.EditTimeout, "edit-timeout", cfg.EditTimeout, "longest an edit may take to reach its last proxy")
	edits := fs.String("edits", "", "comma-separated edits to make (pod,split,target,port,namespace); default all")
	dir := fs.String("dir", "", "state directory (NATS store, binaries, services.log); default a temporary one, removed after a run that worked")
	plot := fs.String("plot", "", "also write the stage timeline as a PNG to this file")
	fs.StringVar(&cfg.ProfileDir, "profile", "", "write CPU profiles of the watcher, the compiler and each edge over the first --profile-seconds of the edits to this directory (<process>.pprof, for go tool pprof)")
	fs.IntVar(&cfg.ProfileSeconds, "profile-seconds", 60, "length of the --profile window, from the first edit")
	source := fs.String("source", "", "build the services from this source tree (e.g. another commit's, from git archive) instead of this checkout's")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *edits != "" {
		names := map[string]scale.EditKind{"pod": scale.PodNotReady, "split": scale.SplitWeight, "target": scale.NewTarget, "port": scale.ServicePort, "namespace": scale.NamespaceIn}
		for _, e := range strings.Split(*edits, ",") {
			k, ok := names[strings.TrimSpace(e)]
			if !ok {
				return fmt.Errorf("--edits: unknown edit %q (want pod, split, target, port or namespace)", e)
			}
			cfg.Kinds = append(cfg.Kinds, k)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cfg.FleetCommand = []string{self}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if *dir == "" {
		d, mkErr := os.MkdirTemp("", "osm-scale-")
		if mkErr != nil {
			return mkErr
		}
		defer func() {
			if err == nil {
				os.RemoveAll(d)
			} else {
				fmt.Fprintf(out, "scale: the run's state and services.log are kept in %s\n", d)
			}
		}()
		*dir = d
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	cfg.Dir = abs
	if cfg.ProfileDir != "" {
		if cfg.ProfileDir, err = filepath.Abs(cfg.ProfileDir); err != nil {
			return err
		}
	}
	if *source != "" {
		cfg.Builder = stack.NewBuilderAt(filepath.Join(abs, "bin"), *source)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return err
	}
	logFile, err := os.Create(filepath.Join(abs, "services.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	cfg.Log, cfg.Progress = logFile, out
	say := func(f string, a ...any) { fmt.Fprintf(out, "scale: "+f+"\n", a...) }
	start := time.Now()
	cluster, err := kube.StartCluster(ctx, kube.Options{Logf: say, Args: scale.ClusterArgs()})
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
	rep, err := scale.Run(ctx, cluster, cfg)
	if err != nil {
		return err
	}
	rep.Print(out)
	if *plot != "" {
		if err := rep.Plot(*plot); err != nil {
			return err
		}
		say("stage timeline written to %s", *plot)
	}
	if fs := rep.Failures(); len(fs) > 0 {
		for _, f := range fs {
			fmt.Fprintln(out, "FAIL:", f)
		}
		return fmt.Errorf("%d edits went wrong", len(fs))
	}
	return nil
}
