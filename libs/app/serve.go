package app

import (
	"context"
	"fmt"
	"net"
	"time"
)

// GRPCServer is the part of *grpc.Server that ServeGRPC drives.
type GRPCServer interface {
	Serve(lis net.Listener) error
	GracefulStop()
	Stop()
}

// MaxConnectionAgeHelp explains --max-connection-age, which every gRPC
// server of the mesh (the xds-edge, the cert-authority) takes, in the same
// words.
const MaxConnectionAgeHelp = "longest a client connection lives before the server asks the client to reconnect (GOAWAY, then a grace period): clients rebalance over replicas, and a renewed client certificate takes effect"

// ServeGRPC serves s on lis until ctx ends, then stops it: beforeStop (when
// not nil) runs first, for example to end long-lived streams that would
// hold GracefulStop; GracefulStop then lets in-flight calls finish, and Stop
// closes what is still open after grace. It returns once the server has
// stopped; an error means Serve failed before ctx ended. Run it as one of
// the parts under the service's errgroup.
func ServeGRPC(ctx context.Context, s GRPCServer, lis net.Listener, grace time.Duration, beforeStop func()) error {
	served := make(chan error, 1)
	go func() { served <- s.Serve(lis) }()
	select {
	case err := <-served:
		if ctx.Err() == nil {
			return fmt.Errorf("serve grpc on %s: %w", lis.Addr(), err)
		}
	case <-ctx.Done():
	}
	if beforeStop != nil {
		beforeStop()
	}
	StopGRPC(s, grace)
	return nil
}

// StopGRPC calls s.GracefulStop and, when that has not returned within
// grace, s.Stop. It returns after the server has stopped and reports
// whether the stop was forced.
func StopGRPC(s interface {
	GracefulStop()
	Stop()
}, grace time.Duration) (forced bool) {
	done := make(chan struct{})
	go func() { s.GracefulStop(); close(done) }()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
		return false
	case <-t.C:
		s.Stop()
		<-done
		return true
	}
}
