// Package scale is the whole pipeline's scale harness: from the moment the
// apiserver answers a write (what `kubectl apply` waits for) to the ACK of
// the last proxy the write affects, through the smi-watcher, NATS, the
// policy-compiler, NATS again and the xds-edges, on one synthetic mesh of a
// chosen size, with the time of each stage.
//
// Run starts NATS (a nats-server process) and the cert-authority,
// smi-watcher, policy-compiler and one or more xds-edges as processes
// (tests/stack) against a real kube-apiserver (tests/kube), creates the
// mesh through the API (Services, pods made Ready by the kubelet
// stand-in's status, TrafficTargets, HTTPRouteGroups, TrafficSplits),
// connects the simulated delta-xDS proxies in a process of their own (the
// fleet: the load generator's xdstest clients), and makes the issue's
// edits one at a time, each Config.Repeat times: a pod turning not ready, a
// TrafficSplit weight change, a new TrafficTarget, a Service gaining a
// port, a namespace of 100 pods joining the mesh. For each it measures,
// from the write's answer (t0):
//
//   - watcher: the JetStream timestamp of the last mesh-observed write
//     carrying the edit (for a pod, its EndpointSlice, which the
//     endpointslice controller rewrites first);
//   - compiler: the JetStream timestamp of the mesh-compiled generation
//     record whose number the proxies' new resources carry;
//   - edges: each edge's "generation applied" log time for that
//     generation (the last edge counts);
//   - ACK: for every affected proxy, when the fleet read the response
//     that completed the edit for it, just after the proxy sent its ACK.
//
// and the CPU time each process spent over the edit (/proc), and at the
// end each process's peak RSS. `make scale` runs it (cmd/scale);
// TestScaleSmall runs a small size in CI as a regression check.
package scale

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/stack"
)

// Config sizes the mesh and the run.
type Config struct {
	// Services, Pods (spread over the services), TrafficTargets (at most
	// one per service), RouteGroups (HTTPRouteGroups) and Splits
	// (TrafficSplits) shape the mesh.
	Services, Pods, TrafficTargets, RouteGroups, Splits int
	// Proxies are the simulated proxies; proxy k runs as service
	// k mod Services's identity, so Services proxies give each identity
	// one.
	Proxies int
	// Edges is the number of xds-edge processes; proxies are spread over
	// them.
	Edges int
	// ThenEdges, when above Edges, makes the edits a second time on the
	// same mesh after starting more edges, up to ThenEdges, and moving the
	// proxies over all of them, each as a restarted proxy (Report.Then).
	ThenEdges int
	// Repeat is how many times each edit is made.
	Repeat int
	// EditTimeout bounds each edit's way to its last proxy.
	EditTimeout time.Duration
	// Pause is the quiet time before each edit.
	Pause time.Duration
	// Workers are the goroutines writing the mesh to the apiserver.
	Workers int
	// ProfileDir, when set, receives CPU profiles of the watcher, the
	// compiler and each edge over the first ProfileSeconds of the edits
	// (the services then run with --enable-pprof).
	ProfileDir     string
	ProfileSeconds int
	// Kinds are the edits to make; nil makes every kind (EditKinds).
	Kinds []EditKind
	// FleetCommand starts the proxies' process: a program that runs
	// RunFleet when EnvFleet is set (cmd/scale, or the test binary).
	FleetCommand []string
	// Dir holds the run's state (NATS store, binaries, roots).
	Dir string
	// Builder builds the services; nil builds them into Dir/bin.
	Builder *stack.Builder
	// Log receives the services' and the fleet's output.
	Log io.Writer
	// Progress, when set, receives a line per step.
	Progress io.Writer
}

// Full is the size of the issue: 10k Services, 50k pods, 10k
// TrafficTargets, 500 HTTPRouteGroups, 200 TrafficSplits, 10k proxies,
// one edge.
func Full() Config {
	return Config{Services: 10000, Pods: 50000, TrafficTargets: 10000, RouteGroups: 500, Splits: 200, Proxies: 10000, Edges: 1,
		Repeat: 5, EditTimeout: 2 * time.Minute, Pause: 2 * time.Second, Workers: 32}
}

// Small is the CI regression size: 1k Services, 2k pods, 1k proxies.
func Small() Config {
	return Config{Services: 1000, Pods: 2000, TrafficTargets: 1000, RouteGroups: 50, Splits: 20, Proxies: 1000, Edges: 1,
		Repeat: 3, EditTimeout: time.Minute, Pause: time.Second, Workers: 16}
}

