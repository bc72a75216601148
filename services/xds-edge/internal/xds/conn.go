package xds

import (
	"cmp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/xds-edge/internal/pool"
)

// maxInflight bounds the responses a stream remembers while waiting for
// their ACK or NACK; older ones are forgotten (a late reply to one of them is
// treated as stale).
const maxInflight = 16

// conn is the state of one ADS stream.
type conn struct {
	streamID uint64
	id       identity.ID
	// group is the ID of the proxy group the stream is served from: its
	// identity's, or the identity's gRPC group once its node asks for it
	// (see flavourGroup). Read it with groupID.
	group atomic.Pointer[string]
	// indexed is the group the server's byGroup index holds the stream
	// under; guarded by the server's connsMu.
	indexed string
	isDelta bool
	// since is when the stream opened.
	since  time.Time
	wakeCh chan struct{}
	// evictCh ends the stream with its error (see evict).
	evictCh chan error

	mu         sync.Mutex
	nodeID     string
	types      [len(pushOrderArray)]*typeState // the served types, by typeSlot
	nonce      uint64
	lastNack   *meshv1.Nack
	generation uint64
	// ACK status coalescing (Options.AckStatusInterval).
	ackPublished time.Time
	ackPending   bool
	ackTimer     *time.Timer
	closed       bool
}

// typeState is a stream's state for one xDS type.
type typeState struct {
	subscribed bool
	wildcard   bool
	// commit is the commit time of the generation whose change is pending,
	// for the push-to-ACK latency; zero when the pending push was not caused
	// by a commit.
	commit time.Time
	// gen is the generation of commit, for the convergence records.
	gen      pool.Gen
	inflight []sentResponse // oldest first, at most maxInflight
	acked    string         // the version of the last response ACKed
	newest   uint64         // the nonce (sequence) of the newest response sent

	// State of the world.
	subs          []pool.ID // explicit subscriptions, sorted, each with a reference
	dirty, force  bool
	lastVersion   string
	nackedVersion string
	// lastSent is what the last response held (CDS and LDS only), kept so
	// that a removal can be made before-break (see sotwStream.flush).
	lastSent []*pool.Resource

	// Delta. entries are what the stream knows of each name it deals
	// with, by ID: 8 bytes a name (two maps of strings would take about
	// 120).
	entries    []entry
	pendingAll bool
	pending    []pool.ID          // names to look at on the next flush; may repeat
	nacked     map[pool.ID]uint32 // revision the proxy rejected, by ID (nil until a NACK)
}

// entry is what a delta stream knows of one name: whether the proxy
// subscribed to it by name, and the revision of it the proxy holds
// (pool.RevNone, pool.RevUnknown or a Resource.Rev). Each entry holds a
// reference to its ID (pool.Pool.Ref), so that the ID keeps its name.
type entry struct {
	key uint32 // ID<<1, plus 1 when subscribed by name
	rev uint32
}

func newEntry(id pool.ID, subscribed bool, rev uint32) entry {
	e := entry{key: uint32(id) << 1, rev: rev}
	if subscribed {
		e.key |= 1
	}
	return e
}

func (e entry) id() pool.ID      { return pool.ID(e.key >> 1) }
func (e entry) subscribed() bool { return e.key&1 == 1 }

// maxPending bounds the IDs a delta stream notes between two flushes (a
// stream stuck behind a slow proxy sees commit after commit); past it the
// next flush looks at everything the stream may hold or want instead.
const maxPending = 4096

// notePending notes IDs to look at on the next flush.
func (st *typeState) notePending(ids ...pool.ID) {
	if st.pendingAll {
		return
	}
	if len(st.pending)+len(ids) > maxPending {
		st.pendingAll, st.pending = true, st.pending[:0]
		return
	}
	st.pending = append(st.pending, ids...)
}

// find returns the position of id's entry, or where it would go.
func (st *typeState) find(id pool.ID) (int, bool) {
	return slices.BinarySearchFunc(st.entries, id, func(e entry, id pool.ID) int { return cmp.Compare(e.id(), id) })
}

// insert puts e at position i (from find).
func (st *typeState) insert(i int, e entry) { st.entries = slices.Insert(st.entries, i, e) }

