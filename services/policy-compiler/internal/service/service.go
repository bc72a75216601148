// Package service is the front door of the policy-compiler service: its
// flags, their validation, and the Run wiring that connects to NATS, opens
// the buckets, and runs the compiler lease and the compile pipeline under one
// errgroup.
package service

import (
	"context"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/lease"
	"github.com/openservicemesh/osm/libs/meshcfg"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/compile"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/pipeline"
)

// Name is the service's name: the binary, its --help, and the name of its
// meters.
const Name = "policy-compiler"

// Options holds the test overrides of the service. The policy-compiler's
// tests drive it through flags and environment alone, so it has no fields;
// its zero value is production.
type Options struct{}

// config holds the service's flags.
type config struct {
	cp         app.ControlPlane
	debounce   time.Duration
	maxDelay   time.Duration
	kvReplicas int
	leaseTTL   time.Duration
	grpc       bool
}

// Spec is the policy-compiler service for app.Main and app.Run.
func Spec(Options) app.Spec {
	var c config
	return app.Spec{
		Name: Name,
		Summary: `policy-compiler compiles KV mesh-observed into Envoy resources and proxy groups in KV mesh-compiled,
writing only what changed. It reads the MeshConfig --mesh-config in --namespace; --trust-domain is the
trust domain of the compiled identities, the same as the cert-authority's and the injector's.`,
		UsesNATS: true,
		Flags:    c.flags,
		Validate: c.validate,
		Run:      func(ctx context.Context, rt *app.Runtime) error { return c.run(ctx, rt) },
	}
}

// flags registers the service's flags.
func (c *config) flags(f *app.Flags) {
	c.cp.Flags(f, app.CPNamespace|app.CPMeshConfig|app.CPPodName|app.CPMeshName|app.CPTrustDomain)
	f.Deprecated("holder", "pod-name")
	f.Duration(&c.debounce, "debounce", pipeline.DefaultDebounce, "quiet period after an observed change before compiling (at most 50ms)")
	f.Duration(&c.maxDelay, "max-delay", pipeline.DefaultMaxDelay, "longest a burst of changes may postpone a compile (at most 500ms)")
	f.KVReplicas(&c.kvReplicas)
	f.Duration(&c.leaseTTL, "lease-ttl", 15*time.Second, "how long the compiler lease holds without renewal; a standby takes over after it")
	f.Bool(&c.grpc, "proxyless-grpc", false, "also compile the gRPC flavour for proxyless gRPC workloads: their resources and a group per identity (key group.<ns>.<sa>@grpc) beside the Envoy one")
}

// validate checks the flags; errors name the flag.
func (c *config) validate() error {
	if err := c.cp.Validate(); err != nil {
		return err
	}
	if c.debounce <= 0 || c.debounce > 50*time.Millisecond {
		return app.FlagError("debounce", "must be in (0, 50ms], got %s", c.debounce)
	}
	if c.maxDelay < c.debounce || c.maxDelay > 500*time.Millisecond {
		return app.FlagError("max-delay", "must be between --debounce and 500ms, got %s", c.maxDelay)
	}
	if err := app.CheckKVReplicas(c.kvReplicas); err != nil {
		return err
	}
	if c.leaseTTL < 3*time.Second {
		return app.FlagError("lease-ttl", "must be at least 3s, got %s", c.leaseTTL)
	}
	return nil
}

func (c *config) run(ctx context.Context, rt *app.Runtime) error {
	conn, err := rt.Bus(ctx, bus.RoleCompiler)
	if err != nil {
		return err
	}
	compiled, err := conn.EnsureBucket(ctx, bus.BucketCompiled, bus.BucketOptions{Replicas: c.kvReplicas})
	if err != nil {
		return err
	}
	observed, err := conn.WaitBucket(ctx, bus.BucketObserved, func(err error) {
		rt.Log.WithContext(ctx).WithError(err).Warn("waiting for the observed bucket")
	})
	if err != nil {
		return err
	}
	leases, err := conn.EnsureBucket(ctx, bus.BucketLeases, bus.BucketOptions{Replicas: c.kvReplicas})
	if err != nil {
		return err
	}
	elector, err := lease.New(leases, lease.Options{Key: layout.CompilerLeaseKey, Holder: c.cp.PodName, TTL: c.leaseTTL,
		OnChange: func(leading bool, term uint64) {
			rt.Log.WithContext(ctx).WithFields(logrus.Fields{"holder": c.cp.PodName, "leading": leading, "term": term}).Info("compiler lease changed")
		}})
	if err != nil {
		return err
	}
	metrics, err := pipeline.NewMetrics(rt.Meter())
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	comp := pipeline.New(observed, compiled, conn.NATS(), pipeline.Options{
		Engine: compile.Options{
			MeshName:      c.cp.MeshName,
			MeshConfig:    model.NN{Namespace: c.cp.Namespace, Name: c.cp.MeshConfig},
			TrustDomain:   c.cp.TrustDomain,
			ProxylessGRPC: c.grpc,
		},
		Debounce: c.debounce,
		MaxDelay: c.maxDelay,
		Log:      rt.Log,
		Metrics:  metrics,
		Leader:   elector,
	})
	rt.Health.AddReadyCheck("compiled", comp.Ready)
	rt.Health.Started()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return elector.Run(gctx) })
	g.Go(func() error { return comp.Start(gctx) })
	// spec.observability (log level, pprof), live.
	follower, err := meshcfg.New(meshcfg.Options{Conn: conn, Namespace: c.cp.Namespace, Name: c.cp.MeshConfig,
		Log: rt.Log.WithField("part", "meshconfig"), Apply: rt.ApplyObservability})
	if err != nil {
		return err
	}
	g.Go(func() error { return follower.Start(gctx) })
	return g.Wait()
}
