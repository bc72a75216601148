// Package xdsload is the xds-edge's scale harness: it plays the compiler
// (writing a synthetic mesh into KV mesh-compiled) and thousands of delta-xDS
// proxies (each an ADS stream over mTLS), then makes policy edits and
// measures how long each proxy takes to receive them, counted from the
// generation's commit. It runs in its own process, apart from the edges it
// starts (Launcher), so that they do not share file descriptors, CPU
// accounting or the Go scheduler. For comparison it also runs
// go-control-plane's stock delta server (RunStock), fed from the same KV.
//
// The simulated proxies, the throw-away PKI and the mesh-compiled records
// come from the edge's test-support package xdstest.
package xdsload

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/xdstest"
)

// Config says what load to make.
type Config struct {
	// XDSAddr is the edge's ADS address; AdminAddr its admin listener (for
	// /readyz and the heap figure), optional.
	XDSAddr, AdminAddr string
	// PID, when set, is the edge's process (see Edge.PID).
	PID int
	// MoreEdges are further replicas fed from the same bus; proxies are
	// spread over all the edges, round robin.
	MoreEdges []Edge
	// PKI signs the proxies' client certificates; the edge must trust it.
	PKI *xdstest.CA
	// Bus is an admin (or compiler) connection that writes mesh-compiled.
	Bus *bus.Conn
	// Proxies, Groups and ClustersPerGroup shape the mesh.
	Proxies, Groups, ClustersPerGroup int
	// Edits is the number of policy edits to time.
	Edits int
	// Conns is the number of gRPC connections the proxies share (streams
	// are multiplexed over them); 0 means one per proxy.
	Conns int
	// Explicit makes each proxy subscribe to its group's names one by one
	// instead of as a wildcard, which a stock cache (no proxy groups)
	// needs to serve each proxy only its own resources.
	Explicit bool
	// SotW makes the proxies use state-of-the-world ADS instead of delta.
	SotW bool
	// GenBase offsets the generation numbers the edits write (Seed writes
	// 1, edit e writes GenBase+e+2), so that a second run against the same
	// bus moves forward.
	GenBase uint64
	// HeapProfile, when set, is a file to write the first edge's heap
	// profile to once every proxy is synced (after a forced collection;
	// the edge must serve pprof).
	HeapProfile string
	// CPUProfile, when set, is a file to write the first edge's CPU
	// profile to, taken over the edits (the edge must serve pprof).
	CPUProfile string
	// Steady, when positive, is a window after the initial sync, with
	// every proxy connected and no edit, over which the servers' CPU time
	// is measured (Report.SteadyCPU).
	Steady time.Duration
}

// Edge is one edge replica's addresses.
type Edge struct {
	XDSAddr, AdminAddr string
	// PID, when set, is the server's process, whose CPU time the report
	// counts over the edits (Linux /proc).
	PID int
}

// edges lists every replica.
func (c Config) edges() []Edge {
	return append([]Edge{{XDSAddr: c.XDSAddr, AdminAddr: c.AdminAddr, PID: c.PID}}, c.MoreEdges...)
}

// sumOver adds f over the edges with an admin address.
func (c Config) sumOver(f func(adminAddr string) (float64, error)) (float64, error) {
	var total float64
	for _, e := range c.edges() {
		if e.AdminAddr == "" {
			continue
		}
		v, err := f(e.AdminAddr)
		if err != nil {
			return 0, err
		}
		total += v
	}
	return total, nil
}

