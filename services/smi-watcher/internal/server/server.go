// Package server wires the smi-watcher together: its flags, the Kubernetes
// and NATS clients, the informers (package watch), the lease (package elect)
// and the policy-status Events (package status). main only calls
// app.Main(server.Spec()); tests run the same wiring through app.Run.
package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	accessclient "github.com/servicemeshinterface/smi-sdk-go/pkg/gen/client/access/clientset/versioned"
	specsclient "github.com/servicemeshinterface/smi-sdk-go/pkg/gen/client/specs/clientset/versioned"
	splitclient "github.com/servicemeshinterface/smi-sdk-go/pkg/gen/client/split/clientset/versioned"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/kube"
	"github.com/openservicemesh/osm/services/smi-watcher/internal/elect"
	"github.com/openservicemesh/osm/services/smi-watcher/internal/status"
	"github.com/openservicemesh/osm/services/smi-watcher/internal/watch"
)

// Name is the binary and component name.
const Name = "smi-watcher"

// Config is the smi-watcher's own configuration (the runner adds logging,
// the admin listener and the --nats-* flags).
type Config struct {
	Kubeconfig    string
	KubeQPS       int
	KubeBurst     int
	MeshName      string
	Namespace     string
	WatcherID     string
	LeaderElect   bool
	LeaseName     string
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration
	ReleaseLease  bool
	Workers       int
	Resync        time.Duration
	KVReplicas    int
}

// Spec is the service description app.Main runs.
func Spec() app.Spec {
	var c Config
	return app.Spec{
		Name: Name,
		Summary: `smi-watcher is the only OSM component that reads the Kubernetes API. It watches
Namespaces (membership: the label openservicemesh.io/monitored-by=<mesh-name>;
opt-out: openservicemesh.io/ignore=true), Services, EndpointSlices, Pods and
ServiceAccounts in meshed namespaces, the SMI TrafficTarget, HTTPRouteGroup,
TCPRoute and TrafficSplit objects, and the MeshConfig in --namespace, and writes
each one, normalised, under its own key in the NATS KV bucket mesh-observed,
only when its normalised value changes. After each full list it writes the
sync marker with a new epoch. Replicas elect a leader with a coordination Lease
in --namespace; only the leader writes, standbys keep their caches warm. The
leader also turns the policy-compiler's rejections (mesh.status.policy.>) into
Kubernetes Events on the offending objects.`,
		UsesNATS: true,
		Flags: func(f *app.Flags) {
			f.String(&c.Kubeconfig, "kubeconfig", "", "kubeconfig file; empty uses the in-cluster service account")
			f.Int(&c.KubeQPS, "kube-qps", 50, "queries per second allowed to the kube-apiserver (list/watch, lease, events)")
			f.Int(&c.KubeBurst, "kube-burst", 100, "burst of queries allowed to the kube-apiserver")
			f.String(&c.MeshName, "mesh-name", "osm", "name of the mesh: namespaces labelled openservicemesh.io/monitored-by=<mesh-name> are meshed")
			f.String(&c.Namespace, "namespace", "osm-system", "control plane namespace: holds the MeshConfig and the leader-election Lease")
			f.String(&c.WatcherID, "watcher-id", "", "identity of this instance in the Lease and the sync marker; default the host name (the pod name)")
			f.Bool(&c.LeaderElect, "leader-elect", true, "elect a leader with a Lease; turn off only when exactly one instance runs")
			f.String(&c.LeaseName, "lease-name", "osm-smi-watcher", "name of the coordination Lease in --namespace")
			f.Duration(&c.LeaseDuration, "lease-duration", 15*time.Second, "how long a standby waits after the leader's last renewal before it takes over")
			f.Duration(&c.RenewDeadline, "renew-deadline", 10*time.Second, "how long the leader tries to renew before it stops writing")
			f.Duration(&c.RetryPeriod, "retry-period", 2*time.Second, "interval between attempts to acquire or renew the Lease")
			f.Bool(&c.ReleaseLease, "release-lease", true, "give the Lease up at shutdown so a standby takes over at once; false leaves it to expire, as a crash would")
			f.Int(&c.Workers, "workers", 16, "goroutines writing normalised objects to the KV")
			f.Duration(&c.Resync, "resync-period", 0, "informer resync period (replays the caches; writes nothing unless a value changed); 0 disables")
			f.Int(&c.KVReplicas, "kv-replicas", 1, "replicas of the mesh-observed bucket when the watcher creates it (3 in a NATS cluster)")
		},
		Validate: func() error { return c.validate() },
		Run:      func(ctx context.Context, rt *app.Runtime) error { return run(ctx, rt, c) },
	}
}

