// Package bus is the mesh's NATS JetStream layer: connections with TLS and
// credentials, an embedded server for dev and tests, the KV buckets of the
// NATS contract, typed puts and watches of protobuf messages, key escaping,
// trace propagation in message headers and per-role permissions.
package bus

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Options say how to reach NATS.
type Options struct {
	// URL is a comma-separated list of server URLs.
	URL string
	// Name identifies the connection in server monitoring.
	Name string
	// Role sets the reply inbox prefix so it matches the role's permissions.
	Role Role
	// CredsFile is a NATS .creds file (JWT plus NKey seed).
	CredsFile string
	// User and Password authenticate with a static user.
	User, Password string
	// Token authenticates with a server token.
	Token string
	// CAFile verifies the server's certificate; CertFile and KeyFile present a
	// client certificate.
	CAFile, CertFile, KeyFile string
	// TLSServerName, when set, is the name the servers' certificates are
	// verified against instead of each URL's host (servers dialed by
	// address, or through a port-forward, whose certificates name their
	// Service).
	TLSServerName string
	// ConnectTimeout bounds the first connection; 0 means 10s.
	ConnectTimeout time.Duration
	// OnEvent, when set, is told about disconnects, reconnects and async
	// errors (the library reports through callbacks and never logs itself).
	OnEvent func(ev ConnEvent)
}

// ConnEvent is a connection state change or an asynchronous error.
type ConnEvent struct {
	// Kind is "disconnected", "reconnected", "closed" or "error".
	Kind string
	// Err is the cause, when there is one.
	Err error
}

// Validate checks that the options are complete and consistent.
func (o Options) Validate() error {
	if o.URL == "" {
		return errors.New("nats url is empty")
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return errors.New("nats client certificate and key must be given together")
	}
	if o.Role != "" && !o.Role.Valid() {
		return fmt.Errorf("unknown bus role %q", o.Role)
	}
	return o.CheckTransport()
}

// The client's pings: a connection whose server has not answered
// MaxPingsOut pings sent every PingInterval is stale and reconnects. A
// partition (a link that drops everything, with no RST or FIN to close
// the socket) is noticed only this way; nats.go's defaults (every 2
// minutes, 2 outstanding) took 4 to 6 minutes, during which an edge cut
// off from NATS stayed ready while it fell behind. StaleAfter bounds the
// time to notice.
const (
	PingInterval = 5 * time.Second
	MaxPingsOut  = 2
	StaleAfter   = (MaxPingsOut + 1) * PingInterval
)

// Conn is a NATS connection with its JetStream context.
type Conn struct {
	nc *nats.Conn
	js jetstream.JetStream

	mu      sync.Mutex
	lastErr error
	// reconnected is closed at the next reconnect (see nextReconnect).
	reconnected chan struct{}
}

// nextReconnect returns a channel closed when the connection next
// reconnects. A watch then moves to a new consumer at once: the one it
// read may have gone with the server it was on, and would be noticed only
// after two missed heartbeats.
func (c *Conn) nextReconnect() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reconnected == nil {
		c.reconnected = make(chan struct{})
	}
	return c.reconnected
}

// reconnect tells the callers of nextReconnect.
func (c *Conn) reconnect() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reconnected != nil {
		close(c.reconnected)
		c.reconnected = nil
	}
}

// Connect dials NATS. It retries the first connection until ConnectTimeout and
// reconnects forever afterwards, so a server restart is survived.
func Connect(ctx context.Context, o Options) (*Conn, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	c := &Conn{}
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.RetryOnFailedConnect(false),
		nats.PingInterval(PingInterval),
		nats.MaxPingsOutstanding(MaxPingsOut),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { c.emit(o, ConnEvent{Kind: "disconnected", Err: err}) }),
		nats.ReconnectHandler(func(*nats.Conn) {
			c.reconnect()
			c.emit(o, ConnEvent{Kind: "reconnected"})
		}),
		nats.ClosedHandler(func(*nats.Conn) { c.emit(o, ConnEvent{Kind: "closed"}) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			c.mu.Lock()
			c.lastErr = err
			c.mu.Unlock()
			c.emit(o, ConnEvent{Kind: "error", Err: err})
		}),
	}
	if o.Role != "" {
		opts = append(opts, nats.CustomInboxPrefix(o.Role.InboxPrefix()))
	}
	switch {
	case o.CredsFile != "":
		opts = append(opts, nats.UserCredentials(o.CredsFile))
	case o.User != "":
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	case o.Token != "":
		opts = append(opts, nats.Token(o.Token))
	}
	if o.CAFile != "" || o.CertFile != "" || o.TLSServerName != "" {
		tc, err := tlsConfig(o)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Secure(tc))
	}
	timeout := o.ConnectTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	deadline := time.Now().Add(timeout)
	var nc *nats.Conn
	var err error
	for {
		nc, err = nats.Connect(o.URL, opts...)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("connect to nats %s: %w", RedactURL(o.URL), err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to nats %s: %w", RedactURL(o.URL), ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream context: %w", err)
	}
	c.nc, c.js = nc, js
	return c, nil
}

func (c *Conn) emit(o Options, ev ConnEvent) {
	if o.OnEvent != nil {
		o.OnEvent(ev)
	}
}

func tlsConfig(o Options) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: o.TLSServerName}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read nats ca file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("nats ca file %s holds no PEM certificate", o.CAFile)
		}
		tc.RootCAs = pool
	}
	if o.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load nats client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// NATS returns the underlying connection.
func (c *Conn) NATS() *nats.Conn { return c.nc }

// JetStream returns the JetStream context.
func (c *Conn) JetStream() jetstream.JetStream { return c.js }

// Check is a readiness check: it fails while the connection is not up.
func (c *Conn) Check(context.Context) error {
	if s := c.nc.Status(); s != nats.CONNECTED {
		return fmt.Errorf("nats connection is %s", s)
	}
	return nil
}

// LastAsyncError returns the most recent asynchronous error the server sent,
// such as a permissions violation.
func (c *Conn) LastAsyncError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastErr
}

// explain returns a clearer error for a failed request on subject: when the
// server reported a permissions violation for that subject, that is the cause.
func (c *Conn) explain(subject string, err error) error {
	if async := c.LastAsyncError(); async != nil && errors.Is(async, nats.ErrPermissionViolation) &&
		strings.Contains(async.Error(), `"`+subject+`"`) {
		return fmt.Errorf("%w (%v)", async, err)
	}
	return err
}

// Drain stops new work, flushes what is pending and closes the connection,
// waiting at most until ctx is done.
func (c *Conn) Drain(ctx context.Context) error {
	if c.nc.IsClosed() {
		return nil
	}
	closed := make(chan struct{})
	c.nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := c.nc.Drain(); err != nil {
		c.nc.Close()
		return fmt.Errorf("drain nats: %w", err)
	}
	select {
	case <-closed:
		return nil
	case <-ctx.Done():
		c.nc.Close()
		return fmt.Errorf("drain nats: %w", ctx.Err())
	}
}

// Close closes the connection at once.
func (c *Conn) Close() { c.nc.Close() }
