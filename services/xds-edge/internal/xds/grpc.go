package xds

import (
	"crypto/tls"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"
)

// readBufferSize is the per-connection read buffer; requests from proxies
// are small.
const readBufferSize = 4 << 10

// recvWindow is the fixed HTTP/2 flow-control window for what proxies send:
// requests and ACKs of a few hundred bytes. A fixed window turns off gRPC's
// bandwidth-delay estimation, which would answer nearly every ACK with a
// PING of its own: one more write and one more read per push and
// connection.
const recvWindow = 64 << 10

// GRPCConfig are the transport settings of the ADS listener.
type GRPCConfig struct {
	// TLS is the listener's mTLS configuration; it must require and verify
	// client certificates.
	TLS *tls.Config
	// KeepaliveTime is how often the server pings an idle connection, and
	// KeepaliveTimeout how long it waits for the answer.
	KeepaliveTime, KeepaliveTimeout time.Duration
	// MaxConnectionAge closes connections older than this (after
	// MaxConnectionAgeGrace), spreading proxies over new replicas.
	MaxConnectionAge, MaxConnectionAgeGrace time.Duration
	// MaxConcurrentStreams bounds streams per connection.
	MaxConcurrentStreams uint32
}

// ServerOptions are the gRPC server options for cfg: mTLS, keepalives, the
// maximum connection age, and a buffer pool that does not clear 1 MiB for
// every response over 32 KiB (see bufferPool).
func ServerOptions(cfg GRPCConfig) []grpc.ServerOption {
	opts := []grpc.ServerOption{
		grpc.Creds(credentials.NewTLS(cfg.TLS)),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time: cfg.KeepaliveTime, Timeout: cfg.KeepaliveTimeout,
			MaxConnectionAge: cfg.MaxConnectionAge, MaxConnectionAgeGrace: cfg.MaxConnectionAgeGrace,
		}),
		// Proxies may ping as often as every 10s even without a stream.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		// Most proxy connections are idle most of the time: give back the
		// write buffer between flushes and keep a small read buffer, instead
		// of 32 KiB each per connection.
		grpc.SharedWriteBuffer(true),
		grpc.ReadBufferSize(readBufferSize),
		grpc.StaticStreamWindowSize(recvWindow),
		grpc.StaticConnWindowSize(recvWindow),
		experimental.BufferPool(newBufferPool()),
	}
	if cfg.MaxConcurrentStreams > 0 {
		opts = append(opts, grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams))
	}
	return opts
}
