// Package soak is the control plane's "day in the life" soak: the dev
// stack (the kube-apiserver harness, NATS, the cert-authority, the
// smi-watcher, the policy-compiler and two xds-edges, as processes) with
// short-lived certificates, and many simulated delta-xDS proxies spread
// over the edges, each reconnecting when its stream ends, as Envoy does.
// While policy and endpoint edits flow through the apiserver, it injects
// the faults of a compressed day: a root rotation, kill -9 of the compiler
// in the middle of a burst of edits, kill -9 of an edge, a NATS restart.
//
// Every proxy checks what it is served: a resource version, or an edge's
// generation, older than what it holds is a version regression; a
// service-cert whose URI SAN is not its identity is a wrong-identity
// secret. Each edit is timed from the apiserver write to the ACK of every
// affected proxy, and each proxy's time without a control plane (no stream,
// or a stream that has not delivered its config yet) is measured. Run
// prints the table; Report.Failures lists the figures that must be 0 and
// are not.
//
// `make soak` runs the full soak (cmd/soak, 10 minutes, 1,000 proxies);
// TestSoakShort runs a 2-minute one in CI.
package soak

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/openservicemesh/osm/libs/bus/bustest"
	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/tests/kube"
	"github.com/openservicemesh/osm/tests/stack"
)

// FaultKind is a fault the soak can inject.
type FaultKind string

// The faults.
const (
	// RootAdd, RootSwitch and RootRemove are the three steps of a root
	// rotation, each a restart of the cert-authority with new flags.
	RootAdd    FaultKind = "root rotation 1/3: add a root"
	RootSwitch FaultKind = "root rotation 2/3: sign with the new root"
	RootRemove FaultKind = "root rotation 3/3: remove the old root"
	// CompilerKill kills the policy-compiler (SIGKILL) in the middle of a
	// burst of edits and starts it again.
	CompilerKill FaultKind = "kill -9 the compiler mid-burst"
	// EdgeKill kills an edge (SIGKILL; Fault.Edge says which) and starts it
	// again, with no state, after Config.EdgeDown.
	EdgeKill FaultKind = "kill -9 an edge"
	// NATSRestart stops the NATS server and starts it again on the same
	// store after Config.NATSDown.
	NATSRestart FaultKind = "NATS restart"
)

// Fault is one fault of the schedule.
type Fault struct {
	// At is the time from the soak's start.
	At   time.Duration
	Kind FaultKind
	// Edge is the edge EdgeKill kills.
	Edge int
}

// name is the fault's row in the table.
func (f Fault) name() string {
	if f.Kind == EdgeKill {
		return fmt.Sprintf("kill -9 edge %d", f.Edge)
	}
	return string(f.Kind)
}

// Config says what to soak.
type Config struct {
	// Proxies is the number of simulated proxies, spread over Identities
	// identities (apps) and the two edges.
	Proxies, Identities int
	// Duration is the soak's length, from the end of the proxies' initial
	// sync.
	Duration time.Duration
	// CertTTL is the lifetime of every workload and control-plane
	// certificate: the CA's --default-ttl, --max-ttl and --serving-ttl, the
	// edge's --cert-ttl and --control-plane-cert-ttl, and the proxies' xDS
	// client certificates (renewed at half of it).
	CertTTL time.Duration
	// MaxConnectionAge is the edges' --max-connection-age: every proxy
	// reconnects this often.
	MaxConnectionAge time.Duration
	// EditEvery paces the edits; BurstEdits is the size of the burst the
	// compiler is killed in the middle of.
	EditEvery  time.Duration
	BurstEdits int
	// EditTimeout is how long an edit may take to reach every affected
	// proxy before it counts as not converged.
	EditTimeout time.Duration
	// EdgeDown and NATSDown are how long a killed edge and a stopped NATS
	// stay down.
	EdgeDown, NATSDown time.Duration
	// Faults is the schedule.
	Faults []Fault
	// NATSServers, when above 0, runs NATS as that many nats-server
	// processes (stack.NATSOptions.Servers): one that a fault can SIGKILL,
	// or a JetStream cluster. 0 runs it in-process, which NATSRestart
	// needs.
	NATSServers int
	// PartitionEdge1 connects edge 1 to NATS through a bustest.Partition
	// (soak.partition), which a fault cuts and heals.
	PartitionEdge1 bool
	// EdgeFlags are more flags for both edges.
	EdgeFlags []string

	// Dir holds the run's state: the NATS store, certificates, logs.
	Dir string
	// Builder builds the services; nil builds them into Dir/bin.
	Builder *stack.Builder
	// Log receives the services' output; nil keeps it in memory only.
	Log io.Writer
	// Progress, when set, receives a line per fault and per minute.
	Progress io.Writer
}

