package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// ServiceName is the gRPC service the server serves.
const ServiceName = "bookstore.Books"

// The methods of bookstore.Books.
var methods = []string{"Get", "Buy"}

// books is the handler type of bookstore.Books.
type books interface {
	reply(ctx context.Context, method string, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error)
}

// booksDesc describes bookstore.Books with StringValue messages.
func booksDesc() *grpc.ServiceDesc {
	d := &grpc.ServiceDesc{ServiceName: ServiceName, HandlerType: (*books)(nil)}
	for _, m := range methods {
		d.Methods = append(d.Methods, grpc.MethodDesc{MethodName: m,
			Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
				in := &wrapperspb.StringValue{}
				if err := dec(in); err != nil {
					return nil, err
				}
				h := func(ctx context.Context, req any) (any, error) {
					return srv.(books).reply(ctx, m, req.(*wrapperspb.StringValue))
				}
				if icpt == nil {
					return h(ctx, in)
				}
				return icpt(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/" + ServiceName + "/" + m}, h)
			}})
	}
	return d
}

// store answers with its version, the caller's SPIFFE id, its
// certificate's serial number and the call's attempt number, after
// failing the first failAttempts attempts of each call with UNAVAILABLE.
type store struct {
	version      string
	failAttempts int
}

func (s store) reply(ctx context.Context, _ string, _ *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	n := attempt(ctx)
	if n <= s.failAttempts {
		return nil, status.Errorf(codes.Unavailable, "attempt %d failed on purpose (--fail-attempts %d)", n, s.failAttempts)
	}
	return wrapperspb.String(s.version + " " + callerID(ctx) + " " + callerSerial(ctx) + " " + strconv.Itoa(n)), nil
}

// previousAttempts is the header a gRPC client's retry attempt carries:
// how many attempts of the call came before it (gRFC A6).
const previousAttempts = "grpc-previous-rpc-attempts"

// attempt is the number of this attempt of the call, from 1: one more
// than its grpc-previous-rpc-attempts, 1 without the header.
func attempt(ctx context.Context) int {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(previousAttempts); len(v) > 0 {
		if n, err := strconv.Atoi(v[0]); err == nil && n >= 0 {
			return n + 1
		}
	}
	return 1
}

// callerSerial is the serial number of the caller's certificate in hex,
// "none" without one: it shows which certificate a connection was made
// with, e.g. after a rotation.
func callerSerial(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
			return ti.State.PeerCertificates[0].SerialNumber.Text(16)
		}
	}
	return "none"
}

// callerID is the first URI SAN of the caller's certificate, "none"
// without one.
func callerID(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 && len(ti.State.PeerCertificates[0].URIs) > 0 {
			return ti.State.PeerCertificates[0].URIs[0].String()
		}
	}
	return "none"
}

func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlags("serve", `Serves bookstore.Books on --addr as an xDS-enabled gRPC server: it asks the
mesh for the listener of --addr (the bootstrap's
server_listener_resource_name_template), which sets its mTLS and its RBAC,
and serves only while it has one. Prints "serving <addr>" each time it
starts serving and "not-serving <addr> <reason>" when it stops.`, stderr)
	addr := fs.String("addr", "", "the pod's `ip:port` to listen on (required): the mesh's listener is named by it")
	version := fs.String("version", "v1", "the version this server answers with (v1, v2, ...)")
	grace := fs.Duration("shutdown-grace", 5*time.Second, "how long calls in flight may finish after SIGTERM")
	maxAge := fs.Duration("max-connection-age", 0, "close each client connection gracefully (GOAWAY) after this long, so that clients reconnect with their current certificate; 0 keeps connections")
	failAttempts := fs.Int("fail-attempts", 0, "answer UNAVAILABLE to the first `n` attempts of each call (an attempt's number comes from the grpc-previous-rpc-attempts header a retry carries), so that a call succeeds only if its client retries n times, as a mesh Retry with retryOn unavailable makes it; 0 fails none")
	if err := parse(fs, args, getenv); err != nil {
		return err
	}
	if *addr == "" {
		return errors.New("--addr is required (OSM_ADDR)")
	}
	if _, _, err := net.SplitHostPort(*addr); err != nil {
		return fmt.Errorf("--addr %q: %w", *addr, err)
	}
	if *version == "" {
		return errors.New("--version must not be empty")
	}
	if *maxAge < 0 {
		return fmt.Errorf("--max-connection-age %s (OSM_MAX_CONNECTION_AGE): must not be negative", *maxAge)
	}
	if *failAttempts < 0 {
		return fmt.Errorf("--fail-attempts %d (OSM_FAIL_ATTEMPTS): must not be negative", *failAttempts)
	}
	opts := []grpc.ServerOption{}
	if *maxAge > 0 {
		opts = append(opts, grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: *maxAge, MaxConnectionAgeGrace: *grace}))
	}
	creds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return fmt.Errorf("xds server credentials: %w", err)
	}
	srv, err := xds.NewGRPCServer(append(opts, grpc.Creds(creds), xds.ServingModeCallback(func(a net.Addr, args xds.ServingModeChangeArgs) {
		if args.Mode == connectivity.ServingModeServing {
			fmt.Fprintf(stdout, "serving %s\n", a)
		} else {
			fmt.Fprintf(stdout, "not-serving %s %v\n", a, args.Err)
		}
	}))...)
	if err != nil {
		return fmt.Errorf("xds server (is $GRPC_XDS_BOOTSTRAP set?): %w", err)
	}
	srv.RegisterService(booksDesc(), store{version: *version, failAttempts: *failAttempts})
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("--addr: %w", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(*grace):
		srv.Stop()
	}
	return nil
}