func (c *Config) validate() error {
	switch {
	case c.MeshName == "":
		return app.FlagError("mesh-name", "is required")
	case c.Namespace == "":
		return app.FlagError("namespace", "is required")
	case c.Workers <= 0:
		return app.FlagError("workers", "must be positive, got %d", c.Workers)
	case c.KubeQPS <= 0:
		return app.FlagError("kube-qps", "must be positive, got %d", c.KubeQPS)
	case c.KubeBurst < c.KubeQPS:
		return app.FlagError("kube-burst", "must be at least --kube-qps (%d), got %d", c.KubeQPS, c.KubeBurst)
	case c.Resync < 0:
		return app.FlagError("resync-period", "must not be negative, got %s", c.Resync)
	case c.KVReplicas < 1:
		return app.FlagError("kv-replicas", "must be at least 1, got %d", c.KVReplicas)
	}
	if c.LeaderElect {
		switch {
		case c.RetryPeriod <= 0:
			return app.FlagError("retry-period", "must be positive, got %s", c.RetryPeriod)
		case c.RenewDeadline <= c.RetryPeriod*6/5:
			return app.FlagError("renew-deadline", "must exceed 1.2 times --retry-period (%s), got %s", c.RetryPeriod, c.RenewDeadline)
		case c.LeaseDuration <= c.RenewDeadline:
			return app.FlagError("lease-duration", "must exceed --renew-deadline (%s), got %s", c.RenewDeadline, c.LeaseDuration)
		}
	}
	if c.WatcherID == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return app.FlagError("watcher-id", "is required when the host name is unknown")
		}
		c.WatcherID = h
	}
	if c.Kubeconfig != "" {
		if _, err := os.Stat(c.Kubeconfig); err != nil {
			return app.FlagError("kubeconfig", "%v", err)
		}
	}
	return nil
}

func restConfig(c Config) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if c.Kubeconfig == "" {
		cfg, err = rest.InClusterConfig()
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client config: %w", err)
	}
	cfg.QPS, cfg.Burst = float32(c.KubeQPS), c.KubeBurst
	cfg.UserAgent = Name
	return cfg, nil
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
	cfg, err := restConfig(c)
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
	log := rt.Log.WithField("mesh", c.MeshName)
	// client-go logs through the process-wide klog; send it to our logger.
	// klog's logger may only be set while nothing logs, so once per process.
	kube.BridgeKlog(rt.Log)
	w, err := watch.New(watch.Options{
		Clients:               clients,
		Store:                 store,
		MeshName:              c.MeshName,
		ControlPlaneNamespace: c.Namespace,
		WatcherID:             c.WatcherID,
		Workers:               c.Workers,
		Resync:                c.Resync,
		Log:                   log,
		Meter:                 rt.Telemetry.Meter("github.com/openservicemesh/osm/services/smi-watcher"),
	})
	if err != nil {
		return err
	}
	rt.Health.AddReadyCheck("informers", w.Check)

	events := record.NewBroadcaster(record.WithContext(ctx))
	events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: clients.Kube.CoreV1().Events("")})
	rt.OnShutdown("events", func(context.Context) error { events.Shutdown(); return nil })
	reporter := status.New(events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "osm-" + Name}), w.Leading, log)

	lead := func(ctx context.Context) {
		for {
			err := w.Lead(ctx)
			if ctx.Err() != nil {
				return
			}
			log.WithError(err).Error("takeover failed, retrying")
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return w.Run(gctx) })
	g.Go(func() error { return reporter.Run(gctx, conn.NATS()) })
	g.Go(func() error {
		if !c.LeaderElect {
			lead(gctx)
			return nil
		}
		return elect.Run(gctx, elect.Options{
			Client:          clients.Kube,
			Namespace:       c.Namespace,
			Name:            c.LeaseName,
			Identity:        c.WatcherID,
			LeaseDuration:   c.LeaseDuration,
			RenewDeadline:   c.RenewDeadline,
			RetryPeriod:     c.RetryPeriod,
			KeepLeaseOnStop: !c.ReleaseLease,
			Log:             log,
		}, lead)
	})
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