// Full is the soak `make soak` runs: 10 minutes, 1,000 proxies, every
// fault, the edges killed one after the other.
func Full() Config {
	return Config{
		Proxies: 1000, Identities: 20, Duration: 10 * time.Minute,
		CertTTL: 2 * time.Minute, MaxConnectionAge: time.Minute,
		EditEvery: 3 * time.Second, BurstEdits: 8, EditTimeout: 90 * time.Second,
		EdgeDown: 30 * time.Second, NATSDown: 10 * time.Second,
		Faults: []Fault{
			{At: 1 * time.Minute, Kind: RootAdd},
			{At: 2 * time.Minute, Kind: RootSwitch},
			{At: 3 * time.Minute, Kind: CompilerKill},
			{At: 4 * time.Minute, Kind: EdgeKill, Edge: 0},
			// At least --max-ttl after the switch, so that no leaf of
			// the old root is left.
			{At: 5 * time.Minute, Kind: RootRemove},
			{At: 6 * time.Minute, Kind: NATSRestart},
			{At: 7 * time.Minute, Kind: CompilerKill},
			{At: 8 * time.Minute, Kind: EdgeKill, Edge: 1},
		},
	}
}

// Short is the CI soak: 2 minutes, 100 proxies, every fault once; the
// root rotation's third step needs --max-ttl after the second and is left
// to the full soak.
func Short() Config {
	c := Full()
	c.Proxies, c.Identities, c.Duration = 100, 8, 2*time.Minute
	c.EditEvery, c.BurstEdits, c.EditTimeout = 2*time.Second, 6, 60*time.Second
	c.EdgeDown, c.NATSDown = 15*time.Second, 5*time.Second
	c.Faults = []Fault{
		{At: 10 * time.Second, Kind: RootAdd},
		{At: 25 * time.Second, Kind: RootSwitch},
		{At: 40 * time.Second, Kind: CompilerKill},
		// Before the proxies' first max-connection-age reconnects, at 1:00.
		{At: 50 * time.Second, Kind: EdgeKill, Edge: 1},
		{At: 90 * time.Second, Kind: NATSRestart},
	}
	return c
}

// soak is one run.
type soak struct {
	cfg     Config
	cluster *kube.Cluster
	kubelet *kube.Kubelet
	m       *stack.Mesh
	apps    []*app
	proxies []*proxy
	byApp   map[*app][]*proxy
	certs   *certs
	rec     *recorder
	edits   *edits

	edgeAddrs []string
	edges     []*edgeProc

	natsMu   sync.Mutex
	nats     *stack.NATS
	natsOpts stack.NATSOptions
	// partition is between edge 1 and NATS, with Config.PartitionEdge1.
	partition *bustest.Partition

	wall            time.Time // the start
	initialSyncTook time.Duration
	defers          []func() // run by close, the last first
}

// currentNATS is the NATS server now (a restart replaces it).
func (s *soak) currentNATS() *stack.NATS {
	s.natsMu.Lock()
	defer s.natsMu.Unlock()
	return s.nats
}