// Validate reports a Config that cannot run, naming the field.
func (c Config) Validate() error {
	switch {
	case c.Services < 10:
		return fmt.Errorf("services must be at least 10, not %d", c.Services)
	case c.Pods < c.Services:
		return fmt.Errorf("pods (%d) must be at least services (%d): every service has a pod", c.Pods, c.Services)
	case c.Proxies < 1:
		return fmt.Errorf("proxies must be at least 1, not %d", c.Proxies)
	case c.TrafficTargets < 1 || c.TrafficTargets > c.Services:
		return fmt.Errorf("traffic-targets must be between 1 and services (%d), not %d", c.Services, c.TrafficTargets)
	case c.RouteGroups < 0 || c.Splits < 0:
		return fmt.Errorf("route-groups and splits must not be negative")
	case c.Edges < 1:
		return fmt.Errorf("edges must be at least 1, not %d", c.Edges)
	case c.Repeat < 1:
		return fmt.Errorf("repeat must be at least 1, not %d", c.Repeat)
	case len(c.FleetCommand) == 0:
		return errors.New("FleetCommand is required")
	}
	return nil
}

// run is one harness run.
type run struct {
	cfg     Config
	s       shape
	cluster *kube.Cluster
	k       *clients
	kubelet *kube.Kubelet
	fleet   *fleetProc
	m       *stack.Mesh
	st      *stages

	edgeAddrs    []string
	rootsFile    string
	nextProxy    int
	round        int
	used         map[int]bool
	splitFlipped map[int]bool
	progress     func(string, ...any)
}

