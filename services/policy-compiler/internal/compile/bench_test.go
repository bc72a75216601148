package compile

import (
	"fmt"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

// maxKVValue is what a compiled value may take: the NATS max_payload less
// room for the CompiledResource envelope and the message headers.
const maxKVValue = bus.MaxValueSize - 4096

func loaded(b *testing.B, cfg synth.Config) (*Engine, *Delta) {
	b.Helper()
	e := newEngine()
	d := load(b, e, synth.Generate(cfg))
	return e, d
}

// checkSizes fails the benchmark when a compiled value (resource, name set
// or group) would exceed the NATS max_payload, and reports the largest and
// the bytes per identity.
func checkSizes(b *testing.B, e *Engine) {
	b.Helper()
	largest := 0
	size := map[string]int{}
	for _, r := range e.Resources() {
		largest = max(largest, len(r.Bytes))
		size[r.Type+"/"+r.Name] = len(r.Bytes)
		if len(r.Bytes) > maxKVValue {
			b.Fatalf("%s is %d bytes, over the %d-byte NATS limit", r.Key(), len(r.Bytes), maxKVValue)
		}
	}
	total, groups := 0, 0
	// A set's bytes are summed once and added to each group listing it (the
	// compiler's sets are disjoint shards; a group's own names that a set
	// also holds are counted once).
	setBytes := map[string]int{}
	inSet := map[string]bool{}
	for _, s := range e.Sets() {
		v, _ := proto.Marshal(s.Set)
		largest = max(largest, len(v))
		if len(v) > maxKVValue {
			b.Fatalf("set %s is %d bytes, over the %d-byte NATS limit", s.Key(), len(v), maxKVValue)
		}
		for typeURL, names := range s.Set.GetResources() {
			for _, n := range names.GetNames() {
				setBytes[s.Set.GetName()] += size[shortType(typeURL)+"/"+n]
				inSet[typeURL+" "+n] = true
			}
		}
	}
	for _, g := range e.Groups() {
		groups++
		v, _ := proto.Marshal(g.Group)
		largest = max(largest, len(v))
		if len(v) > maxKVValue {
			b.Fatalf("group %s is %d bytes, over the %d-byte NATS limit", g.Key(), len(v), maxKVValue)
		}
		for _, name := range g.Group.GetSets() {
			total += setBytes[name]
		}
		for typeURL, names := range g.Group.GetResources() {
			for _, n := range names.GetNames() {
				if len(g.Group.GetSets()) == 0 || !inSet[typeURL+" "+n] {
					total += size[shortType(typeURL)+"/"+n]
				}
			}
		}
	}
	b.ReportMetric(float64(largest), "max-value-bytes")
	if groups > 0 {
		b.ReportMetric(float64(total)/float64(groups), "bytes/identity")
	}
}

func shortType(typeURL string) string {
	for short, u := range typeURLs {
		if u == typeURL {
			return short
		}
	}
	return ""
}

func BenchmarkColdCompile(b *testing.B) {
	for _, c := range []struct {
		name string
		cfg  synth.Config
	}{
		{"1k-services", synth.Config{Namespaces: 100, Services: 1000, PodsPerService: 5, TrafficTargets: 1000, HTTPRouteGroups: 50, TrafficSplits: 20}},
		{"paper-10k-services", synth.Paper},
		// Permissive mode at the same scale: every proxy reaches all 10k
		// services, and still no value may exceed the NATS limit.
		{"paper-10k-permissive", paperPermissive()},
		// With 1,000 Egress objects, each giving two identities egress.
		{"paper-10k-egress", synth.PaperEgress},
		// OSM's whole policy surface at once (surfaceObjects).
		{"paper-10k-surface", synth.PaperEgress},
		// With MeshConfig tracing on: every HTTP connection manager
		// carries the one tracing config (tracing.go).
		{"paper-10k-tracing", synth.Paper},
	} {
		b.Run(c.name, func(b *testing.B) {
			objs := synth.Generate(c.cfg)
			switch c.name {
			case "paper-10k-surface":
				objs = surfaceObjects()
			case "paper-10k-tracing":
				objs = append(objs, tracingMeshConfig(zipkinSpec))
			}
			var e *Engine
			var after runtime.MemStats
			var cpu time.Duration
			for b.Loop() {
				e = nil
				runtime.GC()
				c0 := cpuTime()
				e = newEngine()
				load(b, e, objs)
				cpu += cpuTime() - c0
				runtime.ReadMemStats(&after)
			}
			b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
			b.ReportMetric(float64(after.HeapAlloc)/(1<<20), "heap-MiB")
			b.ReportMetric(float64(len(e.Resources())), "resources")
			checkSizes(b, e)
		})
	}
}

func paperPermissive() synth.Config {
	c := synth.Paper
	c.Permissive = true
	return c
}

// cpuTime is the CPU time (user and system) the process has used; with
// the machine shared, it is steadier than wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// percentiles runs op b.N times and reports its p50 and p99.
func percentiles(b *testing.B, op func(i int)) {
	var ds []time.Duration
	i := 0
	for b.Loop() {
		start := time.Now()
		op(i)
		ds = append(ds, time.Since(start))
		i++
	}
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(ds[len(ds)*99/100].Microseconds())/1000, "p99-ms")
}

