package xds

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/openservicemesh/osm/libs/identity"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/xds-edge/internal/pool"
)

func convConns(n int) []*conn {
	cs := make([]*conn, n)
	for i := range cs {
		cs[i] = &conn{streamID: uint64(i + 1), id: identity.New("cluster.local", "ns", fmt.Sprint("sa-", i%50)), nodeID: fmt.Sprint("node-", i)}
	}
	return cs
}

// TestConvergenceKeepsTheLastGenerations: the oldest record goes past the
// bound; an ACK of a generation answers the older ones the stream left
// unanswered, not those it answered; a NACK stays with its generation.
func TestConvergenceKeepsTheLastGenerations(t *testing.T) {
	s := &Server{}
	v := &s.conv
	v.max = 2
	cs := convConns(2)
	t0 := time.Now()
	for n := uint64(1); n <= 3; n++ {
		v.committed(&pool.Change{Generation: n, CommitTime: t0}, t0, 1, n*10, cs)
	}
	gs := s.Generations()
	if len(gs) != 2 || gs[0].Gen.Number != 2 || gs[1].Gen.Number != 3 || gs[0].ObservedRevision != 20 {
		t.Fatalf("generations %+v; want 2 and 3", gs)
	}
	v.answered(1, pool.Gen{Number: 2}, t0.Add(time.Second), nil)
	v.answered(1, pool.Gen{Number: 3}, t0.Add(2*time.Second), nil)
	v.answered(2, pool.Gen{Number: 3}, t0.Add(3*time.Second), &meshv1.Nack{ErrorMessage: "bad"})
	g2, _ := s.Convergence(pool.Gen{Number: 2})
	g3, _ := s.Convergence(pool.Gen{Number: 3})
	if got := g2.Proxies[0].Ack; !got.Equal(t0.Add(time.Second)) {
		t.Errorf("stream 1 ACK of 2: %v; want its own ACK of 2, not 3's", got)
	}
	if got := g3.Proxies[0].Ack; !got.Equal(t0.Add(2 * time.Second)) {
		t.Errorf("stream 1 ACK of 3: %v", got)
	}
	if g2.Proxies[1].Nack != nil || g3.Proxies[1].Nack == nil || !g3.Proxies[1].Ack.IsZero() || g3.Acked != 1 || g3.Nacked != 1 {
		t.Errorf("stream 2: generation 2 %+v, 3 %+v; want the NACK on 3 only", g2.Proxies[1], g3.Proxies[1])
	}
	if _, ok := s.Convergence(pool.Gen{Number: 1}); ok {
		t.Error("generation 1 is still remembered past the bound")
	}
}

// BenchmarkConvergenceMemory reports the heap a generation's record
// holds per affected proxy (b.N is ignored past the first run: the
// figure is a size, not a time).
func BenchmarkConvergenceMemory(b *testing.B) {
	const proxies, gens = 10000, DefaultConvergenceGenerations
	cs := convConns(proxies)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	v := &convergence{max: gens}
	now := time.Now()
	for n := range uint64(gens) {
		v.committed(&pool.Change{Generation: n + 1, CommitTime: now}, now, 0, 0, cs)
		for _, c := range cs {
			v.answered(c.streamID, pool.Gen{Number: n + 1}, now, nil)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(proxies*gens), "B/proxy/generation")
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/proxies, "B/proxy")
	runtime.KeepAlive(v)
}
