package app

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// healthServer serves the gRPC health service on loopback.
func healthServer(t *testing.T) (*grpc.Server, net.Listener) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, health.NewServer())
	return s, lis
}

func TestServeGRPCStopsGracefullyWhenTheContextEnds(t *testing.T) {
	s, lis := healthServer(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	before := make(chan struct{})
	go func() { done <- ServeGRPC(ctx, s, lis, 5*time.Second, func() { close(before) }) }()

	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := healthpb.NewHealthClient(cc).Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("not serving: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ServeGRPC: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeGRPC did not return after the context ended")
	}
	select {
	case <-before:
	default:
		t.Error("beforeStop was not called")
	}
}

func TestStopGRPCForcesAStreamThatDoesNotEnd(t *testing.T) {
	s, lis := healthServer(t)
	go func() { _ = s.Serve(lis) }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	// A Watch stream stays open until the client or the server ends it, so
	// GracefulStop alone would wait for it forever.
	w, err := healthpb.NewHealthClient(cc).Watch(t.Context(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if forced := StopGRPC(s, 200*time.Millisecond); !forced {
		t.Error("a stop with an open stream was not forced")
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 5*time.Second {
		t.Errorf("stop took %s, want about the 200ms grace", d)
	}
	if _, err := w.Recv(); err == nil {
		t.Error("the stream survived the stop")
	}
}

func TestServeGRPCReportsAFailedServe(t *testing.T) {
	s, lis := healthServer(t)
	lis.Close()
	if err := ServeGRPC(t.Context(), s, lis, time.Second, nil); err == nil {
		t.Error("serving on a closed listener reported no error")
	}
}