// Report is what a run measured.
type Report struct {
	Proxies       int
	InitialSync   time.Duration // from the first stream opened to the last initial response
	EditLatencies []Quantiles   // per edit: commit → received, over every proxy
	Missed        int           // proxies that did not receive an edit within the timeout
	HeapPerProxy  float64       // bytes of edge heap per idle proxy (0 without AdminAddr)
	// AckedWithin150ms and Acks are read from the edge's own push→ACK
	// histogram (commit to ACK, every push a commit caused), when AdminAddr
	// is set.
	AckedWithin150ms, Acks float64
	EdgeHeapBefore         float64
	EdgeHeapAfter          float64
	// ServerCPUPerEdit is the CPU time the server processes (those with a
	// PID) spent per edit, averaged over the edits; zero when unknown.
	ServerCPUPerEdit time.Duration
	// SteadyCPU is the servers' CPU time over Config.Steady, with every
	// proxy connected and no edit; SteadyWindow the window measured.
	SteadyCPU, SteadyWindow time.Duration
	// RSSSynced is the servers' resident set (VmRSS, summed) once every
	// proxy is synced; RSSPeak their peak resident sets (VmHWM, summed) at
	// the end of the run. Zero when unknown.
	RSSSynced, RSSPeak float64
	// RSSIdle is the servers' resident set before the proxies connect.
	RSSIdle float64
}

// WorstP99 is the highest p99 over the edits.
func (r Report) WorstP99() time.Duration {
	var w time.Duration
	for _, q := range r.EditLatencies {
		w = max(w, q.P99)
	}
	return w
}

// Quantiles summarise latencies.
type Quantiles struct {
	P50, P99, Max time.Duration
	N             int
}

