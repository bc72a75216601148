package xds

import (
	"slices"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/openservicemesh/osm/services/xds-edge/internal/pool"
)

// sotwStream is a state-of-the-world ADS stream.
type sotwStream struct {
	st discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer
}

func (*sotwStream) delta() bool { return false }

func (w *sotwStream) recv(s *Server, c *conn) (bool, error) {
	ctx := w.st.Context()
	req, st, after, err := nextRequest(ctx, s, c, w.st.Recv)
	if st == nil {
		return false, err
	}
	typeURL := req.GetTypeUrl()
	if nonce := req.GetResponseNonce(); nonce != "" {
		sent, ok := st.take(nonce)
		switch {
		case !ok && st.isNewest(nonce):
			// The newest response, already answered: a request that
			// only changes the subscription (gRPC's way), taken below.
		case !ok:
			// A reply to an older response: stale, ignored.
			c.mu.Unlock()
			return false, nil
		case req.GetErrorDetail() != nil:
			st.nackedVersion = sent.version
			s.nacks.rememberVersion(nackKeyOf(c, typeURL), sent.version)
			msg := req.GetErrorDetail().GetMessage()
			after = append(after, func() { s.recordNack(ctx, c, typeURL, sent, nonce, msg) })
		default:
			st.acked = sent.version
			if st.nackedVersion != "" && sent.version != st.nackedVersion {
				s.nacks.forgetVersion(nackKeyOf(c, typeURL))
			}
			after = append(after, func() { s.recordAck(ctx, c, typeURL, sent) })
		}
	} else if err := s.refuseNewer(pool.GenerationOfVersion(req.GetVersionInfo())); err != nil {
		c.mu.Unlock()
		return false, err
	} else if !st.subscribed {
		// A proxy that rejected a version on an earlier stream is not
		// sent it again on this one.
		st.nackedVersion = s.nacks.version(nackKeyOf(c, typeURL))
	}
	names := req.GetResourceNames()
	wildcard := len(names) == 0 || slices.Contains(names, "*")
	// An ACK repeats the subscription: only a new or changed one is taken
	// (under the write lock, which gives IDs to new names), and only it can
	// make something to send.
	flush := req.GetResponseNonce() == "" || !st.subscribed || wildcard != st.wildcard || !s.sameSubscription(st, typeURL, names)
	if flush {
		st.force, st.dirty = true, true
		added := s.resubscribe(st, typeURL, names)
		if typeURL == secretType {
			after = append(after, func() { s.checkSecretNames(ctx, c, added) })
		}
	}
	st.subscribed, st.wildcard = true, wildcard
	c.mu.Unlock()
	runAll(after)
	return flush, nil
}

