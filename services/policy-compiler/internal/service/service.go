// Package service is the front door of the policy-compiler service: its
// flags, their validation, and the Run wiring that connects to NATS, opens
// the buckets, and runs the compiler lease and the compile pipeline under one
// errgroup.
package service

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/lease"
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

// config holds the service's own flags.
type config struct {
	meshName    string
	meshConfig  string
	trustDomain string
	debounce    time.Duration
	maxDelay    time.Duration
	kvReplicas  int
	holder      string
	leaseTTL    time.Duration
}

// Spec is the policy-compiler service for app.Main and app.Run.
func Spec(Options) app.Spec {
	var c config
	return app.Spec{
		Name:     Name,
		Summary:  "policy-compiler compiles KV mesh-observed into Envoy resources and proxy groups in KV mesh-compiled, writing only what changed.",
		UsesNATS: true,
		Flags: func(f *app.Flags) {
			f.String(&c.meshName, "mesh-name", "osm", "name of the mesh: namespaces whose openservicemesh.io/monitored-by label equals it are meshed")
			f.String(&c.meshConfig, "mesh-config", "osm-system/osm-mesh-config", "namespace/name of the mesh's MeshConfig")
			f.String(&c.trustDomain, "trust-domain", compile.DefaultTrustDomain, "SPIFFE trust domain used when the MeshConfig sets none")
			f.Duration(&c.debounce, "debounce", pipeline.DefaultDebounce, "quiet period after an observed change before compiling (at most 50ms)")
			f.Duration(&c.maxDelay, "max-delay", pipeline.DefaultMaxDelay, "longest a burst of changes may postpone a compile (at most 500ms)")
			f.Int(&c.kvReplicas, "kv-replicas", 1, "replicas of the mesh-compiled bucket when the compiler declares it")
			f.String(&c.holder, "holder", defaultHolder(), "name of this instance in the compiler lease (default: the POD_NAME environment variable, else the host name)")
			f.Duration(&c.leaseTTL, "lease-ttl", 15*time.Second, "how long the compiler lease holds without renewal; a standby takes over after it")
		},
		Validate: func() error { return c.validate() },
		Run:      func(ctx context.Context, rt *app.Runtime) error { return c.run(ctx, rt) },
	}
}

func (c *config) validate() error {
	if c.meshName == "" {
		return app.FlagError("mesh-name", "is required")
	}
	if _, err := c.meshConfigName(); err != nil {
		return app.FlagError("mesh-config", "%v", err)
	}
	if c.debounce <= 0 || c.debounce > 50*time.Millisecond {
		return app.FlagError("debounce", "must be in (0, 50ms], got %s", c.debounce)
	}
	if c.maxDelay < c.debounce || c.maxDelay > 500*time.Millisecond {
		return app.FlagError("max-delay", "must be between --debounce and 500ms, got %s", c.maxDelay)
	}
	if c.kvReplicas < 1 || c.kvReplicas > 5 {
		return app.FlagError("kv-replicas", "must be 1 to 5, got %d", c.kvReplicas)
	}
	if c.holder == "" {
		return app.FlagError("holder", "is required")
	}
	if c.leaseTTL < 3*time.Second {
		return app.FlagError("lease-ttl", "must be at least 3s, got %s", c.leaseTTL)
	}
	return nil
}

func (c *config) meshConfigName() (model.NN, error) {
	ns, name, ok := strings.Cut(c.meshConfig, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return model.NN{}, fmt.Errorf("want namespace/name, got %q", c.meshConfig)
	}
	return model.NN{Namespace: ns, Name: name}, nil
}

func (c *config) run(ctx context.Context, rt *app.Runtime) error {
	mc, _ := c.meshConfigName()
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
	elector, err := lease.New(leases, lease.Options{Key: layout.CompilerLeaseKey, Holder: c.holder, TTL: c.leaseTTL,
		OnChange: func(leading bool, term uint64) {
			rt.Log.WithContext(ctx).WithFields(logrus.Fields{"holder": c.holder, "leading": leading, "term": term}).Info("compiler lease changed")
		}})
	if err != nil {
		return err
	}
	metrics, err := pipeline.NewMetrics(rt.Meter())
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	comp := pipeline.New(observed, compiled, conn.NATS(), pipeline.Options{
		Engine:   compile.Options{MeshName: c.meshName, MeshConfig: mc, TrustDomain: c.trustDomain},
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
	return g.Wait()
}

// defaultHolder names this instance: its pod name, else its host name.
func defaultHolder() string {
	if p := os.Getenv("POD_NAME"); p != "" {
		return p
	}
	h, _ := os.Hostname()
	return h
}