// Run runs the harness against cluster (CRDs installed) and returns its
// report; an error means it could not run.
func Run(ctx context.Context, cluster *kube.Cluster, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Kinds == nil {
		cfg.Kinds = EditKinds()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := &run{cfg: cfg, s: newShape(cfg), cluster: cluster, used: map[int]bool{}, splitFlipped: map[int]bool{},
		progress: func(f string, a ...any) {
			if cfg.Progress != nil {
				fmt.Fprintf(cfg.Progress, "scale %s: "+f+"\n", append([]any{time.Now().UTC().Format("15:04:05")}, a...)...)
			}
		}}
	rep := &Report{Config: cfg, shape: r.s}
	start := time.Now()
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, err
	}
	var err error
	if r.k, err = newClients(cluster); err != nil {
		return nil, err
	}
	natsDir := filepath.Join(cfg.Dir, "nats")
	if err := os.MkdirAll(natsDir, 0o700); err != nil {
		return nil, err
	}
	// A nats-server process, so that its CPU and memory are its own.
	nc, err := stack.StartNATS(ctx, stack.NATSOptions{Servers: 1, StoreDir: natsDir, Builder: cfg.Builder, Log: cfg.Log})
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	r.kubelet = cluster.Kubelet(nodeName, "zone-a")
	t := time.Now()
	if err := createMesh(ctx, r.k, r.kubelet, r.s, cfg.Workers, r.progress); err != nil {
		return nil, err
	}
	rep.MeshCreated = time.Since(t)
	if r.fleet, err = startFleet(ctx, cfg.FleetCommand, cfg.Dir, cfg.Log); err != nil {
		return nil, err
	}
	defer r.fleet.stop()
	t = time.Now()
	flags := map[stack.Component][]string{
		// JSON logs at debug for the "generation applied" lines; the
		// fleet's CA for the proxies' client certificates; streams
		// admitted as fast as they come, so that the initial sync is not
		// paced (the edits are not affected either way).
		stack.Edge: {"--log-format", "json", "--log-level", "debug", "--tls-client-ca-file", r.fleet.root,
			"--stream-rate", "100000", "--stream-burst", "100000", "--pod-name", "scale-edge-0"},
	}
	if cfg.ProfileDir != "" {
		for _, c := range []stack.Component{stack.Watcher, stack.Compiler, stack.Edge} {
			flags[c] = append(flags[c], "--enable-pprof")
		}
	}
	r.m, err = stack.New(ctx, stack.Options{
		Cluster: cluster, Dir: filepath.Join(cfg.Dir, "stack"), Builder: cfg.Builder, NATS: nc,
		Name: "scale", MeshName: meshName, Namespace: controlNS, MeshConfig: meshConfig, Log: cfg.Log, ReadyTimeout: 15 * time.Minute,
		Flags: flags,
	})
	if err != nil {
		return nil, err
	}
	defer r.m.Close()
	if err := r.m.Start(ctx, stack.CertAuthority, stack.Watcher, stack.Compiler, stack.Edge); err != nil {
		return nil, err
	}
	r.edgeAddrs = []string{r.m.Addr(stack.Edge)}
	edgeAdmins := []string{r.m.AdminAddr(stack.Edge)}
	edgeProcs := []*stack.Proc{r.m.Proc(stack.Edge)}
	for i := 1; i < cfg.Edges; i++ {
		inst, err := r.m.StartInstance(ctx, stack.Edge, "--pod-name", fmt.Sprintf("scale-edge-%d", i))
		if err != nil {
			return nil, err
		}
		r.edgeAddrs = append(r.edgeAddrs, inst.Addr)
		edgeAdmins = append(edgeAdmins, inst.Admin)
		edgeProcs = append(edgeProcs, inst.Proc)
	}
	rep.ControlPlaneReady = time.Since(t)
	r.progress("control plane ready in %s (%d edges)", rep.ControlPlaneReady.Round(time.Second), cfg.Edges)
	r.rootsFile = filepath.Join(cfg.Dir, "mesh-roots.pem")
	if err := os.WriteFile(r.rootsFile, caclient.RootsPEM(r.m.Bundle()), 0o600); err != nil {
		return nil, err
	}
	if r.st, err = watchStages(ctx, nc.Admin()); err != nil {
		return nil, err
	}
	if err := r.st.watchSlices(ctx, r.k.cs); err != nil {
		return nil, err
	}
	for i, p := range edgeProcs {
		r.st.addEdge(fmt.Sprintf("scale-edge-%d", i), p)
	}
	specs := make([]ProxySpec, cfg.Proxies)
	for k := range specs {
		i := k % r.s.services
		specs[k] = ProxySpec{Namespace: r.s.ns(i), ServiceAccount: svcName(i)}
	}
	t = time.Now()
	if _, err := r.fleet.call(ctx, fleetRequest{Op: "connect", Edges: r.edgeAddrs, Roots: r.rootsFile, Proxies: specs, Wait: true, Timeout: 15 * time.Minute}); err != nil {
		return nil, fmt.Errorf("initial sync: %w", err)
	}
	r.nextProxy = cfg.Proxies
	rep.InitialSync = time.Since(t)
	r.progress("%d proxies synced in %s", cfg.Proxies, rep.InitialSync.Round(time.Millisecond))
	rep.Setup = time.Since(start)

	var profiled func() error
	if cfg.ProfileDir != "" {
		if err := os.MkdirAll(cfg.ProfileDir, 0o755); err != nil {
			return nil, err
		}
		profiled = r.profiles(ctx, cfg.ProfileDir, max(cfg.ProfileSeconds, 1), edgeAdmins)
	}
	if err := r.edits(ctx, rep); err != nil {
		return nil, err
	}
	if profiled != nil {
		if err := profiled(); err != nil {
			return nil, err
		}
		r.progress("CPU profiles of the watcher, the compiler and the edges written to %s", cfg.ProfileDir)
	}
	if cfg.ThenEdges > cfg.Edges {
		// The first round's tables now, so that a long second round
		// does not hold them back.
		if cfg.Progress != nil {
			rep.Wall = time.Since(start)
			rep.Print(cfg.Progress)
		}
		// The same mesh again over more edges: the new ones start, every
		// proxy moves to edge (index mod edges) as a restarted proxy.
		then := &Report{Config: cfg, shape: r.s}
		then.Config.Edges = cfg.ThenEdges
		t := time.Now()
		for i := cfg.Edges; i < cfg.ThenEdges; i++ {
			inst, err := r.m.StartInstance(ctx, stack.Edge, "--pod-name", fmt.Sprintf("scale-edge-%d", i))
			if err != nil {
				return nil, err
			}
			r.edgeAddrs = append(r.edgeAddrs, inst.Addr)
			r.st.addEdge(fmt.Sprintf("scale-edge-%d", i), inst.Proc)
		}
		then.ControlPlaneReady = time.Since(t)
		t = time.Now()
		if _, err := r.fleet.call(ctx, fleetRequest{Op: "reconnect", Edges: r.edgeAddrs, Roots: r.rootsFile, Timeout: 15 * time.Minute}); err != nil {
			return nil, fmt.Errorf("move the proxies to %d edges: %w", cfg.ThenEdges, err)
		}
		then.InitialSync = time.Since(t)
		r.progress("%d proxies moved over %d edges in %s", r.nextProxy, cfg.ThenEdges, then.InitialSync.Round(time.Millisecond))
		if err := r.edits(ctx, then); err != nil {
			return nil, err
		}
		rep.Then = then
	}
	rep.Wall = time.Since(start)
	return rep, nil
}

