package xds

import (
	"slices"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/openservicemesh/osm/services/xds-edge/internal/pool"
)

// deltaStream is an incremental (delta) ADS stream.
type deltaStream struct {
	st discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer
}

func (*deltaStream) delta() bool { return true }

func (w *deltaStream) recv(s *Server, c *conn) (bool, error) {
	ctx := w.st.Context()
	req, st, after, err := nextRequest(ctx, s, c, w.st.Recv)
	if st == nil {
		return false, err
	}
	typeURL := req.GetTypeUrl()
	if nonce := req.GetResponseNonce(); nonce != "" {
		if sent, ok := st.take(nonce); ok {
			if d := req.GetErrorDetail(); d != nil {
				s.rollback(c, st, typeURL, sent.sent)
				msg := d.GetMessage()
				after = append(after, func() { s.recordNack(ctx, c, typeURL, sent, nonce, msg) })
			} else {
				st.acked = sent.version
				after = append(after, func() { s.recordAck(ctx, c, typeURL, sent) })
			}
		}
	}
	// Only a request that subscribes or unsubscribes can make something
	// to send; an ACK or a NACK cannot.
	first := !st.subscribed
	flush := first || len(req.GetResourceNamesSubscribe())+len(req.GetResourceNamesUnsubscribe()) > 0
	if first {
		if typeURL != secretType {
			var seen pool.Gen
			for _, v := range req.GetInitialResourceVersions() {
				seen = seen.Max(pool.GenerationOfVersion(v))
			}
			if err := s.refuseNewer(seen); err != nil {
				c.mu.Unlock()
				return false, err
			}
		}
		st.subscribed = true
		if len(req.GetResourceNamesSubscribe()) == 0 {
			st.wildcard, st.pendingAll = true, true
		}
	}
	var added []string
	if flush {
		added = s.subscribe(c, st, typeURL, req, first)
	}
	if typeURL == secretType && len(added) > 0 {
		after = append(after, func() { s.checkSecretNames(ctx, c, added) })
	}
	c.mu.Unlock()
	runAll(after)
	return flush, nil
}

// subscribe applies a request's initial versions (on the type's first
// request only: first), subscriptions and unsubscriptions to st, and
// returns the names newly subscribed. It takes the server's write lock, to
// give IDs to names the pool has not seen; a request that only ACKs does
// not come here. c.mu is held.
func (s *Server) subscribe(c *conn, st *typeState, typeURL string, req *discovery.DeltaDiscoveryRequest, first bool) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pool.Collect()
	var fresh []entry
	// entryFor returns the entry of name, if the stream has one, or
	// makes one (in fresh, merged below).
	entryFor := func(name string) *entry {
		if id, ok := s.pool.ID(typeURL, name); ok {
			if i, found := st.find(id); found {
				return &st.entries[i]
			}
		}
		fresh = append(fresh, newEntry(s.pool.Acquire(typeURL, name), false, pool.RevNone))
		return &fresh[len(fresh)-1]
	}
	if len(st.entries) == 0 && len(fresh) == 0 {
		fresh = make([]entry, 0, len(req.GetInitialResourceVersions())+len(req.GetResourceNamesSubscribe()))
	}
	initial := req.GetInitialResourceVersions()
	if !first {
		initial = nil // only the first request of a type may carry them
	}
	for n, v := range initial {
		e := entryFor(n)
		e.rev = pool.RevUnknown
		if r := s.lookupLocked(c, typeURL, n); r != nil && r.Version == v {
			e.rev = r.Rev
		}
		st.notePending(e.id())
	}
	if first {
		// What the proxy rejected on an earlier stream, and the pool still
		// holds, is not sent again on this one.
		s.nacks.resources(nackKeyOf(c, typeURL), func(name, version string) {
			r := s.lookupLocked(c, typeURL, name)
			id, ok := s.pool.ID(typeURL, name)
			if r == nil || r.Version != version || !ok {
				return
			}
			if st.nacked == nil {
				st.nacked = map[pool.ID]uint32{}
			}
			st.nacked[id] = r.Rev
		})
	}
	var added []string
	for _, n := range req.GetResourceNamesSubscribe() {
		if n == "*" {
			st.wildcard, st.pendingAll = true, true
			continue
		}
		e := entryFor(n)
		if !e.subscribed() {
			*e = newEntry(e.id(), true, e.rev)
			added = append(added, n)
		}
		st.notePending(e.id())
	}
	st.merge(s.pool, fresh)
	for _, n := range req.GetResourceNamesUnsubscribe() {
		if n == "*" {
			st.wildcard = false
			continue
		}
		// The proxy forgets the name and what it held of it.
		if id, ok := s.pool.ID(typeURL, n); ok {
			if i, found := st.find(id); found {
				st.drop(s.pool, i)
			}
		}
	}
	return added
}

