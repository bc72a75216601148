package xds

import (
	"cmp"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/anypb"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/xds-edge/internal/pool"
)

// ProxyState is what the edge knows of one open stream, for the debug
// API: read under the stream's lock, never from the ADS path.
type ProxyState struct {
	// NodeID is the node id of the stream's first request (the sidecar's
	// UUID for an injected pod); empty until the proxy sent one.
	NodeID string
	// Identity is the workload identity of its client certificate.
	Identity string
	// StreamID numbers the stream on this edge.
	StreamID uint64
	// Delta says the stream is incremental.
	Delta bool
	// Since is when the stream opened.
	Since time.Time
	// Types are the types the proxy subscribed to, in push order.
	Types []TypeState
	// Applied is the edge's applied generation.
	Applied pool.Gen
	// Acked is the newest generation whose configuration the proxy is
	// known to hold in full: the edge's applied generation when every
	// subscribed type has ACKed its newest response and nothing is waiting
	// to be sent (Synced); else the oldest generation named by the ACKed
	// version of a type that is not (zero for a type never ACKed).
	Acked pool.Gen
	// Synced says the proxy holds what the applied generation gives it.
	Synced bool
	// LastNack is the proxy's last NACK on this stream, or nil.
	LastNack *meshv1.Nack
}

// TypeState is a stream's state for one type.
type TypeState struct {
	TypeURL string
	// Acked is the version of the last response the proxy ACKed, Sent that
	// of the newest response sent (both empty before the first).
	Acked, Sent string
	// Synced says the newest response is ACKed and nothing is pending.
	Synced bool
}

// Proxies returns the state of every open stream, by node id, then
// stream.
func (s *Server) Proxies() []ProxyState {
	conns := s.conns(func(*conn) bool { return true })
	out := make([]ProxyState, 0, len(conns))
	for _, c := range conns {
		out = append(out, s.proxyState(c))
	}
	slices.SortFunc(out, func(a, b ProxyState) int {
		return cmp.Or(cmp.Compare(a.NodeID, b.NodeID), cmp.Compare(a.StreamID, b.StreamID))
	})
	return out
}

// proxyState reads c's state.
func (s *Server) proxyState(c *conn) ProxyState {
	c.mu.Lock()
	defer c.mu.Unlock()
	s.mu.RLock()
	applied := s.pool.Applied()
	s.mu.RUnlock()
	p := ProxyState{NodeID: c.nodeID, Identity: c.id.String(), StreamID: c.streamID, Delta: c.isDelta, Since: c.since,
		Applied: applied, LastNack: c.lastNack, Acked: applied}
	for i, st := range c.types {
		if st == nil || !st.subscribed {
			continue
		}
		t := TypeState{TypeURL: pushOrder[i], Acked: st.acked}
		if c.isDelta {
			// Every response is ACKed or NACKed on its own; a rejected
			// revision stays in nacked until a newer one is sent.
			t.Synced = len(st.inflight) == 0 && len(st.pending) == 0 && !st.pendingAll && len(st.nacked) == 0
			t.Sent = st.acked
			if n := len(st.inflight); n > 0 {
				t.Sent = st.inflight[n-1].version
			}
		} else {
			t.Sent = st.lastVersion
			t.Synced = !st.dirty && st.lastVersion != "" && st.acked == st.lastVersion
		}
		// A synced type holds what the applied generation gives it; any
		// other, at least what the generation of its ACKed version gave.
		if !t.Synced {
			p.Acked = min(p.Acked, ackedGeneration(st.acked, c.isDelta))
		}
		p.Types = append(p.Types, t)
	}
	p.Synced = p.Acked == applied && len(p.Types) > 0
	if len(p.Types) == 0 {
		p.Acked = pool.Gen{}
	}
	return p
}

// min is the older of two generations.
func min(a, b pool.Gen) pool.Gen {
	if b.Less(a) {
		return b
	}
	return a
}

// ackedGeneration is the generation a type's ACKed version names: a
// state-of-the-world version is "<generation>.<hash>"; a delta one is the
// edge's applied generation when it was sent ("<generation>").
func ackedGeneration(v string, delta bool) pool.Gen {
	if delta && v != "" {
		v += "."
	}
	return pool.GenerationOfVersion(v)
}

// ServedResource is one resource the edge serves a proxy.
type ServedResource struct {
	TypeURL, Name, Version string
	// Resource is the resource as sent, secrets included: callers that
	// show it must strip private keys (see the debug package).
	Resource *anypb.Any
}

// Served returns the resources the edge serves the proxy nodeID now, of
// the given types (nil: every type it subscribed to), in push order and by
// name: each type's view limited to its subscription. A proxy may hold
// several streams (one per type, as go-control-plane's client opens them);
// each type comes from the newest stream subscribed to it, and state is
// the newest stream's. ok is false when no stream has that node id.
func (s *Server) Served(nodeID string, typeURLs []string) (state ProxyState, out []ServedResource, ok bool) {
	var streams []*conn
	for _, x := range s.conns(func(*conn) bool { return true }) {
		if x.nodeIDValue() == nodeID {
			streams = append(streams, x)
		}
	}
	if len(streams) == 0 {
		return ProxyState{}, nil, false
	}
	slices.SortFunc(streams, func(a, b *conn) int { return cmp.Compare(b.streamID, a.streamID) })
	state = s.proxyState(streams[0])
	var done [len(pushOrderArray)]bool
	for _, c := range streams {
		out = s.served(c, typeURLs, &done, out)
	}
	slices.SortStableFunc(out, func(a, b ServedResource) int { return cmp.Compare(typeSlot(a.TypeURL), typeSlot(b.TypeURL)) })
	return state, out, true
}

// served appends c's view of each type it subscribed to that done does
// not mark yet, and marks them.
func (s *Server) served(c *conn, typeURLs []string, done *[len(pushOrderArray)]bool, out []ServedResource) []ServedResource {
	c.mu.Lock()
	defer c.mu.Unlock()
	s.mu.RLock()
	defer s.mu.RUnlock()
	for i, st := range c.types {
		if st == nil || !st.subscribed || done[i] || (typeURLs != nil && !slices.Contains(typeURLs, pushOrder[i])) {
			continue
		}
		done[i] = true
		var sub []pool.ID
		switch {
		case !c.isDelta:
			sub = st.subscription()
		case !st.wildcard:
			sub = []pool.ID{}
			for _, e := range st.entries {
				if e.subscribed() {
					sub = append(sub, e.id()) // entries are sorted by ID
				}
			}
		}
		for _, r := range s.viewLocked(c, pushOrder[i], sub) {
			out = append(out, ServedResource{TypeURL: r.TypeURL, Name: r.Name, Version: r.Version, Resource: r.Any})
		}
	}
	return out
}