// edits makes every edit Repeat times and books them in rep, with every
// process's peak RSS at the end.
func (r *run) edits(ctx context.Context, rep *Report) error {
	ps := procs()
	for range r.cfg.Repeat {
		// Rounds count across Run's phases: each gets objects and
		// namespaces of its own.
		rp := r.round
		r.round++
		for _, kind := range r.cfg.Kinds {
			res, err := r.edit(ctx, kind, rp, ps)
			if err != nil {
				return err
			}
			r.progress("%s (%s): %d proxies, last ACK %s after the apply%s", kind, res.What, res.Affected, res.Last().Round(time.Millisecond), res.problems())
			rep.Edits = append(rep.Edits, res)
		}
	}
	rep.Procs = ps
	rep.PeakRSS = map[string]float64{}
	for _, p := range procs() {
		if v, ok := peakRSS(p.pid); ok {
			rep.PeakRSS[p.name] += v
		}
	}
	return nil
}

// edit plans, makes and measures one edit.
func (r *run) edit(ctx context.Context, kind EditKind, rp int, ps []proc) (*EditResult, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(r.cfg.Pause):
	}
	p, err := r.plan(ctx, kind, rp)
	if err != nil {
		return nil, err
	}
	done, err := r.fleet.send(fleetRequest{Op: "watch", Conds: p.conds, Timeout: r.cfg.EditTimeout})
	if err != nil {
		return nil, err
	}
	// The fleet registers a watch before it reads its next request: a
	// reply to the next is the watch's registration.
	if _, err := r.holders(ctx, "", ""); err != nil {
		return nil, err
	}
	if p.before != nil {
		if err := p.before(ctx); err != nil {
			return nil, fmt.Errorf("%s: %w", kind, err)
		}
	}
	cpu0 := sampleCPU(ps)
	applyStart := time.Now()
	t0, err := p.apply(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s (%s): %w", kind, p.what, err)
	}
	reply, err := r.fleet.await(ctx, done)
	if err != nil {
		return nil, fmt.Errorf("%s (%s): %w", kind, p.what, err)
	}
	end := time.Now()
	res := &EditResult{Kind: kind, What: p.what, Affected: p.affected, Missing: len(reply.Missing), Already: len(reply.Already),
		Apply: t0.Sub(applyStart), CPU: sampleCPU(ps).since(cpu0), Window: end.Sub(applyStart)}
	var gen uint64
	for _, a := range reply.Acks {
		res.Acks = append(res.Acks, time.Unix(0, a.At).Sub(t0))
		gen = max(gen, a.Gen)
	}
	res.Gen = gen
	// The generation record and the edges' log lines may arrive a moment
	// after the last ACK: give them two seconds.
	var commits []time.Time
	for range 20 {
		_, ok := r.st.generation(gen)
		commits = r.st.commits(gen)
		if ok && !slices.Contains(commits, time.Time{}) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The watcher's stage is its last write carrying the edit before the
	// generation that completed it (a later write, such as a slice update
	// that changed nothing the proxies hold, is not on the path).
	upTo := end
	if g, ok := r.st.generation(gen); ok {
		res.Compiler = g.Sub(t0)
		upTo = g
	}
	if w, key := r.st.lastObserved(applyStart, upTo, p.keys); !w.IsZero() {
		res.Watcher, res.WatcherKey = w.Sub(t0), key
	}
	if sl := r.st.lastSlice(applyStart, upTo, p.keys); !sl.IsZero() {
		res.Slice = sl.Sub(t0)
	}
	for _, c := range commits {
		if c.IsZero() {
			res.EdgeMissing++
			continue
		}
		res.Edges = append(res.Edges, c.Sub(t0))
	}
	return res, nil
}

// ClusterArgs are the kubebox flags the harness needs: the
// controller-manager's client limits raised (from 20 QPS), so that the
// endpointslice controller keeps up with thousands of Services, and more
// of its endpoint workers.
func ClusterArgs() []string {
	return []string{
		"--controller-manager-arg=--kube-api-qps=2000",
		"--controller-manager-arg=--kube-api-burst=4000",
		"--controller-manager-arg=--concurrent-service-endpoint-syncs=16",
	}
}
