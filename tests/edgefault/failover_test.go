package edgefault

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/xdstest"
	"github.com/openservicemesh/osm/tests/stack"
	"github.com/openservicemesh/osm/tests/xdsload"
)

// f4Config sizes fault F4.
type f4Config struct {
	proxies, groups, clusters int
	// rate and burst are the edges' --stream-rate and --stream-burst.
	rate, burst int
}

// f4Size is make test's size, or the fault plan's with OSM_FAULTS_FULL=1:
// 1,000 proxies on the killed edge, and the edge's default admission
// limit (200/s, burst 400). make test's 200 proxies meet a limit scaled
// down alike (40/s, burst 80), so that the limit binds in both.
func f4Size() f4Config {
	if full() {
		return f4Config{proxies: 1000, groups: 50, clusters: 10, rate: 200, burst: 400}
	}
	return f4Config{proxies: 200, groups: 20, clusters: 10, rate: 40, burst: 80}
}

// f4Edge is one edge process at fixed addresses.
type f4Edge struct {
	name, addr, admin string
	args              []string
	proc              *stack.Proc
}

// f4Proxy is a simulated state-of-the-world Envoy: it keeps its config
// across streams, reconnects when a stream ends (alternating over the
// edges, with Envoy's jittered exponential backoff), and checks every
// response.
type f4Proxy struct {
	idx   int
	group int
	conns []*grpc.ClientConn
	r     *f4Run

	mu       sync.Mutex
	versions map[string]string // type → version_info held
	topGen   map[string]uint64 // type → highest generation held
	servedOn int               // edge of the serving stream, -1 when none
	served   []time.Time       // when each stream delivered the whole config
	gen      uint64            // generation of the clusters held
}

// f4Run is what the run records.
type f4Run struct {
	cfg       f4Config
	edges     []*f4Edge
	mu        sync.Mutex
	responses int
	bad       []string // empty, short or mixed responses
	regress   []string
	admitted  map[int][]time.Time // edge → when a stream first delivered
	refusals  map[codes.Code]int
}

func (r *f4Run) fail(list *[]string, format string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(*list) < 20 {
		*list = append(*list, fmt.Sprintf(format, a...))
	} else {
		*list = append(*list, "")
	}
}

// genOfVersion is the generation number of a SotW version_info
// ("<number>.<hash>" or "<epoch>:<number>.<hash>").
func genOfVersion(v string) uint64 {
	head, _, _ := strings.Cut(v, ".")
	if _, n, ok := strings.Cut(head, ":"); ok {
		head = n
	}
	g, _ := strconv.ParseUint(head, 10, 64)
	return g
}

// check looks at one response on a stream to edge e: it must hold every
// name of the proxy's group, all of one generation (the cluster's connect
// timeout is its generation in seconds), and not go back.
func (p *f4Proxy) check(e int, resp xdstest.Response) {
	r := p.r
	r.mu.Lock()
	r.responses++
	r.mu.Unlock()
	want := r.cfg.clusters
	if len(resp.Resources) != want {
		r.fail(&r.bad, "proxy %d from edge %d: %s response with %d resources, want %d", p.idx, e, resp.TypeURL, len(resp.Resources), want)
	}
	gens := map[uint64]bool{}
	if resp.TypeURL == resourcev3.ClusterType {
		for n, a := range resp.Resources {
			var c clusterv3.Cluster
			if err := a.UnmarshalTo(&c); err != nil || !strings.HasPrefix(n, fmt.Sprintf("g%d-", p.group)) {
				r.fail(&r.bad, "proxy %d: cluster %s not of its group (%v)", p.idx, n, err)
				continue
			}
			gens[uint64(c.GetConnectTimeout().AsDuration()/time.Second)] = true
		}
		if len(gens) > 1 {
			r.fail(&r.bad, "proxy %d from edge %d: clusters of generations %v in one response", p.idx, e, gens)
		}
	}
	g := genOfVersion(resp.Version)
	p.mu.Lock()
	defer p.mu.Unlock()
	if g < p.topGen[resp.TypeURL] {
		r.fail(&r.regress, "proxy %d from edge %d: %s generation %d after %d", p.idx, e, resp.TypeURL, g, p.topGen[resp.TypeURL])
	}
	p.topGen[resp.TypeURL] = max(p.topGen[resp.TypeURL], g)
	p.versions[resp.TypeURL] = resp.Version
	for gen := range gens {
		p.gen = gen
	}
}