// sameSubscription reports whether names (a request's resource_names) are
// the subscription st holds. c.mu is held.
func (s *Server) sameSubscription(st *typeState, typeURL string, names []string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ids := make([]pool.ID, 0, len(names))
	for _, n := range names {
		if n == "*" {
			continue
		}
		id, ok := s.pool.ID(typeURL, n)
		if !ok {
			return false // a name the stream does not refer to
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return slices.Equal(slices.Compact(ids), st.subs)
}

// resubscribe replaces st's explicit subscription with names, and returns
// the names it adds. c.mu is held.
func (s *Server) resubscribe(st *typeState, typeURL string, names []string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pool.Collect()
	subs := make([]pool.ID, 0, len(names))
	var added []string
	for _, n := range names {
		if n == "*" {
			continue
		}
		id := s.pool.Acquire(typeURL, n)
		if _, had := slices.BinarySearch(st.subs, id); !had {
			added = append(added, n)
		}
		subs = append(subs, id)
	}
	slices.Sort(subs)
	for i, id := range subs {
		if i > 0 && subs[i-1] == id {
			s.pool.Unref(id) // named twice
		}
	}
	for _, id := range st.subs {
		s.pool.Unref(id)
	}
	st.subs = slices.Clip(slices.Compact(subs))
	return added
}

// flush sends every dirty type, in push order. In the state of the world a
// cluster or listener leaves the proxy by being left out of a CDS or LDS
// response, so a removal is made before-break: when a CDS or LDS update
// drops names and a later type (the routes and listeners that stop using
// them) is also being pushed, the proxy first gets the new set plus the
// dropped resources, then the later types, and the set without the dropped
// names last. A route is never left pointing at a cluster the proxy has
// already removed.
func (w *sotwStream) flush(s *Server, c *conn) error {
	var out, removals []*discovery.DiscoveryResponse
	c.mu.Lock()
	s.mu.RLock()
	c.generation, _ = s.pool.Generation()
	for i, typeURL := range pushOrder {
		st := c.types[i]
		if st == nil || !st.subscribed || !st.dirty {
			continue
		}
		st.dirty = false
		rs := s.viewLocked(c, typeURL, st.subscription())
		version := pool.VersionOf(rs)
		if version == st.nackedVersion || (version == st.lastVersion && !st.force) {
			st.force, st.commit = false, time.Time{}
			continue
		}
		if keepsState(typeURL) {
			if dropped := droppedFrom(st.lastSent, rs); len(dropped) > 0 && c.laterDirty(i+1) {
				union := mergeByName(rs, dropped)
				out = append(out, c.sotwResponse(st, typeURL, union, pool.VersionOf(union, "make-before-break")))
				removals = append(removals, c.sotwResponse(st, typeURL, rs, version))
				st.lastVersion, st.force, st.commit, st.lastSent = version, false, time.Time{}, rs
				continue
			}
			st.lastSent = rs
		}
		out = append(out, c.sotwResponse(st, typeURL, rs, version))
		st.lastVersion, st.force, st.commit = version, false, time.Time{}
	}
	s.mu.RUnlock()
	c.mu.Unlock()
	if err := sendAll(s, w.st, out); err != nil {
		return err
	}
	return sendAll(s, w.st, removals)
}

// sotwResponse wraps rs as a response and remembers it for its ACK. c.mu
// is held.
func (c *conn) sotwResponse(st *typeState, typeURL string, rs []*pool.Resource, version string) *discovery.DiscoveryResponse {
	anys := make([]*anypb.Any, len(rs))
	for i, r := range rs {
		anys[i] = r.Any
	}
	nonce := c.remember(st, sentResponse{version: version, commit: st.commit})
	return &discovery.DiscoveryResponse{VersionInfo: version, Resources: anys, TypeUrl: typeURL, Nonce: nonce}
}

// keepsState says whether a state-of-the-world response of typeURL
// replaces the proxy's whole set, so that leaving a name out removes it.
func keepsState(typeURL string) bool {
	return typeURL == resourcev3.ClusterType || typeURL == resourcev3.ListenerType
}

// laterDirty says whether any type from push position from on has a push
// pending. c.mu is held.
func (c *conn) laterDirty(from int) bool {
	for _, st := range c.types[from:] {
		if st != nil && st.subscribed && st.dirty {
			return true
		}
	}
	return false
}

// droppedFrom returns the resources of before whose names are not in
// after. Both are views, sorted by name (Pool.View), so one walk finds them
// without allocating unless something was dropped.
func droppedFrom(before, after []*pool.Resource) []*pool.Resource {
	var out []*pool.Resource
	j := 0
	for _, r := range before {
		for j < len(after) && after[j].Name < r.Name {
			j++
		}
		if j < len(after) && after[j].Name == r.Name {
			continue
		}
		out = append(out, r)
	}
	return out
}

// mergeByName merges two name-sorted lists without common names.
func mergeByName(a, b []*pool.Resource) []*pool.Resource {
	out := make([]*pool.Resource, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		if j == len(b) || (i < len(a) && a[i].Name < b[j].Name) {
			out = append(out, a[i])
			i++
		} else {
			out = append(out, b[j])
			j++
		}
	}
	return out
}