func BenchmarkIncrementalEndpoint(b *testing.B) { incrementalEndpoint(b, synth.Paper) }

// incrementalEndpoint adds an endpoint to one service of the mesh cfg at a
// time: one ClusterLoadAssignment is written, whatever else the mesh holds.
func incrementalEndpoint(b *testing.B, cfg synth.Config) {
	e, _ := loaded(b, cfg)
	incrementalEndpointOn(b, e, cfg)
}

// incrementalEndpointOn is incrementalEndpoint on e, a mesh holding cfg's
// objects and maybe more.
func incrementalEndpointOn(b *testing.B, e *Engine, cfg synth.Config) {
	percentiles(b, func(i int) {
		svc := (i * 7919) % cfg.Services
		o := cfg.Slice(svc, fmt.Sprintf("192.168.%d.%d", (i>>8)&255, i&255))
		if err := e.Apply(o.Kind, o.Namespace, o.Name, o.Msg); err != nil {
			b.Fatal(err)
		}
		if d := e.Compile(); len(d.Resources) != 1 {
			b.Fatalf("endpoint change compiled %d resources", len(d.Resources))
		}
	})
}

func BenchmarkIncrementalTrafficTarget(b *testing.B) {
	cfg := synth.Paper
	e, _ := loaded(b, cfg)
	percentiles(b, func(i int) {
		t := (i * 7919) % cfg.Services
		ns, name := cfg.SvcNamespace(t), synth.SvcName(t)
		src := (i*31 + 17) % cfg.Services
		tt := e.Model().TrafficTarget(model.NN{Namespace: ns, Name: name + "-access"})
		next := synth.TrafficTarget(ns, name+"-access", name, tt.GetRules(),
			append(slices.Clone(tt.GetSources()[:2]), synth.Subject(cfg.SvcNamespace(src), synth.SvcName(src)))...)
		if err := e.Apply(next.Kind, next.Namespace, next.Name, next.Msg); err != nil {
			b.Fatal(err)
		}
		if d := e.Compile(); len(d.Invalid) > 0 {
			b.Fatal(d.Invalid)
		}
	})
}

// BenchmarkBroadcast adds one service to a permissive mesh of 1000 services
// and 2000 proxies: what every proxy is served changes, but the compiler
// rewrites one shared name set and no group.
func BenchmarkBroadcast(b *testing.B) {
	cfg := synth.Config{Namespaces: 100, Services: 1000, PodsPerService: 2, Permissive: true}
	e, _ := loaded(b, cfg)
	added := false
	var cpu time.Duration
	for b.Loop() {
		c0 := cpuTime()
		var objs []synth.Object
		if !added {
			objs = append(objs, synth.Service("ns-000", "extra", "172.31.0.1", map[string]string{"app": "extra"}, synth.Port{Number: 8080, Name: "http", AppProtocol: "http"}))
		} else {
			objs = append(objs, synth.Object{Kind: "service", Namespace: "ns-000", Name: "extra"})
		}
		for _, o := range objs {
			if err := e.Apply(o.Kind, o.Namespace, o.Name, o.Msg); err != nil {
				b.Fatal(err)
			}
		}
		d := e.Compile()
		if len(d.Groups) != 0 || len(d.Sets) != 1 {
			b.Fatalf("broadcast changed %d groups and %d sets, want 0 and 1", len(d.Groups), len(d.Sets))
		}
		added = !added
		cpu += cpuTime() - c0
	}
	b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
	checkSizes(b, e)
}

// BenchmarkNamespaceJoin has namespace ns-000 leave the mesh and join it
// again, in turn, at 1k and 10k services: the edit the scale harness's
// "a namespace joins the mesh" measures. Only the namespace's Services and
// identities are rebuilt, so its cost grows with the namespace (100
// Services at 10k), not with the mesh.
func BenchmarkNamespaceJoin(b *testing.B) {
	for _, c := range []struct {
		name string
		cfg  synth.Config
	}{
		{"1k-services", synth.Config{Namespaces: 100, Services: 1000, PodsPerService: 5, TrafficTargets: 1000, HTTPRouteGroups: 50, TrafficSplits: 20}},
		{"paper-10k-services", synth.Paper},
	} {
		b.Run(c.name, func(b *testing.B) {
			e, _ := loaded(b, c.cfg)
			joined := synth.Namespace("ns-000")
			in := true
			var cpu time.Duration
			for b.Loop() {
				c0 := cpuTime()
				var err error
				if in {
					err = e.Apply(joined.Kind, "", joined.Name, nil)
				} else {
					err = e.Apply(joined.Kind, "", joined.Name, joined.Msg)
				}
				if err != nil {
					b.Fatal(err)
				}
				if d := e.Compile(); len(d.Resources)+len(d.Groups) == 0 {
					b.Fatal("a namespace join/leave compiled nothing")
				}
				in = !in
				cpu += cpuTime() - c0
			}
			b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
		})
	}
}