// merge adds entries for IDs that have none (each with one reference the
// caller took), in one pass: a subscription to a thousand names inserts
// them at once. An ID given twice (a name both in a reconnecting proxy's
// initial versions and in its subscription, or subscribed to twice) keeps
// one entry, subscribed if either was, holding the revision either held,
// and drops the other reference.
func (st *typeState) merge(p *pool.Pool, fresh []entry) {
	if len(fresh) == 0 {
		return
	}
	slices.SortFunc(fresh, func(a, b entry) int { return cmp.Compare(a.key, b.key) })
	out := make([]entry, 0, len(st.entries)+len(fresh))
	i := 0
	for j, e := range fresh {
		if j > 0 && fresh[j-1].id() == e.id() {
			last := &out[len(out)-1]
			last.key |= e.key & 1
			if last.rev == pool.RevNone {
				last.rev = e.rev
			}
			p.Unref(e.id())
			continue
		}
		for i < len(st.entries) && st.entries[i].id() < e.id() {
			out = append(out, st.entries[i])
			i++
		}
		out = append(out, e)
	}
	st.entries = append(out, st.entries[i:]...)
}

// drop removes the entry at i and its reference.
func (st *typeState) drop(p *pool.Pool, i int) {
	p.Unref(st.entries[i].id())
	st.entries = slices.Delete(st.entries, i, i+1)
}

// release drops every entry's reference; the stream is closing. The
// caller holds the server's lock (a read lock will do).
func (c *conn) release(p *pool.Pool) {
	for _, st := range c.types {
		if st == nil {
			continue
		}
		for _, e := range st.entries {
			p.Unref(e.id())
		}
		for _, id := range st.subs {
			p.Unref(id)
		}
		st.entries, st.subs = nil, nil
	}
}

// sentResponse is a response waiting for its ACK or NACK.
type sentResponse struct {
	seq     uint64
	version string
	commit  time.Time
	gen     pool.Gen // the generation of commit; zero with it
	// Delta: the versions sent, and what the client held before.
	sent []sentName
}

// sentName is one resource of a delta response: the revision sent and the
// one the client held before.
type sentName struct {
	id        pool.ID
	rev, prev uint32
}

func newConn(streamID uint64, id identity.ID, delta bool) *conn {
	c := &conn{
		streamID: streamID, id: id, isDelta: delta, since: time.Now(),
		wakeCh: make(chan struct{}, 1), evictCh: make(chan error, 1),
	}
	g := pool.GroupID(id.Namespace, id.ServiceAccount)
	c.group.Store(&g)
	return c
}

// groupID is the ID of the group the stream is served from.
func (c *conn) groupID() string { return *c.group.Load() }

// GRPCGroupID is the pool's ID of the gRPC-flavour group of an identity,
// the group the compiler writes under layout.GRPCGroupKey.
func GRPCGroupID(namespace, serviceAccount string) string {
	return pool.GroupID(namespace, serviceAccount+"@"+layout.ProxylessGRPC)
}

// flavourGroup is the group a stream whose first node is n is served from
// instead of its identity's, or "": the identity's gRPC group when the
// node's metadata has layout.NodeMetadataProxyless set to
// layout.ProxylessGRPC. Only before the stream has subscribed to anything
// (the node comes with the first request). c.mu is held.
func (c *conn) flavourGroup(n *corev3.Node) string {
	if n.GetMetadata().GetFields()[layout.NodeMetadataProxyless].GetStringValue() != layout.ProxylessGRPC {
		return ""
	}
	for _, st := range c.types {
		if st != nil {
			return ""
		}
	}
	return GRPCGroupID(c.id.Namespace, c.id.ServiceAccount)
}

// evict ends the stream with err (the first call wins); it never blocks.
func (c *conn) evict(err error) {
	select {
	case c.evictCh <- err:
	default:
	}
}

// wake asks the stream's send loop to flush; it never blocks.
func (c *conn) wake() {
	select {
	case c.wakeCh <- struct{}{}:
	default:
	}
}

// lookup returns the type's state, or nil. c.mu is held.
func (c *conn) lookup(typeURL string) *typeState {
	if i := typeSlot(typeURL); i >= 0 {
		return c.types[i]
	}
	return nil
}

// state returns the type's state, creating it, or nil for a type the edge
// does not serve: a request for one is never answered, so nothing is kept
// for it. c.mu is held.
func (c *conn) state(typeURL string) *typeState {
	i := typeSlot(typeURL)
	if i < 0 {
		return nil
	}
	if c.types[i] == nil {
		c.types[i] = &typeState{}
	}
	return c.types[i]
}