// proxiesOf lists the proxies of a's identity.
func (s *soak) proxiesOf(a *app) []*proxy { return s.byApp[a] }

func (s *soak) progress(format string, a ...any) {
	if s.cfg.Progress != nil {
		fmt.Fprintf(s.cfg.Progress, "soak %s: "+format+"\n", append([]any{s.rec.at(time.Now())}, a...)...)
	}
}

// Run runs the soak against cluster, whose CRDs must be installed, and
// returns its report; an error means the soak could not run.
func Run(ctx context.Context, cluster *kube.Cluster, cfg Config) (*Report, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := start(ctx, cluster, cfg)
	defer s.close()
	if err != nil {
		return nil, err
	}
	rep := &Report{Config: cfg, InitialSync: s.initialSyncTook, Setup: time.Since(s.wall)}
	s.rec.setStart(time.Now())
	s.progress("%d proxies synced over %d edges in %s (setup %s)", cfg.Proxies, len(s.edgeAddrs), rep.InitialSync.Round(time.Millisecond), rep.Setup.Round(time.Second))

	// The soak: edits, faults and the sampler until Duration.
	sctx, stopSoak := context.WithTimeout(ctx, cfg.Duration)
	defer stopSoak()
	var work sync.WaitGroup
	work.Add(3)
	go func() { defer work.Done(); s.editLoop(sctx) }()
	go func() { defer work.Done(); s.runFaults(sctx) }()
	go func() { defer work.Done(); s.sample(sctx, rep) }()
	work.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	// The last edits get their time to converge.
	wctx, cancelWait := context.WithTimeout(ctx, cfg.EditTimeout)
	s.edits.wait(wctx)
	cancelWait()
	s.finish(rep)
	rep.Wall = time.Since(s.wall)
	return rep, nil
}