// run keeps a stream open until ctx ends.
func (p *f4Proxy) run(ctx context.Context, first int) {
	const base, ceiling = 500 * time.Millisecond, 30 * time.Second
	failures := 0
	everServed := false
	for attempt := first; ctx.Err() == nil; attempt++ {
		e := attempt % len(p.conns)
		if !everServed {
			e = first // the proxies are placed on their first edge
		}
		served, err := p.stream(ctx, e)
		everServed = everServed || served
		if ctx.Err() != nil {
			return
		}
		p.r.mu.Lock()
		p.r.refusals[status.Code(err)]++
		p.r.mu.Unlock()
		if served {
			failures = 0
			continue
		}
		// Envoy's JitteredExponentialBackOffStrategy: uniform below
		// base*2^n, capped.
		failures++
		limit := min(ceiling, base<<min(failures-1, 10))
		select {
		case <-ctx.Done():
			return
		case <-time.After(rand.N(limit) + time.Millisecond):
		}
	}
}

// stream runs one stream to edge e until it ends; served says it
// delivered the whole config (a CDS and an EDS response).
func (p *f4Proxy) stream(ctx context.Context, e int) (bool, error) {
	p.mu.Lock()
	versions := map[string]string{}
	for k, v := range p.versions {
		versions[k] = v
	}
	p.mu.Unlock()
	var mu sync.Mutex
	got := map[string]bool{}
	delivered := make(chan struct{})
	x, err := xdstest.StartProxy(ctx, p.conns[e], xdstest.ProxyOptions{
		NodeID: fmt.Sprintf("f4-%d", p.idx), Types: []string{resourcev3.ClusterType, resourcev3.EndpointType}, Versions: versions,
		Reject: func(resp xdstest.Response) string {
			p.check(e, resp)
			mu.Lock()
			defer mu.Unlock()
			if !got[resp.TypeURL] {
				got[resp.TypeURL] = true
				if len(got) == 2 {
					close(delivered)
				}
			}
			return ""
		}})
	if err != nil {
		return false, err
	}
	defer x.Stop()
	select {
	case <-delivered:
	case <-x.Done():
		return false, x.Err()
	case <-ctx.Done():
		return false, ctx.Err()
	}
	now := time.Now()
	p.mu.Lock()
	p.servedOn = e
	p.served = append(p.served, now)
	p.mu.Unlock()
	p.r.mu.Lock()
	p.r.admitted[e] = append(p.r.admitted[e], now)
	p.r.mu.Unlock()
	select {
	case <-x.Done():
	case <-ctx.Done():
	}
	p.mu.Lock()
	p.servedOn = -1
	p.mu.Unlock()
	return true, x.Err()
}

func (p *f4Proxy) state() (servedOn int, served []time.Time, gen uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.servedOn, append([]time.Time(nil), p.served...), p.gen
}