// rollback undoes, on a NACK, what a delta response recorded: the proxy
// keeps what it held, and the rejected revisions are remembered, by the
// stream and by the server's memo for the proxy's later streams, so that
// they are not sent again. c.mu is held.
func (s *Server) rollback(c *conn, st *typeState, typeURL string, sent []sentName) {
	if st.nacked == nil {
		st.nacked = map[pool.ID]uint32{}
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	key := nackKeyOf(c, typeURL)
	for _, r := range sent {
		st.nacked[r.id] = r.rev
		if _, name := s.pool.Key(r.id); name != "" {
			if res := s.lookupLocked(c, typeURL, name); res != nil && res.Rev == r.rev {
				s.nacks.rememberResource(key, name, res.Version)
			}
		}
		// Only if nothing was sent or removed under the name since.
		if i, found := st.find(r.id); found && st.entries[i].rev == r.rev {
			st.entries[i].rev = r.prev
			if r.prev == pool.RevNone && !st.entries[i].subscribed() {
				st.drop(s.pool, i)
			}
		}
	}
}

func (w *deltaStream) flush(s *Server, c *conn) error {
	var out, removals []*discovery.DeltaDiscoveryResponse
	c.mu.Lock()
	s.mu.RLock()
	c.generation, _ = s.pool.Generation()
	sysVersion := s.pool.AppliedVersion()
	for i, typeURL := range pushOrder {
		st := c.types[i]
		if st == nil || !st.subscribed || (!st.pendingAll && len(st.pending) == 0) {
			continue
		}
		cands := st.pending
		if st.pendingAll {
			cands = append(cands, s.viewIDsLocked(c, typeURL)...)
			for _, e := range st.entries {
				cands = append(cands, e.id())
			}
		}
		slices.Sort(cands)
		cands = slices.Compact(cands)
		var updates []*discovery.Resource
		var removed []string
		var sent []sentName
		for _, id := range cands {
			idType, name := s.pool.Key(id)
			if idType != typeURL {
				continue // a stale hint: the ID was freed and reused since
			}
			i, found := st.find(id)
			var e entry
			if found {
				e = st.entries[i]
			}
			if !st.wildcard && !e.subscribed() {
				continue
			}
			r := s.lookupLocked(c, typeURL, name)
			switch {
			case r != nil:
				if e.rev == r.Rev {
					continue
				}
				if rejected, ok := st.nacked[id]; ok {
					if rejected == r.Rev {
						continue
					}
					delete(st.nacked, id) // a newer revision exists
				}
				updates = append(updates, r.Delta)
				sent = append(sent, sentName{id: id, rev: r.Rev, prev: e.rev})
				if found {
					st.entries[i].rev = r.Rev
				} else {
					s.pool.Ref(id)
					st.insert(i, newEntry(id, false, r.Rev))
				}
			case e.rev != pool.RevNone:
				removed = append(removed, name)
				delete(st.nacked, id)
				if e.subscribed() {
					st.entries[i].rev = pool.RevNone
				} else {
					st.drop(s.pool, i)
				}
			}
		}
		// Most pushes carry a name or two: reuse the small set rather
		// than allocate one per push, but let a large one go.
		if cap(st.pending) <= 64 {
			st.pending = st.pending[:0]
		} else {
			st.pending = nil
		}
		st.pendingAll = false
		if len(updates) > 0 {
			nonce := c.remember(st, sentResponse{version: sysVersion, commit: st.commit, sent: sent})
			out = append(out, &discovery.DeltaDiscoveryResponse{SystemVersionInfo: sysVersion, Resources: updates, TypeUrl: typeURL, Nonce: nonce})
		}
		if len(removed) > 0 {
			nonce := c.remember(st, sentResponse{version: sysVersion, commit: st.commit})
			removals = append(removals, &discovery.DeltaDiscoveryResponse{SystemVersionInfo: sysVersion, RemovedResources: removed, TypeUrl: typeURL, Nonce: nonce})
		}
		st.commit = time.Time{}
	}
	s.mu.RUnlock()
	c.mu.Unlock()
	if err := sendAll(s, w.st, out); err != nil {
		return err
	}
	return sendAll(s, w.st, removals)
}