// start boots the soak's mesh (NATS, the services, two edges), starts the
// proxies and waits for their initial sync. The soak it returns, even
// with an error, must be closed.
func start(ctx context.Context, cluster *kube.Cluster, cfg Config) (*soak, error) {
	s := &soak{cfg: cfg, cluster: cluster, apps: newApps(max(cfg.Identities, 1)), byApp: map[*app][]*proxy{}, rec: newRecorder(), wall: time.Now()}
	s.rec.start = s.wall
	if cfg.Proxies < cfg.Identities || cfg.Identities < 4 {
		return s, fmt.Errorf("soak: want at least 4 identities and a proxy for each, have %d proxies over %d", cfg.Proxies, cfg.Identities)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return s, err
	}
	ctx, cancel := context.WithCancel(ctx)
	s.defers = append(s.defers, cancel)

	s.natsOpts = stack.NATSOptions{StoreDir: filepath.Join(cfg.Dir, "nats"), PasswordFile: filepath.Join(cfg.Dir, "nats-passwords.json"),
		Servers: cfg.NATSServers, Builder: cfg.Builder, Log: cfg.Log}
	nc, err := stack.StartNATS(ctx, s.natsOpts)
	if err != nil {
		return s, err
	}
	if cfg.NATSServers == 0 {
		u, _ := url.Parse(nc.URL())
		s.natsOpts.Port, _ = strconv.Atoi(u.Port())
	}
	s.nats = nc
	s.defers = append(s.defers, func() { s.currentNATS().Close() })

	if err := createMesh(ctx, cluster, s.apps); err != nil {
		return s, err
	}
	s.kubelet = cluster.Kubelet("soak-node", "zone-a")
	ttl := cfg.CertTTL.String()
	s.m, err = stack.New(ctx, stack.Options{
		Cluster: cluster, Dir: filepath.Join(cfg.Dir, "stack"), Builder: cfg.Builder, NATS: nc,
		Name: "soak", MeshName: meshName, Namespace: controlNS, MeshConfig: meshConfig, Log: cfg.Log,
		Flags: map[stack.Component][]string{
			stack.CertAuthority: {"--default-ttl", ttl, "--max-ttl", ttl, "--serving-ttl", ttl},
			stack.Edge: append([]string{"--cert-ttl", ttl, "--control-plane-cert-ttl", ttl,
				"--max-connection-age", cfg.MaxConnectionAge.String(), "--max-connection-age-grace", "10s"}, cfg.EdgeFlags...),
		},
	})
	if err != nil {
		return s, err
	}
	s.defers = append(s.defers, func() { s.m.Close() })
	if err := s.m.Start(ctx, stack.CertAuthority, stack.Watcher, stack.Compiler, stack.Edge); err != nil {
		return s, err
	}
	s.defers = append(s.defers, s.stopEdge1)
	if cfg.PartitionEdge1 {
		// A partition proxy to the first server; the client finds the
		// others from the server's INFO only with routes advertised, so
		// one URL is the edge's whole view of NATS.
		if s.partition, err = bustest.NewPartition(strings.Split(nc.URL(), ",")[0]); err != nil {
			return s, err
		}
		s.defers = append(s.defers, s.partition.Close)
	}
	if err := s.startEdges(ctx); err != nil {
		return s, err
	}

	s.certs = newCerts(s.m, cfg.CertTTL, appIDs(s.apps))
	if err := s.certs.readBundle(ctx, nc); err != nil {
		return s, fmt.Errorf("trust bundle: %w", err)
	}
	if err := s.certs.renewAll(ctx); err != nil {
		return s, err
	}
	go func() {
		select {
		case <-ctx.Done():
			return
		case <-time.After(cfg.CertTTL / 2):
		}
		s.certs.keepRenewed(ctx)
	}()
	go s.certs.keepBundle(ctx, s.currentNATS)
	s.edits = newEdits(s, cfg.EditTimeout)

	// The proxies, and their initial sync.
	pctx, stopProxies := context.WithCancel(ctx)
	var running sync.WaitGroup
	s.defers = append(s.defers, func() { stopProxies(); running.Wait() })
	for i := range cfg.Proxies {
		a := s.apps[i%len(s.apps)]
		p := newProxy(s, i, a.id)
		s.proxies = append(s.proxies, p)
		s.byApp[a] = append(s.byApp[a], p)
	}
	for _, p := range s.proxies {
		running.Add(1)
		go func() { defer running.Done(); p.run(pctx) }()
	}
	syncStart := time.Now()
	if err := s.initialSync(ctx, 3*time.Minute); err != nil {
		return s, err
	}
	s.initialSyncTook = time.Since(syncStart)
	return s, nil
}

// close stops what start started, the last first.
func (s *soak) close() {
	for i := len(s.defers) - 1; i >= 0; i-- {
		s.defers[i]()
	}
	s.defers = nil
}

func appIDs(apps []*app) []identity.ID {
	out := make([]identity.ID, len(apps))
	for i, a := range apps {
		out[i] = a.id
	}
	return out
}

// initialSync waits until every proxy has a serving stream and holds the
// cluster and endpoints of the app it may call.
func (s *soak) initialSync(ctx context.Context, within time.Duration) error {
	return stack.Eventually(ctx, within, func() error {
		missing := 0
		var example string
		for _, p := range s.proxies {
			a := s.apps[p.idx%len(s.apps)]
			dest := s.apps[(a.i+1)%len(s.apps)]
			serving, _, _, _ := p.state()
			if !serving || !p.holds(resourcev3.ClusterType, dest.cluster) || !p.holds(resourcev3.EndpointType, dest.cluster) || p.serviceCert() == nil {
				if missing == 0 {
					p.mu.Lock()
					var names []string
					for n := range p.held[resourcev3.ClusterType] {
						names = append(names, n)
					}
					example = fmt.Sprintf("proxy %s: serving %v, clusters %v, want %s and its endpoints and a service-cert", p.node, serving, names, dest.cluster)
					p.mu.Unlock()
				}
				missing++
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d of %d proxies not synced; e.g. %s", missing, len(s.proxies), example)
		}
		return nil
	})
}

// editLoop makes an edit every EditEvery, alternating endpoint and
// TrafficTarget edits over the apps, skipping an app whose last edit is
// still on its way.
func (s *soak) editLoop(ctx context.Context) {
	tick := time.NewTicker(s.cfg.EditEvery)
	defer tick.Stop()
	n := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := s.edits.next(ctx, &n); err != nil && !errors.Is(err, errAllBusy) && ctx.Err() == nil {
			s.progress("edit: %v", err)
		}
	}
}