// subscription is the explicit subscription (never nil), or nil for a
// wildcard one.
func (st *typeState) subscription() []pool.ID {
	if st.wildcard {
		return nil
	}
	if st.subs == nil {
		return []pool.ID{}
	}
	return st.subs
}

// remember records a sent response under a new nonce (the decimal
// sequence number), forgetting the oldest beyond maxInflight. c.mu is held.
func (c *conn) remember(st *typeState, sent sentResponse) string {
	c.nonce++
	sent.seq = c.nonce
	if !sent.commit.IsZero() {
		sent.gen = st.gen
	}
	if len(st.inflight) == maxInflight {
		st.inflight = slices.Delete(st.inflight, 0, 1)
	}
	st.inflight = append(st.inflight, sent)
	st.newest = c.nonce
	return strconv.FormatUint(c.nonce, 10)
}

// isNewest reports whether nonce is that of the newest response of st's
// type: a request carrying it after its ACK is current, not stale (gRPC
// changes a subscription that way). c.mu is held.
func (st *typeState) isNewest(nonce string) bool {
	seq, err := strconv.ParseUint(nonce, 10, 64)
	return err == nil && seq != 0 && seq == st.newest
}

// take returns and forgets the response sent under nonce; false for a
// nonce this stream did not make or no longer tracks. c.mu is held.
func (st *typeState) take(nonce string) (sentResponse, bool) {
	seq, err := strconv.ParseUint(nonce, 10, 64)
	if err != nil {
		return sentResponse{}, false
	}
	for i, r := range st.inflight {
		if r.seq == seq {
			st.inflight = slices.Delete(st.inflight, i, i+1)
			return r, true
		}
	}
	return sentResponse{}, false
}

// setNode records the node id of the first request; it reports whether it
// was the first. The node id is bookkeeping only. c.mu is held.
func (c *conn) setNode(n *corev3.Node) bool {
	if c.nodeID != "" || n.GetId() == "" {
		return false
	}
	c.nodeID = n.GetId()
	return true
}

func (c *conn) nodeIDValue() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodeID
}

// changed marks what a commit changed for this stream and wakes it.
func (c *conn) changed(types map[string]*pool.TypeChange, commit time.Time, gen pool.Gen) {
	c.mu.Lock()
	for typeURL, tc := range types {
		st := c.lookup(typeURL)
		if st == nil || !st.subscribed {
			continue
		}
		st.commit, st.gen = commit, gen
		if !c.isDelta {
			st.dirty = true
			continue
		}
		st.notePending(tc.IDs...)
	}
	c.mu.Unlock()
	c.wake()
}

// affectedBy says whether the stream subscribes to one of types.
func (c *conn) affectedBy(types map[string]*pool.TypeChange) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for typeURL := range types {
		if st := c.lookup(typeURL); st != nil && st.subscribed {
			return true
		}
	}
	return false
}

// secretChanged marks a secret pending and wakes the stream.
func (c *conn) secretChanged(id pool.ID) {
	c.mu.Lock()
	st := c.types[typeSlot(secretType)]
	if st != nil && st.subscribed {
		if c.isDelta {
			st.notePending(id)
		} else {
			st.dirty = true
		}
	}
	c.mu.Unlock()
	c.wake()
}

// status is the stream's proxy status report.
func (c *conn) status(edgeID string, ev meshv1.ProxyEvent, nack *meshv1.Nack) *meshv1.ProxyStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	acked := map[string]string{}
	for i, st := range c.types {
		if st != nil && st.acked != "" {
			acked[pushOrder[i]] = st.acked
		}
	}
	if nack != nil {
		c.lastNack = nack
	}
	return &meshv1.ProxyStatus{
		ProxyId:       c.nodeID,
		NodeId:        c.nodeID,
		Identity:      &meshv1.Identity{Namespace: c.id.Namespace, ServiceAccount: c.id.ServiceAccount},
		EdgeId:        edgeID,
		Event:         ev,
		Connected:     ev != meshv1.ProxyEvent_PROXY_EVENT_DISCONNECTED,
		AckedVersions: acked,
		LastNack:      c.lastNack,
		Generation:    c.generation,
		Time:          timestamppb.Now(),
	}
}
