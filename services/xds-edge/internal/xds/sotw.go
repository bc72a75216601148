package xds

import (
	"errors"
	"io"
	"maps"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/xds-edge/internal/pool"
)

// sotwStream is a state-of-the-world ADS stream.
type sotwStream struct {
	st discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer
}

func (*sotwStream) delta() bool { return false }

func (w *sotwStream) recv(s *Server, c *conn) error {
	req, err := w.st.Recv()
	if errors.Is(err, io.EOF) {
		return errClientDone
	}
	if err != nil {
		return err
	}
	typeURL := req.GetTypeUrl()
	if typeURL == "" {
		return status.Error(codes.InvalidArgument, "discovery request without type_url")
	}
	ctx := w.st.Context()
	var after []func()
	c.mu.Lock()
	if c.setNode(req.GetNode()) {
		after = append(after, func() { s.publish(ctx, c, meshv1.ProxyEvent_PROXY_EVENT_CONNECTED, nil) })
	}
	st := c.state(typeURL)
	if nonce := req.GetResponseNonce(); nonce != "" {
		sent, ok := st.inflight[nonce]
		if !ok {
			// A reply to a response we no longer track: stale, ignored.
			c.mu.Unlock()
			return nil
		}
		delete(st.inflight, nonce)
		if d := req.GetErrorDetail(); d != nil {
			st.nackedVersion = sent.version
			msg := d.GetMessage()
			after = append(after, func() { s.recordNack(ctx, c, typeURL, sent.version, nonce, msg) })
		} else {
			c.acked[typeURL] = sent.version
			after = append(after, func() { s.recordAck(ctx, c, typeURL, sent) })
		}
	} else if g := pool.GenerationOfVersion(req.GetVersionInfo()); g > 0 {
		// A proxy reconnecting with state newer than ours must not be
		// rolled back: send it to another replica.
		if have := s.Generation(); g > have {
			c.mu.Unlock()
			return status.Errorf(codes.Unavailable, "xds-edge %s holds generation %d, older than the %d this proxy has seen", s.opts.EdgeID, have, g)
		}
	}
	names := req.GetResourceNames()
	wildcard := len(names) == 0
	sub := make(map[string]struct{}, len(names))
	for _, n := range names {
		if n == "*" {
			wildcard = true
			continue
		}
		sub[n] = struct{}{}
	}
	if req.GetResponseNonce() == "" || !st.subscribed || wildcard != st.wildcard || !maps.Equal(sub, st.names) {
		st.force, st.dirty = true, true
		if typeURL == secretType {
			var added []string
			for n := range sub {
				if _, had := st.names[n]; !had {
					added = append(added, n)
				}
			}
			after = append(after, func() { s.checkSecretNames(ctx, c, added) })
		}
	}
	st.subscribed, st.wildcard, st.names = true, wildcard, sub
	c.mu.Unlock()
	for _, f := range after {
		f()
	}
	return nil
}

func (w *sotwStream) flush(s *Server, c *conn) error {
	var out []*discovery.DiscoveryResponse
	c.mu.Lock()
	s.mu.RLock()
	c.generation, _ = s.pool.Generation()
	for _, typeURL := range pushOrder {
		st := c.types[typeURL]
		if st == nil || !st.subscribed || !st.dirty {
			continue
		}
		st.dirty = false
		rs := s.viewLocked(c, typeURL, st.subscription())
		version := pool.VersionOf(rs)
		if version == st.nackedVersion || (version == st.lastVersion && !st.force) {
			st.force, st.commit = false, zeroTime
			continue
		}
		anys := make([]*anypb.Any, len(rs))
		for i, r := range rs {
			anys[i] = r.Any
		}
		nonce := c.remember(st, sentResponse{version: version, commit: st.commit})
		st.lastVersion, st.force, st.commit = version, false, zeroTime
		out = append(out, &discovery.DiscoveryResponse{VersionInfo: version, Resources: anys, TypeUrl: typeURL, Nonce: nonce})
	}
	s.mu.RUnlock()
	c.mu.Unlock()
	for _, r := range out {
		if err := w.st.Send(r); err != nil {
			return err
		}
		s.recordPush(w.st.Context(), r.GetTypeUrl())
	}
	return nil
}