// TestEdgeKilledAndRestartedWithNoState is fault F4 of the fault plan
// (docs/faults.md). Two xds-edge processes share an embedded NATS; every
// proxy (simulated state-of-the-world Envoys, one TLS connection each,
// reconnecting with Envoy's jittered backoff to the other edge when a
// stream ends) starts on edge A. A is killed with SIGKILL: every proxy
// fails over to edge B, within B's admission limit (--stream-rate,
// --stream-burst). While A is down the compiler writes the keys of a new
// generation that rewrites every cluster, and has not written the
// generation yet, when A is started again with no state: A must not turn
// ready, nor admit a stream, before it holds a whole generation; probes
// opened while it starts are refused or get the whole of one. Then the
// generation is written and reaches every proxy.
//
// Pass figures, logged: 0 empty or short (or mixed-generation) SotW
// responses, 0 version regressions, every proxy served again within 30 s
// p99 of the kill, and B admitting no faster than its limit. make test
// runs 200 proxies (limit 40/s, burst 80); OSM_FAULTS_FULL=1 runs 1,000
// (the edge's default limit, 200/s, burst 400).
func TestEdgeKilledAndRestartedWithNoState(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: this test builds and runs the services as processes")
	}
	cfg := f4Size()
	ctx := t.Context()
	nats := startNATS(t)
	admin := connect(t, nats, bus.RoleAdmin)
	pki, files, err := xdsload.WritePKI(ctx, t.TempDir(), admin)
	if err != nil {
		t.Fatal(err)
	}
	compiled, err := connect(t, nats, bus.RoleCompiler).EnsureBucket(ctx, bus.BucketCompiled, bus.BucketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// writeGen writes generation g's keys: every cluster's connect timeout
	// is g seconds; and the generation record when record is set.
	writeGen := func(g uint64, record bool) {
		t.Helper()
		for grp := range cfg.groups {
			names := map[string][]string{}
			for c := range cfg.clusters {
				n := fmt.Sprintf("g%d-c%d", grp, c)
				names[resourcev3.ClusterType] = append(names[resourcev3.ClusterType], n)
				names[resourcev3.EndpointType] = append(names[resourcev3.EndpointType], n)
				cw, err := xdstest.Resource(xdstest.Cluster(n, time.Duration(g)*time.Second), n, g)
				if err != nil {
					t.Fatal(err)
				}
				ws := []xdstest.Write{cw}
				if g == 1 {
					ew, err := xdstest.Resource(xdstest.Endpoints(n, 8080), n, g)
					if err != nil {
						t.Fatal(err)
					}
					ws = append(ws, ew)
				}
				for _, w := range ws {
					if _, err := compiled.Put(ctx, w.Key, w.Value); err != nil {
						t.Fatal(err)
					}
				}
			}
			if g == 1 {
				ns := fmt.Sprintf("f4-%d", grp)
				w := xdstest.Group(ns, ns, g, names)
				if _, err := compiled.Put(ctx, w.Key, w.Value); err != nil {
					t.Fatal(err)
				}
			}
		}
		if record {
			w := xdstest.Generation(g)
			if _, err := compiled.Put(ctx, w.Key, w.Value); err != nil {
				t.Fatal(err)
			}
		}
	}
	writeGen(1, true)

	bin := build(t, "xds-edge")
	r := &f4Run{cfg: cfg, admitted: map[int][]time.Time{}, refusals: map[codes.Code]int{}}
	for _, name := range []string{"a", "b"} {
		e := &f4Edge{name: name, addr: apptest.FreeAddr(t), admin: apptest.FreeAddr(t)}
		e.args = []string{"--nats-url", nats.URL(), "--nats-user", string(bus.RoleEdge), "--listen-addr", e.addr, "--admin-addr", e.admin, "--log-level", "warn",
			"--tls-cert-file", files.Cert, "--tls-key-file", files.Key, "--tls-client-ca-file", files.Root,
			// The proxies ask for no secret, so the CA is never called.
			"--ca-addr", "127.0.0.1:1", "--ca-client-cert-file", files.Cert, "--ca-client-key-file", files.Key, "--ca-trust-file", files.Root,
			"--pod-name", "f4-edge-" + name, "--stream-rate", strconv.Itoa(cfg.rate), "--stream-burst", strconv.Itoa(cfg.burst)}
		e.proc = startProc(t, "xds-edge-"+name, bin, e.args, map[string]string{"OSM_NATS_PASSWORD": passwords[bus.RoleEdge]})
		r.edges = append(r.edges, e)
	}
	for _, e := range r.edges {
		waitReady(t, e.proc, e.admin, 60*time.Second)
	}

	runCtx, stopProxies := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stopProxies(); wg.Wait() }()
	proxies := make([]*f4Proxy, cfg.proxies)
	for i := range proxies {
		grp := i % cfg.groups
		ns := fmt.Sprintf("f4-%d", grp)
		uri := identity.New("cluster.local", ns, ns).URLFor(identity.UsageXDSClient).String()
		p := &f4Proxy{idx: i, group: grp, r: r, versions: map[string]string{}, topGen: map[string]uint64{}, servedOn: -1}
		for _, e := range r.edges {
			p.conns = append(p.conns, dialEdge(t, pki, e.addr, uri, nil))
		}
		proxies[i] = p
		wg.Add(1)
		go func() { defer wg.Done(); p.run(runCtx, 0) }() // every proxy starts on edge A
	}
	apptest.Eventually(t, "every proxy served by edge A", 120*time.Second, func() error {
		for _, p := range proxies {
			if on, _, _ := p.state(); on != 0 {
				return fmt.Errorf("proxy %d is not on edge A", p.idx)
			}
		}
		return nil
	})
	rateLimitedBefore, _ := apptest.MetricValue(r.edges[1].admin, "osm_xds_streams_refused_total", "rate_limited")

	// Kill A.
	killAt := time.Now()
	if err := r.edges[0].proc.Kill(); err != nil {
		t.Fatal(err)
	}
	reconnect := make([]time.Duration, len(proxies))
	apptest.Eventually(t, "every proxy served by edge B", 120*time.Second, func() error {
		for i, p := range proxies {
			on, served, _ := p.state()
			if on != 1 {
				return fmt.Errorf("proxy %d is not on edge B", p.idx)
			}
			reconnect[i] = served[len(served)-1].Sub(killAt)
		}
		return nil
	})
	sorted := append([]time.Duration(nil), reconnect...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	p50, p99, worst := sorted[len(sorted)/2], sorted[len(sorted)*99/100], sorted[len(sorted)-1]
	rateLimited, _ := apptest.MetricValue(r.edges[1].admin, "osm_xds_streams_refused_total", "rate_limited")
	rateLimited -= rateLimitedBefore
	// B's admissions after the kill, seen by the proxies (a stream is
	// counted when it delivered, later than B admitted it; a one-second
	// allowance covers that delay, which reached 0.5 s on a loaded
	// machine: 144 deliveries within 1 s against 140 allowed with 0.5 s).
	r.mu.Lock()
	var onB []time.Time
	for _, at := range r.admitted[1] {
		if at.After(killAt) {
			onB = append(onB, at)
		}
	}
	r.mu.Unlock()
	sort.Slice(onB, func(i, j int) bool { return onB[i].Before(onB[j]) })
	overLimit := ""
	for _, w := range []time.Duration{time.Second, 2 * time.Second, 5 * time.Second} {
		allowed := cfg.burst + int(float64(cfg.rate)*(w+time.Second).Seconds())
		for i, j := 0, 0; i < len(onB); i++ {
			for j < len(onB) && onB[j].Sub(onB[i]) < w {
				j++
			}
			if j-i > allowed && overLimit == "" {
				overLimit = fmt.Sprintf("%d streams delivered within %s from %s, over burst %d + rate %d/s", j-i, w, onB[i].Sub(killAt).Round(time.Millisecond), cfg.burst, cfg.rate)
			}
		}
	}

	// A mid-write generation, and A back with no state.
	writeGen(2, false)
	restartAt := time.Now()
	a := r.edges[0]
	a.proc = startProc(t, "xds-edge-a-restarted", bin, a.args, map[string]string{"OSM_NATS_PASSWORD": passwords[bus.RoleEdge]})
	probeCC := dialEdge(t, pki, a.addr, identity.New("cluster.local", "f4-0", "f4-0").URLFor(identity.UsageXDSClient).String(), nil)
	probe := &f4Proxy{idx: -1, group: 0, r: r, versions: map[string]string{}, topGen: map[string]uint64{}, servedOn: -1}
	// tryProbe opens a probe stream to A: refused (counted), or given the
	// whole of a generation (check counts anything less).
	refused := 0
	tryProbe := func() {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		x, err := xdstest.StartProxy(pctx, probeCC, xdstest.ProxyOptions{NodeID: "f4-probe", Types: []string{resourcev3.ClusterType, resourcev3.EndpointType},
			Reject: func(resp xdstest.Response) string { probe.check(0, resp); return "" }})
		if err != nil {
			return
		}
		defer x.Stop()
		select {
		case <-x.Done():
			if status.Code(x.Err()) == codes.Unavailable {
				refused++
			}
		case <-time.After(300 * time.Millisecond):
		}
	}
	// For 3 s the bucket holds generation 1's record followed by
	// generation 2's keys: A cannot serve generation 1 whole and must
	// stay not ready.
	notReady, readyEarly := 0, ""
	for hold := time.Now().Add(3 * time.Second); time.Now().Before(hold); {
		if err := apptest.Ready(a.admin); err != nil {
			notReady++
		} else if readyEarly == "" {
			readyEarly = fmt.Sprintf("ready %s after its start, with generation 2 half-written", time.Since(restartAt).Round(time.Millisecond))
		}
		tryProbe()
		time.Sleep(20 * time.Millisecond)
	}
	if readyEarly != "" {
		t.Errorf("the restarted edge turned %s", readyEarly)
	}

	// The compiler writes the generation: every proxy gets all of it.
	writeGen(2, true)
	genAt := time.Now()
	apptest.Eventually(t, "generation 2 at every proxy", 60*time.Second, func() error {
		for _, p := range proxies {
			if _, _, g := p.state(); g != 2 {
				return fmt.Errorf("proxy %d holds generation %d", p.idx, g)
			}
		}
		return nil
	})
	converged := time.Since(genAt)
	waitReady(t, a.proc, a.admin, 30*time.Second)
	readyAfter := time.Since(genAt)
	tryProbe()
	if _, _, g := probe.state(); g != 2 {
		t.Errorf("the restarted edge, ready, served the probe generation %d, want 2", g)
	}
	stopProxies()
	wg.Wait()

	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.bad) > 0 {
		t.Errorf("%d empty, short or mixed responses, e.g.:\n%s", len(r.bad), strings.Join(r.bad, "\n"))
	}
	if len(r.regress) > 0 {
		t.Errorf("%d version regressions, e.g.:\n%s", len(r.regress), strings.Join(r.regress, "\n"))
	}
	if p99 > 30*time.Second {
		t.Errorf("reconnects p99 %s after the kill, want within 30s", p99)
	}
	if overLimit != "" {
		t.Errorf("edge B admitted over its limit: %s", overLimit)
	}
	if cfg.proxies > cfg.burst && rateLimited == 0 {
		t.Errorf("no stream refused by B's rate limit with %d proxies over a burst of %d: the limit was not in force", cfg.proxies, cfg.burst)
	}
	t.Logf("F4: %d proxies failed over from the killed edge: reconnected p50 %s p99 %s max %s after the kill (plan: p99 <= 30s); B refused %v over its limit (%d/s, burst %d), admitted within it; "+
		"restarted edge not ready through 3s with generation 2 half-written (%d not-ready answers, %d probe streams refused), ready %s after generation 2's record; generation 2 at every proxy %s after its record; "+
		"%d responses checked: %d empty/short/mixed, %d regressions; stream ends by code %v",
		cfg.proxies, p50.Round(time.Millisecond), p99.Round(time.Millisecond), worst.Round(time.Millisecond), rateLimited, cfg.rate, cfg.burst,
		notReady, refused, readyAfter.Round(time.Millisecond), converged.Round(time.Millisecond), r.responses, len(r.bad), len(r.regress), r.refusals)
}
