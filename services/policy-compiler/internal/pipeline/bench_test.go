package pipeline

import (
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

// loadedHarness is a harness whose mesh-observed holds objs, with a
// compiler that has committed its first generation and an edge watch.
func loadedHarness(b *testing.B, objs []synth.Object) (*harness, *running) {
	b.Helper()
	h := newHarness(b)
	start := time.Now()
	h.put(objs...)
	h.sync(1, meshv1.SyncState_SYNC_STATE_SYNCED)
	b.Logf("wrote %d observed objects in %s", len(objs), time.Since(start).Round(time.Millisecond))
	start = time.Now()
	r := h.start()
	h.watchCompiled()
	deadline := time.Now().Add(5 * time.Minute)
	for r.c.Stats().Generations == 0 {
		if time.Now().After(deadline) {
			b.Fatal("no first generation")
		}
		time.Sleep(20 * time.Millisecond)
	}
	s := r.c.Stats()
	b.Logf("first generation: %d keys in %s", s.Puts, time.Since(start).Round(time.Millisecond))
	h.drainCompiled()
	return h, r
}

// untilGeneration waits for the edge to see the next generation and
// returns the keys written before it.
func (h *harness) untilGeneration(b *testing.B) []string {
	var keys []string
	timeout := time.After(30 * time.Second)
	for {
		select {
		case k := <-h.compiled:
			if k == layout.GenerationKey {
				return keys
			}
			keys = append(keys, k)
		case <-timeout:
			b.Fatalf("no generation; saw %d keys", len(keys))
		}
	}
}

func report(b *testing.B, ds []time.Duration) {
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(ds[len(ds)*99/100].Microseconds())/1000, "p99-ms")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkEndToEnd measures observed change → KV write → the edge seeing
// the generation, through an embedded NATS server, on the paper-sized mesh.
// Changes are isolated (a pause longer than the debounce precedes each), so
// p50-ms and p99-ms are the latency of one change; ns/op includes the pause.
// Every value goes through bus.Store.Put, which refuses values over the NATS
// max_payload, so a run also checks the 1 MB limit.
func BenchmarkEndToEnd(b *testing.B) {
	cfg := synth.Paper
	h, r := loadedHarness(b, synth.Generate(cfg))
	b.Run("endpoint", func(b *testing.B) {
		var ds []time.Duration
		i := 0
		for b.Loop() {
			svc := (i * 7919) % cfg.Services
			time.Sleep(DefaultDebounce + 10*time.Millisecond) // an isolated change, not a burst
			start := time.Now()
			h.put(cfg.Slice(svc, fmt.Sprintf("192.168.%d.%d", (i>>8)&255, i&255)))
			if keys := h.untilGeneration(b); len(keys) != 1 {
				b.Fatalf("endpoint change wrote %v", keys)
			}
			ds = append(ds, time.Since(start))
			i++
		}
		report(b, ds)
	})
	b.Run("traffictarget", func(b *testing.B) {
		var ds []time.Duration
		i := 0
		for b.Loop() {
			t := (i * 7919) % cfg.Services
			ns, name := cfg.SvcNamespace(t), synth.SvcName(t)
			src := (i*31 + 17) % cfg.Services
			tt := r.c.engine.Model().TrafficTarget(model.NN{Namespace: ns, Name: name + "-access"})
			next := synth.TrafficTarget(ns, name+"-access", name, tt.GetRules(),
				append(slices.Clone(tt.GetSources()[:2]), synth.Subject(cfg.SvcNamespace(src), synth.SvcName(src)))...)
			time.Sleep(DefaultDebounce + 10*time.Millisecond)
			start := time.Now()
			h.put(next)
			h.untilGeneration(b)
			ds = append(ds, time.Since(start))
			i++
		}
		report(b, ds)
	})
}

// BenchmarkBroadcast adds and removes a service in a permissive mesh of
// 1000 services and 2000 proxies, which changes what every proxy is served,
// and reports the CPU time of the whole process (compiler, embedded NATS
// server and the test's watcher and edge clients) per change. The change
// rewrites one permissive name set, not the groups: only the group of the
// identity backing the new service (its local cluster) is written.
func BenchmarkBroadcast(b *testing.B) {
	cfg := synth.Config{Namespaces: 100, Services: 1000, PodsPerService: 2, Permissive: true}
	h, _ := loadedHarness(b, synth.Generate(cfg))
	extra := synth.Service("ns-000", "extra", "172.31.0.1", map[string]string{"app": "svc-00000"}, synth.Port{Number: 8080, Name: "http", AppProtocol: "http"})
	var ds []time.Duration
	var cpu time.Duration
	added := false
	for b.Loop() {
		c0, start := cpuTime(), time.Now()
		if !added {
			h.put(extra)
		} else if err := h.observed.Delete(b.Context(), extra.Key()); err != nil {
			b.Fatal(err)
		}
		keys := h.untilGeneration(b)
		ds = append(ds, time.Since(start))
		cpu += cpuTime() - c0
		sets, groups := 0, 0
		for _, k := range keys {
			switch c, _ := layout.ParseCompiled(k); {
			case c.Set:
				sets++
			case c.Group:
				groups++
			}
		}
		if sets != 1 || groups > 1 {
			b.Fatalf("broadcast wrote %d sets and %d groups (%d keys), want 1 set and at most 1 group", sets, groups, len(keys))
		}
		added = !added
	}
	report(b, ds)
	b.ReportMetric(cpu.Seconds()/float64(len(ds)), "cpu-s/change")
}
