// Package service is the front door of the smi-watcher service: its flags,
// their validation, and the Run wiring of the Kubernetes and NATS clients,
// the informers (package watch), the lease (package elect) and the
// policy-status Events (package status), under one errgroup.
package service

import (
	"context"
	"errors"
	"fmt"
	"time"

	accessclient "github.com/servicemeshinterface/smi-sdk-go/pkg/gen/client/access/clientset/versioned"
	specsclient "github.com/servicemeshinterface/smi-sdk-go/pkg/gen/client/specs/clientset/versioned"
	splitclient "github.com/servicemeshinterface/smi-sdk-go/pkg/gen/client/split/clientset/versioned"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/libs/backoff"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/elect"
	"github.com/openservicemesh/osm/libs/kube"
	"github.com/openservicemesh/osm/services/smi-watcher/internal/status"
	"github.com/openservicemesh/osm/services/smi-watcher/internal/watch"
)

// Name is the service's name: the binary, its --help, the User-Agent of
// its Kubernetes calls and the name of its meters.
const Name = "smi-watcher"

// Options holds the test overrides of the service. The smi-watcher's tests
// drive it through flags and environment alone, so it has no fields; its
// zero value is production.
type Options struct{}

// Config is the smi-watcher's own configuration (the runner adds logging,
// the admin listener and the --nats-* flags).
type Config struct {
	Kube         kube.Client
	ControlPlane app.ControlPlane
	// Election elects the replica that writes mesh-observed.
	Election   elect.Config
	Workers    int
	Resync     time.Duration
	KVReplicas int
}

// Flags registers the configuration's flags.
func (c *Config) Flags(f *app.Flags) {
	c.Kube.Flags(f, 50, 100)
	f.Deprecated("kube-qps", "kube-api-qps")
	f.Deprecated("kube-burst", "kube-api-burst")
	c.ControlPlane.Flags(f, app.CPNamespace|app.CPPodName|app.CPMeshName|app.CPMeshConfig)
	f.Deprecated("watcher-id", "pod-name")
	c.Election.Flags(f, "osm-smi-watcher")
	f.Int(&c.Workers, "workers", 16, "goroutines writing normalised objects to the KV")
	f.Duration(&c.Resync, "resync-period", 0, "informer resync period (replays the caches; writes nothing unless a value changed); 0 disables")
	f.KVReplicas(&c.KVReplicas)
}

// Spec is the smi-watcher service for app.Main and app.Run.
func Spec(Options) app.Spec {
	var c Config
	return app.Spec{
		Name: Name,
		Summary: `smi-watcher publishes the mesh's Kubernetes state to NATS. It watches
Namespaces (membership: the label openservicemesh.io/monitored-by=<mesh-name>;
opt-out: openservicemesh.io/ignore=true), Services, EndpointSlices, Pods and
ServiceAccounts in meshed namespaces, the SMI TrafficTarget, HTTPRouteGroup,
TCPRoute and TrafficSplit objects, and the MeshConfig in --namespace, and writes
each one, normalised, under its own key in the NATS KV bucket mesh-observed,
only when its normalised value changes. After each full list it writes the
sync marker with a new epoch. Replicas elect a leader with a coordination Lease
in --namespace; only the leader writes, standbys keep their caches warm. The
leader also turns the policy-compiler's rejections (mesh.status.policy.>) into
Kubernetes Events on the offending objects. It is the only component that reads
the mesh's policies and workloads from the Kubernetes API; the policy-compiler
and the xds-edge read them from NATS. The MeshConfig named --mesh-config also sets
the watcher's own log level (spec.observability.osmLogLevel) and whether
/debug/pprof/ is served on the admin listener (enableDebugServer), live.`,
		UsesNATS: true,
		Flags:    c.Flags,
		Validate: c.Validate,
		Run:      func(ctx context.Context, rt *app.Runtime) error { return run(ctx, rt, c) },
	}
}

// Validate checks the configuration; errors name the flag.
func (c *Config) Validate() error {
	if err := c.Kube.Validate(); err != nil {
		return err
	}
	if err := c.ControlPlane.Validate(); err != nil {
		return err
	}
	switch {
	case c.Workers <= 0:
		return app.FlagError("workers", "must be positive, got %d", c.Workers)
	case c.Resync < 0:
		return app.FlagError("resync-period", "must not be negative, got %s", c.Resync)
	}
	if err := app.CheckKVReplicas(c.KVReplicas); err != nil {
		return err
	}
	if err := c.Election.Validate(); err != nil {
		return err
	}
	return nil
}

