package xds

import (
	"strconv"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/openservicemesh/osm/libs/identity"
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
	group    string
	isDelta  bool
	wakeCh   chan struct{}

	mu         sync.Mutex
	nodeID     string
	types      map[string]*typeState
	nonce      uint64
	acked      map[string]string
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
	names      map[string]struct{} // explicit subscriptions
	// commit is the commit time of the generation whose change is pending,
	// for the push-to-ACK latency; zero when the pending push was not caused
	// by a commit.
	commit   time.Time
	inflight map[string]sentResponse // by nonce

	// State of the world.
	dirty, force  bool
	lastVersion   string
	nackedVersion string
	// lastSent is what the last response held (CDS and LDS only), kept so
	// that a removal can be made before-break (see sotwStream.flush).
	lastSent []*pool.Resource

	// Delta.
	pendingAll bool
	pending    map[string]struct{}
	have       map[string]string // name → version the client holds
	nacked     map[string]string // name → version the client rejected
}

// sentResponse is a response waiting for its ACK or NACK.
type sentResponse struct {
	seq     uint64
	version string
	commit  time.Time
	// Delta: the versions sent, and what the client held before.
	sent []sentName
}

// sentName is one resource of a delta response: the version sent and the
// one the client held before (had false: none).
type sentName struct {
	name, version, prev string
	had                 bool
}

func newConn(streamID uint64, id identity.ID, delta bool) *conn {
	return &conn{
		streamID: streamID, id: id, group: pool.GroupID(id.Namespace, id.ServiceAccount), isDelta: delta,
		wakeCh: make(chan struct{}, 1), types: map[string]*typeState{}, acked: map[string]string{},
	}
}

// wake asks the stream's send loop to flush; it never blocks.
func (c *conn) wake() {
	select {
	case c.wakeCh <- struct{}{}:
	default:
	}
}

// state returns the type's state, creating it. c.mu is held.
func (c *conn) state(typeURL string) *typeState {
	st := c.types[typeURL]
	if st == nil {
		st = &typeState{names: map[string]struct{}{}, inflight: map[string]sentResponse{}}
		if c.isDelta {
			st.pending, st.have, st.nacked = map[string]struct{}{}, map[string]string{}, map[string]string{}
		}
		c.types[typeURL] = st
	}
	return st
}

// wants reports whether the subscription covers name.
func (st *typeState) wants(name string) bool {
	if st.wildcard {
		return true
	}
	_, ok := st.names[name]
	return ok
}

// subscription is the explicit names, or nil for a wildcard subscription.
func (st *typeState) subscription() map[string]struct{} {
	if st.wildcard {
		return nil
	}
	return st.names
}

// remember records a sent response under a new nonce. c.mu is held.
func (c *conn) remember(st *typeState, sent sentResponse) string {
	c.nonce++
	sent.seq = c.nonce
	nonce := strconv.FormatUint(c.nonce, 10)
	st.inflight[nonce] = sent
	if len(st.inflight) > maxInflight {
		for n, r := range st.inflight {
			if r.seq+maxInflight <= c.nonce {
				delete(st.inflight, n)
			}
		}
	}
	return nonce
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
func (c *conn) changed(types map[string]*pool.TypeChange, commit time.Time) {
	c.mu.Lock()
	for typeURL, tc := range types {
		st := c.types[typeURL]
		if st == nil || !st.subscribed {
			continue
		}
		st.commit = commit
		if !c.isDelta {
			st.dirty = true
			continue
		}
		for _, n := range tc.Updated {
			st.pending[n] = struct{}{}
		}
		for _, n := range tc.Removed {
			st.pending[n] = struct{}{}
		}
	}
	c.mu.Unlock()
	c.wake()
}

// secretChanged marks a secret name pending and wakes the stream.
func (c *conn) secretChanged(name string) {
	c.mu.Lock()
	st := c.types[secretType]
	if st != nil && st.subscribed {
		if c.isDelta {
			st.pending[name] = struct{}{}
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
	acked := make(map[string]string, len(c.acked))
	for k, v := range c.acked {
		acked[k] = v
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
		Time:          timestampNow(),
	}
}

func timestampNow() *timestamppb.Timestamp { return timestamppb.Now() }