func quantiles(d []time.Duration) Quantiles {
	if len(d) == 0 {
		return Quantiles{}
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	at := func(q float64) time.Duration { return d[min(len(d)-1, int(q*float64(len(d))))] }
	return Quantiles{P50: at(0.50), P99: at(0.99), Max: d[len(d)-1], N: len(d)}
}

// Print writes the report.
func (r Report) Print(w io.Writer) {
	fmt.Fprintf(w, "proxies: %d\ninitial sync (all proxies): %s\n", r.Proxies, r.InitialSync.Round(time.Millisecond))
	for i, q := range r.EditLatencies {
		fmt.Fprintf(w, "edit %d: commit→received over %d proxies: p50 %s p99 %s max %s\n", i+1, q.N, q.P50.Round(time.Millisecond), q.P99.Round(time.Millisecond), q.Max.Round(time.Millisecond))
	}
	fmt.Fprintf(w, "missed: %d\n", r.Missed)
	if r.Acks > 0 {
		fmt.Fprintf(w, "edge push→ACK histogram: %.0f of %.0f ACKs (%.1f%%) within 150ms of the commit\n", r.AckedWithin150ms, r.Acks, 100*r.AckedWithin150ms/r.Acks)
	}
	if r.ServerCPUPerEdit > 0 {
		fmt.Fprintf(w, "server CPU per edit: %s\n", r.ServerCPUPerEdit.Round(time.Millisecond))
	}
	if r.SteadyWindow > 0 {
		cores := r.SteadyCPU.Seconds() / r.SteadyWindow.Seconds()
		fmt.Fprintf(w, "server CPU, steady (connected, no edit) over %s: %s = %.1f millicores, %.1f millicores per 1k proxies\n",
			r.SteadyWindow.Round(100*time.Millisecond), r.SteadyCPU.Round(time.Millisecond), 1000*cores, 1000*cores*1000/float64(r.Proxies))
	}
	if r.RSSSynced > 0 {
		fmt.Fprintf(w, "server RSS: %.1f MB idle, %.1f MB once synced, peak %.1f MB: %.1f MB per 1k proxies over idle, at the peak\n",
			r.RSSIdle/1e6, r.RSSSynced/1e6, r.RSSPeak/1e6, (r.RSSPeak-r.RSSIdle)/1e6*1000/float64(r.Proxies))
	}
	if r.HeapPerProxy > 0 {
		fmt.Fprintf(w, "server heap: %.1f MB idle before, %.1f MB with the proxies: %.1f KB per proxy\n", r.EdgeHeapBefore/1e6, r.EdgeHeapAfter/1e6, r.HeapPerProxy/1e3)
	}
}

const sharedEndpoints = "ep-shared"

// Seed writes the synthetic mesh and its first generation: every group
// names ClustersPerGroup clusters and load assignments of its own plus one
// load assignment every group shares (the one the edits change).
func Seed(ctx context.Context, c Config) error {
	store, err := c.Bus.EnsureBucket(ctx, bus.BucketCompiled, bus.BucketOptions{})
	if err != nil {
		return err
	}
	put := func(w xdstest.Write, err error) error {
		if err != nil {
			return err
		}
		_, err = store.Put(ctx, w.Key, w.Value)
		return err
	}
	if err := put(xdstest.Resource(xdstest.Endpoints(sharedEndpoints, 1), sharedEndpoints, 1)); err != nil {
		return err
	}
	for g := range c.Groups {
		names := groupNames(g, c.ClustersPerGroup)
		for _, n := range names[resourcev3.ClusterType] {
			if err := put(xdstest.Resource(xdstest.Cluster(n, time.Second), n, 1)); err != nil {
				return err
			}
			if err := put(xdstest.Resource(xdstest.Endpoints(n, 80), n, 1)); err != nil {
				return err
			}
		}
		ns := groupNS(g)
		if err := put(xdstest.Group(ns, ns, 1, names), nil); err != nil {
			return err
		}
	}
	return put(xdstest.Generation(1), nil)
}

func groupNS(g int) string { return "load" + strconv.Itoa(g) }

// groupNames are the names group g's proxies hold, by type, as Seed
// writes them.
func groupNames(g, clustersPerGroup int) map[string][]string {
	clusters, eps := []string{}, []string{sharedEndpoints}
	for i := range clustersPerGroup {
		n := fmt.Sprintf("g%d-c%d", g, i)
		clusters, eps = append(clusters, n), append(eps, n)
	}
	return map[string][]string{resourcev3.ClusterType: clusters, resourcev3.EndpointType: eps}
}

// Run seeds nothing: it connects the proxies, times their initial sync,
// makes the edits and times their delivery. Seed (or a real compiler) must
// have written the mesh.
func Run(ctx context.Context, c Config) (*Report, error) {
	rep := &Report{Proxies: c.Proxies}
	heapBefore, _ := c.sumOver(edgeHeap)
	rep.RSSIdle, _ = c.serverRSS("VmRSS:")
	edges := c.edges()
	creds := make([]credentials.TransportCredentials, c.Groups)
	for g := range c.Groups {
		tc, err := c.PKI.ClientTLS(identity.New("cluster.local", groupNS(g), groupNS(g)).URLFor(identity.UsageXDSClient).String())
		if err != nil {
			return nil, err
		}
		creds[g] = credentials.NewTLS(tc)
	}
	conns := map[string]*grpc.ClientConn{}
	defer func() {
		for _, cc := range conns {
			cc.Close()
		}
	}()
	conn := func(i int) (*grpc.ClientConn, error) {
		g := i % c.Groups
		slot := i
		if c.Conns > 0 {
			slot = i % max(c.Conns, c.Groups)
		}
		e := i % len(edges)
		key := fmt.Sprintf("%d/%d/%d", e, g, slot)
		if cc := conns[key]; cc != nil {
			return cc, nil
		}
		// Fixed windows, as Envoy has (it sends no bandwidth-delay PINGs).
		cc, err := grpc.NewClient(edges[e].XDSAddr, grpc.WithTransportCredentials(creds[g]),
			grpc.WithStaticStreamWindowSize(16<<20), grpc.WithStaticConnWindowSize(16<<20))
		if err != nil {
			return nil, err
		}
		conns[key] = cc
		return cc, nil
	}
	start := time.Now()
	proxies := make([]*xdstest.Proxy, c.Proxies)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i := range c.Proxies {
		cc, err := conn(i)
		if err != nil {
			return nil, err
		}
		o := xdstest.ProxyOptions{NodeID: fmt.Sprintf("load-%d", i), Delta: !c.SotW, Types: []string{resourcev3.ClusterType, resourcev3.EndpointType}}
		if c.Explicit {
			o.Names = groupNames(i%c.Groups, c.ClustersPerGroup)
		}
		p, err := xdstest.StartProxy(ctx, cc, o)
		if err != nil {
			return nil, fmt.Errorf("proxy %d: %w", i, err)
		}
		defer p.Stop()
		proxies[i] = p
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2 {
				if _, err := p.Next(ctx); err != nil {
					mu.Lock()
					firstErr = fmt.Errorf("proxy %d initial sync: %w", i, err)
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	rep.InitialSync = time.Since(start)
	if heapAfter, err := c.sumOver(edgeHeap); err == nil && heapBefore > 0 {
		rep.EdgeHeapBefore, rep.EdgeHeapAfter = heapBefore, heapAfter
		rep.HeapPerProxy = (heapAfter - heapBefore) / float64(c.Proxies)
	}
	rep.RSSSynced, _ = c.serverRSS("VmRSS:")
	if c.Steady > 0 {
		cpu0, ok0 := c.serverCPU()
		t0 := time.Now()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(c.Steady):
		}
		if cpu1, ok1 := c.serverCPU(); ok0 && ok1 {
			rep.SteadyCPU, rep.SteadyWindow = cpu1-cpu0, time.Since(t0)
		}
	}
	if c.HeapProfile != "" {
		if err := saveProfile("http://"+c.AdminAddr+"/debug/pprof/heap?gc=1", c.HeapProfile); err != nil {
			return nil, fmt.Errorf("heap profile: %w", err)
		}
	}

	store, err := c.Bus.Bucket(ctx, bus.BucketCompiled)
	if err != nil {
		return nil, err
	}
	var profileDone chan error
	if c.CPUProfile != "" {
		// Each edit takes about a second at 10k proxies; the profile ends
		// on its own, and is waited for after the edits.
		profileDone = make(chan error, 1)
		go func() {
			profileDone <- saveProfile(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", c.AdminAddr, 1+c.Edits), c.CPUProfile)
		}()
		time.Sleep(100 * time.Millisecond) // let the profile start
	}
	cpu0, cpuOK := c.serverCPU()
	for e := range c.Edits {
		genNum := c.GenBase + uint64(e+2)
		w, err := xdstest.Resource(xdstest.Endpoints(sharedEndpoints, uint32(1000+genNum)), sharedEndpoints, genNum)
		if err != nil {
			return nil, err
		}
		lat := make([]time.Duration, 0, c.Proxies)
		var lmu sync.Mutex
		var ewg sync.WaitGroup
		var commit time.Time
		ready := make(chan struct{})
		for _, p := range proxies {
			ewg.Add(1)
			go func() {
				defer ewg.Done()
				wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				for {
					r, err := p.Next(wctx)
					if err != nil {
						lmu.Lock()
						rep.Missed++
						lmu.Unlock()
						return
					}
					if _, ok := r.Resources[sharedEndpoints]; ok {
						at := time.Now()
						<-ready
						lmu.Lock()
						lat = append(lat, at.Sub(commit))
						lmu.Unlock()
						return
					}
				}
			}()
		}
		if _, err := store.Put(ctx, w.Key, w.Value); err != nil {
			return nil, err
		}
		gen := xdstest.Generation(genNum)
		commit = time.Now()
		if _, err := store.Put(ctx, gen.Key, gen.Value); err != nil {
			return nil, err
		}
		close(ready)
		ewg.Wait()
		rep.EditLatencies = append(rep.EditLatencies, quantiles(lat))
	}
	if cpu1, ok := c.serverCPU(); ok && cpuOK && c.Edits > 0 {
		rep.ServerCPUPerEdit = (cpu1 - cpu0) / time.Duration(c.Edits)
	}
	rep.RSSPeak, _ = c.serverRSS("VmHWM:")
	if profileDone != nil {
		if err := <-profileDone; err != nil {
			return nil, fmt.Errorf("cpu profile: %w", err)
		}
	}
	if c.AdminAddr != "" {
		// Give the last ACKs time to reach the edges.
		time.Sleep(500 * time.Millisecond)
		for _, e := range edges {
			if e.AdminAddr == "" {
				continue
			}
			within, total, _ := ackHistogram(e.AdminAddr, `le="0.15"`)
			rep.AckedWithin150ms += within
			rep.Acks += total
		}
	}
	return rep, nil
}

// serverCPU sums the user and system CPU time of the servers with a PID,
// from /proc/<pid>/stat; false when there is none or it cannot be read.
func (c Config) serverCPU() (time.Duration, bool) {
	var total time.Duration
	n := 0
	for _, e := range c.edges() {
		if e.PID == 0 {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", e.PID))
		if err != nil {
			return 0, false
		}
		// Fields after the command name (which may hold spaces) start
		// after the last ')'; utime and stime are fields 14 and 15.
		i := strings.LastIndexByte(string(b), ')')
		f := strings.Fields(string(b)[i+1:])
		if len(f) < 13 {
			return 0, false
		}
		ut, err1 := strconv.ParseInt(f[11], 10, 64)
		st, err2 := strconv.ParseInt(f[12], 10, 64)
		if err1 != nil || err2 != nil {
			return 0, false
		}
		total += time.Duration(ut+st) * time.Second / clockTicks
		n++
	}
	return total, n > 0
}

// serverRSS sums a /proc/<pid>/status field given in kB (VmRSS:, VmHWM:)
// over the servers with a PID, in bytes; false when none could be read.
func (c Config) serverRSS(field string) (float64, bool) {
	var total float64
	n := 0
	for _, e := range c.edges() {
		if e.PID == 0 {
			continue
		}
		v, err := procStatusKB(e.PID, field)
		if err != nil {
			return 0, false
		}
		total += v
		n++
	}
	return total, n > 0
}

// procStatusKB reads a field in kB of /proc/<pid>/status (pid 0: this
// process), in bytes.
func procStatusKB(pid int, field string) (float64, error) {
	path := "/proc/self/status"
	if pid != 0 {
		path = fmt.Sprintf("/proc/%d/status", pid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			kb, err := strconv.ParseFloat(f[0], 64)
			if err != nil {
				return 0, fmt.Errorf("%s %s: %w", path, field, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("%s: no %s", path, field)
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times; 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// ackHistogram sums the edge's push→ACK histogram over its series: the
// count in the bucket matching le, and the total count.
func ackHistogram(adminAddr, le string) (within, total float64, err error) {
	text, err := apptest.Metrics(adminAddr)
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(text, "\n") {
		name, rest, ok := strings.Cut(line, "{")
		if !ok {
			continue
		}
		i := strings.LastIndexByte(rest, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(rest[i+1:], 64)
		if err != nil {
			continue
		}
		switch {
		case name == "osm_xds_push_ack_latency_seconds_bucket" && strings.Contains(rest, le):
			within += v
		case name == "osm_xds_push_ack_latency_seconds_count":
			total += v
		}
	}
	return within, total, nil
}

// edgeHeap reads go_memstats_heap_alloc_bytes from the edge's /metrics,
// right after a forced garbage collection when the server serves pprof
// (the edges the harness starts do), so that the figure is the live heap
// whatever GOGC the server runs with; otherwise after letting its garbage
// settle for 2 s, which counts some garbage.
func edgeHeap(adminAddr string) (float64, error) {
	if adminAddr == "" {
		return 0, fmt.Errorf("no admin address")
	}
	if gc, err := http.Get("http://" + adminAddr + "/debug/pprof/heap?gc=1"); err == nil && gc.StatusCode == http.StatusOK {
		_, _ = io.Copy(io.Discard, gc.Body)
		gc.Body.Close()
	} else {
		if err == nil {
			gc.Body.Close()
		}
		time.Sleep(2 * time.Second)
	}
	return apptest.MetricValue(adminAddr, "go_memstats_heap_alloc_bytes", "")
}

// saveProfile writes the pprof profile at url to file.
func saveProfile(url, file string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s (is the edge serving pprof?)", resp.Request.URL, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