// runFaults injects the faults at their times.
func (s *soak) runFaults(ctx context.Context) {
	start := time.Now()
	for _, f := range s.cfg.Faults {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(start.Add(f.At))):
		}
		start := time.Now()
		s.progress("%s", f.name())
		err := s.inject(ctx, f)
		ev := faultEvent{name: f.name(), start: start, end: time.Now(), err: err}
		// A killed edge's proxies lose their streams at the kill; the
		// other faults' gaps may come until shortly after the component
		// is back.
		ev.impact = ev.end.Add(5 * time.Second)
		if f.Kind == EdgeKill {
			ev.impact = start.Add(5 * time.Second)
		}
		s.rec.fault(ev)
		if err != nil {
			s.progress("%s: %v", f.name(), err)
		} else {
			s.progress("%s: done in %s", f.name(), ev.end.Sub(ev.start).Round(time.Millisecond))
		}
	}
}

// sample looks at every proxy each second: how many serve, on which edge,
// and whether a service-cert it holds has expired.
func (s *soak) sample(ctx context.Context, rep *Report) {
	start := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastMinute := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		down := 0
		for _, p := range s.proxies {
			serving, _, _, certAfter := p.state()
			if !serving {
				down++
			}
			if !certAfter.IsZero() && now.After(certAfter) {
				s.rec.expired(p, now.Sub(certAfter))
			}
		}
		rep.MostDownAtOnce = max(rep.MostDownAtOnce, down)
		if m := int(time.Since(start) / time.Minute); m > lastMinute {
			lastMinute = m
			st := s.edits.stats()
			s.progress("%d edits, p99 %s, %d not converged; %d proxies without a control plane now", st.n, st.p99.Round(time.Millisecond), st.notConverged, down)
		}
	}
}

// finish fills the report from what was recorded; a proxy still without a
// control plane counts its gap up to now.
func (s *soak) finish(rep *Report) {
	now := time.Now()
	for _, p := range s.proxies {
		serving, _, downSince, _ := p.state()
		if !serving {
			rep.DownAtEnd++
			if !downSince.IsZero() {
				s.rec.gap(p, downSince, now)
			}
		}
		p.mu.Lock()
		rep.Streams += p.streams
		p.mu.Unlock()
	}
	r := s.rec
	rep.Phases = r.phases()
	if g, ok := r.longestGap(); ok {
		rep.LongestGap, rep.LongestGapProxy, rep.LongestGapAt = g.dur(), s.proxies[g.proxy].node, g.start.Sub(r.start)
		rep.LongestGapPhase = r.phaseOf(g.start)
	}
	r.mu.Lock()
	rep.Regressions, rep.WrongIdentity, rep.ViewBack, rep.Unparsed, rep.TLSErrors = r.regressions, r.wrongIDs, r.viewBack, r.unparsedVers, r.tlsErrors
	rep.SameContentBack = r.sameBack
	rep.ExpiredCertProxies, rep.LongestExpired = len(r.expiredProxies), r.maxExpired
	rep.Examples = r.examples
	rep.EndedBy = r.endedBy
	r.mu.Unlock()
	rep.Edits = s.edits.stats()
	rep.Rotation = s.edits.rotationStats()
	s.certs.mu.Lock()
	rep.ClientCertFailures = s.certs.failures
	s.certs.mu.Unlock()
}