// Clients builds every API client the watcher needs from one rest config.
func Clients(cfg *rest.Config) (watch.Clients, error) {
	var c watch.Clients
	var err error
	if c.Kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return c, fmt.Errorf("kubernetes client: %w", err)
	}
	if c.Access, err = accessclient.NewForConfig(cfg); err != nil {
		return c, fmt.Errorf("smi access client: %w", err)
	}
	if c.Specs, err = specsclient.NewForConfig(cfg); err != nil {
		return c, fmt.Errorf("smi specs client: %w", err)
	}
	if c.Split, err = splitclient.NewForConfig(cfg); err != nil {
		return c, fmt.Errorf("smi split client: %w", err)
	}
	if c.Dynamic, err = dynamic.NewForConfig(cfg); err != nil {
		return c, fmt.Errorf("dynamic client: %w", err)
	}
	return c, nil
}

func run(ctx context.Context, rt *app.Runtime, c Config) error {
	cfg, err := c.Kube.RESTConfig(Name)
	if err != nil {
		return err
	}
	clients, err := Clients(cfg)
	if err != nil {
		return err
	}
	conn, err := rt.Bus(ctx, bus.RoleWatcher)
	if err != nil {
		return err
	}
	store, err := conn.EnsureBucket(ctx, bus.BucketObserved, bus.BucketOptions{Replicas: c.KVReplicas})
	if err != nil {
		return err
	}
	cp := c.ControlPlane
	log := rt.Log.WithField("mesh", cp.MeshName)
	kube.BridgeKlog(rt.Log)
	w, err := watch.New(watch.Options{
		Clients:               clients,
		Store:                 store,
		MeshName:              cp.MeshName,
		ControlPlaneNamespace: cp.Namespace,
		WatcherID:             cp.PodName,
		Workers:               c.Workers,
		Resync:                c.Resync,
		Log:                   log,
		Meter:                 rt.Meter(),
		// spec.observability (log level, pprof), live, as each version
		// is read: on every replica, leader or standby.
		MeshConfigName: cp.MeshConfig,
		OnMeshConfig:   rt.ApplyObservability,
	})
	if err != nil {
		return err
	}
	rt.Health.AddReadyCheck("informers", w.Check)
	rt.Health.Started()

	events := record.NewBroadcaster(record.WithContext(ctx))
	events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: clients.Kube.CoreV1().Events("")})
	rt.OnShutdown("events", func(context.Context) error { events.Shutdown(); return nil })
	reporter := status.New(events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "osm-" + Name}), w.Leading, log)

	lead := func(ctx context.Context) {
		leadLoop(ctx, w.Lead, func(ctx context.Context) {
			// The bucket may be gone (deleted, or JetStream lost its
			// store): declare it again before the next term.
			if _, err := conn.EnsureBucket(ctx, bus.BucketObserved, bus.BucketOptions{Replicas: c.KVReplicas}); err != nil {
				log.WithError(err).Warn("declare the bucket again")
			}
		}, defaultLeadPacing, log)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return w.Run(gctx) })
	g.Go(func() error { return reporter.Run(gctx, conn.NATS()) })
	g.Go(func() error {
		if !c.Election.LeaderElect {
			lead(gctx)
			return nil
		}
		return elect.Run(gctx, c.Election.Options(clients.Kube, cp.Namespace, cp.PodName, log), lead)
	})
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// leadPacing bounds the wait between terms that end: from base, doubling
// to max; a term that lasted settled counts as a success, so the wait
// after it starts again from base rather than from where the failures
// before it left it.
type leadPacing struct{ base, max, settled time.Duration }

var defaultLeadPacing = leadPacing{base: time.Second, max: 30 * time.Second, settled: time.Minute}

// leadLoop runs terms (lead) until ctx ends, calling redeclare and waiting
// a growing time after each one that ends.
func leadLoop(ctx context.Context, lead func(context.Context) error, redeclare func(context.Context), p leadPacing, log *logrus.Entry) {
	attempt := 0
	for {
		start := time.Now()
		err := lead(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) >= p.settled {
			attempt = 0
		}
		attempt++
		log.WithError(err).WithField("attempt", attempt).Error("takeover failed, retrying")
		redeclare(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff.Wait(p.base, p.max, attempt)):
		}
	}
}
