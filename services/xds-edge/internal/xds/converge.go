package xds

import (
	"cmp"
	"slices"
	"sync"
	"time"

	"github.com/openservicemesh/osm/libs/identity"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/xds-edge/internal/pool"
)

// DefaultConvergenceGenerations is how many recent generations the edge
// remembers the convergence of (Options.ConvergenceGenerations).
const DefaultConvergenceGenerations = 16

// convergence remembers, for the last few generations the edge committed,
// when the compiler and the edge committed it and when each proxy the
// commit affected ACKed or NACKed a response it caused: what osm
// convergence reports. A commit adds one record holding only the affected
// streams, so its cost grows with what the change touches; the oldest
// record goes once more than max are held, so memory stays bounded.
type convergence struct {
	mu   sync.Mutex
	max  int
	gens []*genRecord // oldest first
}

// genRecord is one generation's convergence on this edge.
type genRecord struct {
	gen              pool.Gen
	compilerCommit   time.Time
	edgeCommit       time.Time
	observedEpoch    uint64
	observedRevision uint64
	proxies          map[uint64]*proxyConv // by stream ID
}

// proxyConv is one affected stream's answer to a generation.
type proxyConv struct {
	nodeID string
	id     identity.ID
	ack    time.Time
	nack   *meshv1.Nack
}

// GenerationSummary is what the edge remembers of one generation's
// convergence, without the proxies.
type GenerationSummary struct {
	Gen pool.Gen
	// CompilerCommit is when the policy-compiler committed it (the
	// generation record's commit_time); EdgeCommit when this edge did.
	CompilerCommit, EdgeCommit time.Time
	// ObservedRevision is the mesh-observed revision of the last watcher
	// write it includes, in the watcher's epoch ObservedEpoch.
	ObservedRevision uint64
	ObservedEpoch    uint64
	// Affected, Acked and Nacked count the streams the commit changed
	// something for, those that ACKed and those that NACKed.
	Affected, Acked, Nacked int
}

// ProxyConvergence is one affected proxy's answer to a generation.
type ProxyConvergence struct {
	NodeID   string
	Identity string
	StreamID uint64
	// Ack is the time of the proxy's last ACK of a response the generation
	// (or a later one, when that one superseded it before the proxy
	// answered) caused; zero while none came.
	Ack time.Time
	// Nack is the proxy's last rejection of such a response.
	Nack *meshv1.Nack
}

// GenerationConvergence is a generation's summary and its proxies.
type GenerationConvergence struct {
	GenerationSummary
	Proxies []ProxyConvergence
}

// committed opens the record of generation ch, compiled from the
// observed view at observedRevision of watcher epoch observedEpoch,
// affecting streams.
func (v *convergence) committed(ch *pool.Change, at time.Time, observedEpoch, observedRevision uint64, affected []*conn) {
	r := &genRecord{
		gen: pool.Gen{Epoch: ch.Epoch, Number: ch.Generation}, compilerCommit: ch.CommitTime, edgeCommit: at,
		observedEpoch: observedEpoch, observedRevision: observedRevision, proxies: make(map[uint64]*proxyConv, len(affected)),
	}
	for _, c := range affected {
		r.proxies[c.streamID] = &proxyConv{nodeID: c.nodeIDValue(), id: c.id}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.gens) >= v.max {
		n := len(v.gens) - v.max + 1
		clear(v.gens[:n])
		v.gens = slices.Delete(v.gens, 0, n)
	}
	v.gens = append(v.gens, r)
}

// answered books stream's ACK (nack nil) or NACK, at, of a response
// generation gen caused. An ACK of gen also answers the older generations
// the stream has not ACKed: gen superseded them before the proxy answered.
func (v *convergence) answered(stream uint64, gen pool.Gen, at time.Time, nack *meshv1.Nack) {
	if gen == (pool.Gen{}) {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	for i := len(v.gens) - 1; i >= 0; i-- {
		r := v.gens[i]
		if gen.Less(r.gen) {
			continue
		}
		p := r.proxies[stream]
		if p == nil {
			continue
		}
		switch {
		case nack != nil && r.gen == gen:
			p.nack = nack
		case nack == nil && (r.gen == gen || p.ack.IsZero()):
			p.ack = at
		}
	}
}

func (r *genRecord) summary() GenerationSummary {
	s := GenerationSummary{Gen: r.gen, CompilerCommit: r.compilerCommit, EdgeCommit: r.edgeCommit, ObservedRevision: r.observedRevision, ObservedEpoch: r.observedEpoch, Affected: len(r.proxies)}
	for _, p := range r.proxies {
		if !p.ack.IsZero() {
			s.Acked++
		}
		if p.nack != nil {
			s.Nacked++
		}
	}
	return s
}

// Generations summarises the remembered generations, oldest first.
func (s *Server) Generations() []GenerationSummary {
	v := &s.conv
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]GenerationSummary, len(v.gens))
	for i, r := range v.gens {
		out[i] = r.summary()
	}
	return out
}

// Convergence is generation g's record with its proxies, by node ID; false
// when the edge does not remember g (never committed here, or too old).
func (s *Server) Convergence(g pool.Gen) (GenerationConvergence, bool) {
	v := &s.conv
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, r := range v.gens {
		if r.gen != g {
			continue
		}
		out := GenerationConvergence{GenerationSummary: r.summary(), Proxies: make([]ProxyConvergence, 0, len(r.proxies))}
		for id, p := range r.proxies {
			out.Proxies = append(out.Proxies, ProxyConvergence{NodeID: p.nodeID, Identity: p.id.String(), StreamID: id, Ack: p.ack, Nack: p.nack})
		}
		slices.SortFunc(out.Proxies, func(a, b ProxyConvergence) int {
			return cmp.Or(cmp.Compare(a.NodeID, b.NodeID), cmp.Compare(a.StreamID, b.StreamID))
		})
		return out, true
	}
	return GenerationConvergence{}, false
}
