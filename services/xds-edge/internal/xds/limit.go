package xds

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// SetMaxStreams sets the most xDS streams this edge replica keeps open
// (MeshConfig spec.sidecar.maxDataPlaneConnections); 0 means no limit. A
// new stream beyond it is refused with RESOURCE_EXHAUSTED, which the proxy
// retries (through the edges' Service, possibly to another replica).
// Streams already open are never cut: lowering the limit below the count
// only refuses new ones until enough have closed.
func (s *Server) SetMaxStreams(n int) {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	s.maxStreams = max(n, 0)
}

// MaxStreams is the limit SetMaxStreams set (0: none).
func (s *Server) MaxStreams() int {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	return s.maxStreams
}

// addWithin adds c unless the edge already holds its maximum of streams,
// in which case it counts the refusal and returns its error.
func (s *Server) addWithin(ctx context.Context, c *conn) error {
	s.connsMu.Lock()
	n, limit := len(s.all), s.maxStreams
	if limit > 0 && n >= limit {
		s.connsMu.Unlock()
		s.stats.refused.Add(1)
		s.metrics.refused.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", "max_connections")))
		return status.Error(codes.ResourceExhausted, fmt.Sprintf(
			"xds-edge %s holds %d xDS streams, its limit (MeshConfig spec.sidecar.maxDataPlaneConnections %d); retry with backoff, another replica may have room",
			s.opts.EdgeID, n, limit))
	}
	s.index(c, c.groupID())
	s.all[c] = struct{}{}
	s.connsMu.Unlock()
	return nil
}
