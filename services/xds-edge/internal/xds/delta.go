package xds

import (
	"sort"
	"strconv"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/openservicemesh/osm/services/xds-edge/internal/pool"
)

var zeroTime time.Time

// deltaStream is an incremental (delta) ADS stream.
type deltaStream struct {
	st discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer
}

func (*deltaStream) delta() bool { return true }

func (w *deltaStream) recv(s *Server, c *conn) error {
	req, err := receive(w.st.Recv)
	if err != nil {
		return err
	}
	typeURL := req.GetTypeUrl()
	ctx := w.st.Context()
	c.mu.Lock()
	after := s.noteNode(ctx, c, req.GetNode())
	st := c.state(typeURL)
	if nonce := req.GetResponseNonce(); nonce != "" {
		if sent, ok := st.inflight[nonce]; ok {
			delete(st.inflight, nonce)
			if d := req.GetErrorDetail(); d != nil {
				// The client kept what it had: remember the rejected
				// versions so they are not sent again.
				for _, r := range sent.sent {
					st.nacked[r.name] = r.version
					if r.had {
						st.have[r.name] = r.prev
					} else {
						delete(st.have, r.name)
					}
				}
				msg := d.GetMessage()
				after = append(after, func() { s.recordNack(ctx, c, typeURL, sent.version, nonce, msg) })
			} else {
				c.acked[typeURL] = sent.version
				after = append(after, func() { s.recordAck(ctx, c, typeURL, sent) })
			}
		}
	}
	if !st.subscribed {
		if typeURL != secretType {
			var seen uint64
			for _, v := range req.GetInitialResourceVersions() {
				seen = max(seen, pool.GenerationOfVersion(v))
			}
			if err := s.refuseNewer(seen); err != nil {
				c.mu.Unlock()
				return err
			}
		}
		st.subscribed = true
		for n, v := range req.GetInitialResourceVersions() {
			n = s.internName(typeURL, n)
			st.have[n] = v
			st.pending[n] = struct{}{}
		}
		if len(req.GetResourceNamesSubscribe()) == 0 {
			st.wildcard, st.pendingAll = true, true
		}
	}
	var added []string
	for _, n := range req.GetResourceNamesSubscribe() {
		if n == "*" {
			st.wildcard, st.pendingAll = true, true
			continue
		}
		n = s.internName(typeURL, n)
		if _, had := st.names[n]; !had {
			added = append(added, n)
		}
		st.names[n] = struct{}{}
		st.pending[n] = struct{}{}
	}
	for _, n := range req.GetResourceNamesUnsubscribe() {
		if n == "*" {
			st.wildcard = false
			continue
		}
		delete(st.names, n)
		delete(st.have, n)
	}
	if typeURL == secretType && len(added) > 0 {
		after = append(after, func() { s.checkSecretNames(ctx, c, added) })
	}
	c.mu.Unlock()
	for _, f := range after {
		f()
	}
	return nil
}

func (w *deltaStream) flush(s *Server, c *conn) error {
	var out, removals []*discovery.DeltaDiscoveryResponse
	c.mu.Lock()
	s.mu.RLock()
	gen, _ := s.pool.Generation()
	c.generation = gen
	sysVersion := strconv.FormatUint(gen, 10)
	for _, typeURL := range pushOrder {
		st := c.types[typeURL]
		if st == nil || !st.subscribed || (!st.pendingAll && len(st.pending) == 0) {
			continue
		}
		candidates := st.pending
		if st.pendingAll {
			candidates = map[string]struct{}{}
			for _, n := range s.namesLocked(c, typeURL) {
				candidates[n] = struct{}{}
			}
			for n := range st.have {
				candidates[n] = struct{}{}
			}
			for n := range st.pending {
				candidates[n] = struct{}{}
			}
		}
		names := make([]string, 0, len(candidates))
		for n := range candidates {
			names = append(names, n)
		}
		sort.Strings(names)
		var updates []*discovery.Resource
		var removed []string
		var sent []sentName
		for _, n := range names {
			if !st.wants(n) {
				continue
			}
			r := s.lookupLocked(c, typeURL, n)
			old, had := st.have[n]
			switch {
			case r != nil:
				if (had && old == r.Version) || st.nacked[n] == r.Version {
					continue
				}
				updates = append(updates, r.Delta)
				sent = append(sent, sentName{name: n, version: r.Version, prev: old, had: had})
				st.have[n] = r.Version
			case had:
				removed = append(removed, n)
				delete(st.have, n)
			}
		}
		// Most pushes carry a name or two: reuse the small set rather
		// than allocate one per push, but let a large one go.
		if len(st.pending) <= 8 && st.pending != nil {
			clear(st.pending)
		} else {
			st.pending = map[string]struct{}{}
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
		st.commit = zeroTime
	}
	s.mu.RUnlock()
	c.mu.Unlock()
	for _, r := range append(out, removals...) {
		if err := w.st.Send(r); err != nil {
			return err
		}
		s.recordPush(r.GetTypeUrl())
	}
	return nil
}
