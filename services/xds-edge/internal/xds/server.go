// Package xds is the xds-edge's Aggregated Discovery Service: state-of-the-
// world and delta ADS, with SDS carried over the same streams, served from
// the shared resource pool.
//
// # Why not go-control-plane's server and a Cache
//
// The message types, type URLs and wire protocol are go-control-plane's; the
// stream handlers are our own. go-control-plane's server asks its Cache for
// one watch per stream and type, gives the cache the client's request only
// (so the authenticated peer identity would have to be smuggled through the
// node, which the client controls), and builds a response by marshalling
// each resource per watch. Here a stream's group comes from the URI SAN of
// its client certificate, each resource is wrapped once in the pool and the
// same Any is sent to every stream, and a commit touches only the streams
// whose group references a changed name, doing work proportional to the
// names that changed for that stream (delta) or to the stream's own view of
// the changed type (state of the world).
//
// # Per-stream state
//
// A stream keeps, per type, what it must to answer the next change, in a
// few bytes per name: names are pool IDs (pool.ID), reference-counted so
// that an ID keeps its name while a stream refers to it, and contents are
// revisions (Resource.Rev). A delta stream keeps one sorted list of (ID,
// subscribed, revision held); a state-of-the-world stream its explicit
// subscription as sorted IDs. go-control-plane's stream state keeps a map
// of names and a map of name to version per stream and type instead, about
// 120 KB per proxy at a thousand names, twice the edge's whole budget per
// proxy.
//
// # Ordering
//
// A stream sends pending types in the order CDS, EDS, LDS, RDS, SDS. Delta
// streams send every update first and the removals after them, so that a
// listener never points at a cluster that was already removed.
// State-of-the-world removals are implicit in the next full CDS or LDS set,
// sent in the same order.
package xds

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/sirupsen/logrus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/xds-edge/internal/pool"
)

// pushOrderArray is the order in which a stream sends pending types: the
// types the edge serves.
var pushOrderArray = [...]string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType, resourcev3.SecretType}

// pushOrder is pushOrderArray as a slice.
var pushOrder = pushOrderArray[:]

// typeSlot is typeURL's position in pushOrder, or -1 for a type the edge
// does not serve. A switch, not a map: type URLs are long, and their
// lengths differ, so this is one length test and one comparison where a
// map would hash the whole string, several times per push and per ACK.
func typeSlot(typeURL string) int {
	switch typeURL {
	case resourcev3.ClusterType:
		return 0
	case resourcev3.EndpointType:
		return 1
	case resourcev3.ListenerType:
		return 2
	case resourcev3.RouteType:
		return 3
	case resourcev3.SecretType:
		return 4
	}
	return -1
}

// StatusPublisher publishes proxy status reports (to mesh.status.proxy.>).
type StatusPublisher interface {
	PublishStatus(ctx context.Context, s *meshv1.ProxyStatus)
}

// Options configure a Server.
type Options struct {
	// Log receives the server's logs.
	Log *logrus.Entry
	// EdgeID names this replica in proxy status reports.
	EdgeID string
	// TrustDomain, when set, is the only trust domain whose proxies are served.
	TrustDomain string
	// Status publishes proxy status; nil publishes nothing.
	Status StatusPublisher
	// Secrets issues service certificates; nil serves no service-cert.
	Secrets SecretSource
	// Meter makes the server's metrics; nil records none.
	Meter metric.Meter
	// Admission limits the rate of new streams; nil admits every stream.
	Admission *rate.Limiter
	// AckStatusInterval coalesces ACK status reports: a proxy's ACKs are
	// published at most once per interval, the last one always (after the
	// interval). CONNECTED, NACK and DISCONNECTED are published at once.
	// Zero publishes every ACK.
	AckStatusInterval time.Duration
	// ConvergenceGenerations is how many recent generations the debug
	// API reports the convergence of (zero: DefaultConvergenceGenerations).
	// Each holds an entry per proxy its commit affected.
	ConvergenceGenerations int
}

// Stats are counters kept alongside the metrics, for tests and debugging.
type Stats struct {
	Connected      int64
	Pushes         int64
	Acks           int64
	Nacks          int64
	SecretRefusals int64
	Refused        int64
	// Evicted counts streams closed because their identity left the mesh.
	Evicted int64
}

// Server serves ADS from a pool. Feed it with Stage and Commit; streams are
// refused with UNAVAILABLE until SetServing(true).
type Server struct {
	log     *logrus.Entry
	opts    Options
	serving atomic.Bool

	mu   sync.RWMutex // guards pool, bundle and certs
	pool *pool.Pool
	sec  secretState

	connsMu sync.Mutex
	byGroup map[string]map[*conn]struct{}
	all     map[*conn]struct{}
	nextID  atomic.Uint64
	// maxStreams is the most streams kept open (0: no limit); connsMu.
	maxStreams int

	stats   stats
	metrics instruments
	// nacks remembers what proxies rejected across their streams.
	nacks nackMemo
	// conv remembers the last generations' convergence (osm convergence).
	conv convergence
}

type stats struct {
	connected, pushes, acks, nacks, secretRefusals, refused, evicted atomic.Int64
}

type instruments struct {
	connected      metric.Int64UpDownCounter
	pushes         metric.Int64Counter
	latency        metric.Float64Histogram
	nacks          metric.Int64Counter
	secretRefusals metric.Int64Counter
	refused        metric.Int64Counter
}

// New returns a server with an empty pool, not serving.
func New(o Options) (*Server, error) {
	if o.Log == nil {
		return nil, errors.New("xds: Options.Log is required")
	}
	m := o.Meter
	if m == nil {
		m = noop.NewMeterProvider().Meter("xds")
	}
	s := &Server{
		log: o.Log.WithField("component", "xds"), opts: o, pool: pool.New(),
		byGroup: map[string]map[*conn]struct{}{}, all: map[*conn]struct{}{},
	}
	s.conv.max = o.ConvergenceGenerations
	if s.conv.max <= 0 {
		s.conv.max = DefaultConvergenceGenerations
	}
	// The secrets' names keep their IDs for good: streams look them up
	// under a read lock, which cannot make IDs.
	s.sec.certID = s.pool.Acquire(secretType, layout.SecretServiceCert)
	s.sec.rootID = s.pool.Acquire(secretType, layout.SecretRootCert)
	var err error
	in := &s.metrics
	in.connected, err = m.Int64UpDownCounter("osm_xds_connected_proxies", metric.WithDescription("xDS streams open on this edge"))
	if err == nil {
		in.pushes, err = m.Int64Counter("osm_xds_pushes", metric.WithDescription("xDS responses sent, by type"))
	}
	if err == nil {
		in.latency, err = m.Float64Histogram("osm_xds_push_ack_latency_seconds",
			metric.WithDescription("time from a generation's commit by the compiler to the proxy's ACK of the push it caused"),
			metric.WithUnit("s"),
			metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10))
	}
	if err == nil {
		in.nacks, err = m.Int64Counter("osm_xds_nacks", metric.WithDescription("xDS responses rejected by proxies, by type"))
	}
	if err == nil {
		in.secretRefusals, err = m.Int64Counter("osm_xds_secret_refusals", metric.WithDescription("requests for a secret the proxy's identity may not have"))
	}
	if err == nil {
		in.refused, err = m.Int64Counter("osm_xds_streams_refused", metric.WithDescription("new xDS streams refused, by reason"))
	}
	if err != nil {
		return nil, fmt.Errorf("xds metrics: %w", err)
	}
	return s, nil
}

// SetSecretSource sets the source of service certificates; call it before
// the server takes streams.
func (s *Server) SetSecretSource(src SecretSource) { s.opts.Secrets = src }

// Register adds the ADS service to g.
func (s *Server) Register(g *grpc.Server) {
	discovery.RegisterAggregatedDiscoveryServiceServer(g, (*adsService)(s))
}

// SetServing opens (true) or closes (false) the server to new streams.
// Streams already open keep being served either way.
func (s *Server) SetServing(ok bool) { s.serving.Store(ok) }

// Serving reports whether new streams are admitted.
func (s *Server) Serving() bool { return s.serving.Load() }

// Dangling is the number of names the applied groups refer to whose
// resource the pool lacks (pool.DanglingNames): zero when the applied state
// is a whole generation.
func (s *Server) Dangling() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.pool.DanglingNames()
}

// Stats returns a copy of the counters.
func (s *Server) Stats() Stats {
	return Stats{
		Connected: s.stats.connected.Load(), Pushes: s.stats.pushes.Load(), Acks: s.stats.acks.Load(),
		Nacks: s.stats.nacks.Load(), SecretRefusals: s.stats.secretRefusals.Load(), Refused: s.stats.refused.Load(), Evicted: s.stats.evicted.Load(),
	}
}

// Generation is the applied generation number.
func (s *Server) Generation() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	g, _ := s.pool.Generation()
	return g
}

// Applied is the applied generation's epoch and number.
func (s *Server) Applied() pool.Gen {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.pool.Applied()
}

// DropStaged forgets the mesh-compiled writes staged for the next
// generation (see pool.Pool.DropStaged).
func (s *Server) DropStaged() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pool.DropStaged()
}

// Staged is the number of mesh-compiled keys waiting for the next generation.
func (s *Server) Staged() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.pool.Staged()
}

// Stage records a mesh-compiled write (value nil: a delete) for the next
// generation.
func (s *Server) Stage(key string, value []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pool.Stage(key, value)
}

// Commit applies the staged writes when g is newer than the applied
// generation, and wakes the streams whose group sees a change. It returns
// the change (nil when g was not newer).
func (s *Server) Commit(g *meshv1.Generation) (*pool.Change, error) {
	s.mu.Lock()
	ch, err := s.pool.Commit(g)
	s.mu.Unlock()
	if ch == nil {
		return nil, err
	}
	s.mu.RLock()
	var gone []string
	for gid := range ch.Groups {
		if !s.pool.HasGroup(gid) {
			gone = append(gone, gid)
		}
	}
	s.mu.RUnlock()
	s.connsMu.Lock()
	var targets []*conn
	for gid := range ch.Groups {
		for c := range s.byGroup[gid] {
			targets = append(targets, c)
		}
	}
	s.connsMu.Unlock()
	// The record opens before the streams wake, so that no ACK comes first.
	affected := make([]*conn, 0, len(targets))
	for _, c := range targets {
		if c.affectedBy(ch.Groups[c.groupID()]) {
			affected = append(affected, c)
		}
	}
	gen := pool.Gen{Epoch: ch.Epoch, Number: ch.Generation}
	s.conv.committed(ch, time.Now(), g.GetObservedEpoch(), g.GetObservedRevision(), affected)
	for _, c := range targets {
		c.changed(ch.Groups[c.groupID()], ch.CommitTime, gen)
	}
	for _, gid := range gone {
		s.evictGroup(gid, ch.Generation)
	}
	return ch, err
}

// evictGroup ends the streams of a group the compiled mesh no longer holds
// (its ServiceAccount was deleted, or its last pod or its namespace left
// the mesh): the edge keeps no stream, and renews no certificate, for an
// identity outside the mesh. The proxy's reconnection is refused until the
// identity returns (see admit).
func (s *Server) evictGroup(gid string, gen uint64) {
	for _, c := range s.groupConns(gid, func(*conn) bool { return true }) {
		s.stats.evicted.Add(1)
		s.metrics.refused.Add(context.Background(), 1, metric.WithAttributes(attribute.String("reason", "left_mesh")))
		s.log.WithFields(logrus.Fields{"identity": c.id.String(), "stream_id": c.streamID, "generation": gen}).Info("closed the stream of an identity that left the mesh")
		c.evict(status.Errorf(codes.PermissionDenied, "identity %s left the mesh at generation %d (its ServiceAccount, pods or namespace are gone)", c.id, gen))
	}
}

// conns returns the streams matching keep.
func (s *Server) conns(keep func(*conn) bool) []*conn {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	var out []*conn
	for c := range s.all {
		if keep(c) {
			out = append(out, c)
		}
	}
	return out
}

// groupConns returns the streams of one group matching keep.
func (s *Server) groupConns(group string, keep func(*conn) bool) []*conn {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	var out []*conn
	for c := range s.byGroup[group] {
		if keep(c) {
			out = append(out, c)
		}
	}
	return out
}

// index puts c in the byGroup index under group. s.connsMu is held.
func (s *Server) index(c *conn, group string) {
	m := s.byGroup[group]
	if m == nil {
		m = map[*conn]struct{}{}
		s.byGroup[group] = m
	}
	m[c] = struct{}{}
	c.indexed = group
}

// unindex takes c out of the byGroup index. s.connsMu is held.
func (s *Server) unindex(c *conn) {
	delete(s.byGroup[c.indexed], c)
	if len(s.byGroup[c.indexed]) == 0 {
		delete(s.byGroup, c.indexed)
	}
}

// reindex moves c in the byGroup index to the group it is now served
// from, unless it is gone, and evicts it, retryably, when that group does
// not exist (the identity has no gRPC group: a compiler without
// --proxyless-grpc).
func (s *Server) reindex(c *conn) {
	group := c.groupID()
	s.connsMu.Lock()
	if _, ok := s.all[c]; ok && c.indexed != group {
		s.unindex(c)
		s.index(c, group)
	}
	s.connsMu.Unlock()
	s.mu.RLock()
	has := s.pool.HasGroup(group)
	gen, _ := s.pool.Generation()
	s.mu.RUnlock()
	if !has {
		c.evict(status.Errorf(codes.Unavailable, "identity %s has no group %s at generation %d: the policy-compiler compiles the gRPC flavour with --proxyless-grpc", c.id, group, gen))
	}
}

func (s *Server) remove(c *conn) {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	s.unindex(c)
	delete(s.all, c)
}

// admit checks a new stream: serving, within the admission rate, and with
// a workload identity in its client certificate.
func (s *Server) admit(ctx context.Context) (identity.ID, error) {
	refuse := func(reason string, code codes.Code, format string, a ...any) (identity.ID, error) {
		s.stats.refused.Add(1)
		s.metrics.refused.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", reason)))
		return identity.ID{}, status.Errorf(code, format, a...)
	}
	if !s.serving.Load() {
		return refuse("not_ready", codes.Unavailable, "xds-edge %s is not ready: its initial sync is not complete or it lost NATS", s.opts.EdgeID)
	}
	if s.opts.Admission != nil && !s.opts.Admission.Allow() {
		return refuse("rate_limited", codes.Unavailable, "xds-edge %s is admitting new streams at its limit; retry with backoff", s.opts.EdgeID)
	}
	id, err := PeerIdentity(ctx)
	if errors.Is(err, errNotXDSClient) {
		return refuse("service_certificate", codes.PermissionDenied, "%v", err)
	}
	if err != nil {
		return refuse("no_identity", codes.Unauthenticated, "%v", err)
	}
	if s.opts.TrustDomain != "" && id.TrustDomain != s.opts.TrustDomain {
		return refuse("trust_domain", codes.PermissionDenied, "identity %s is not in trust domain %s", id, s.opts.TrustDomain)
	}
	s.mu.RLock()
	inMesh := s.pool.HasGroup(pool.GroupID(id.Namespace, id.ServiceAccount))
	gen, _ := s.pool.Generation()
	s.mu.RUnlock()
	if !inMesh {
		// Retryable: a new pod's proxy may connect before the compiler
		// has added its identity.
		return refuse("not_in_mesh", codes.Unavailable, "identity %s is not in the mesh at generation %d: no ServiceAccount with running pods in a meshed namespace", id, gen)
	}
	return id, nil
}

// errNotXDSClient: the client certificate is a workload's service
// certificate, which every peer of the workload has seen, not the xDS
// client certificate of its bootstrap.
var errNotXDSClient = errors.New("not an xDS client certificate")

// PeerIdentity is the workload identity in the URI SAN of the verified
// client certificate of the stream in ctx. Only an xDS client certificate
// (identity.UsageXDSClient, the one the injector writes into a pod's
// bootstrap) names one: a service certificate, which the edge serves over
// SDS and the workload presents to every peer, does not open a stream.
func PeerIdentity(ctx context.Context) (identity.ID, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return identity.ID{}, errors.New("no peer")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return identity.ID{}, errors.New("the stream is not over TLS")
	}
	if len(ti.State.VerifiedChains) == 0 || len(ti.State.PeerCertificates) == 0 {
		return identity.ID{}, errors.New("no verified client certificate")
	}
	return identityOf(ti.State.PeerCertificates[0])
}

func identityOf(cert *x509.Certificate) (identity.ID, error) {
	if len(cert.URIs) != 1 {
		return identity.ID{}, fmt.Errorf("client certificate has %d URI SANs, want exactly one SPIFFE id", len(cert.URIs))
	}
	uri := cert.URIs[0].String()
	id, err := identity.ParseFor(uri, identity.UsageXDSClient)
	if err != nil {
		if _, svc := identity.Parse(uri); svc == nil {
			return identity.ID{}, fmt.Errorf("%w: %w", errNotXDSClient, err)
		}
		return identity.ID{}, err
	}
	return id, nil
}

// adsService is the gRPC face of the Server.
type adsService Server

// StreamAggregatedResources serves one state-of-the-world ADS stream.
func (a *adsService) StreamAggregatedResources(st discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	return (*Server)(a).serve(st.Context(), &sotwStream{st: st})
}

// DeltaAggregatedResources serves one delta ADS stream.
func (a *adsService) DeltaAggregatedResources(st discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return (*Server)(a).serve(st.Context(), &deltaStream{st: st})
}

// wire is the protocol-specific part of a stream.
type wire interface {
	// recv reads the next request and applies it to c, and reports
	// whether it may have made something to send.
	recv(s *Server, c *conn) (bool, error)
	// flush sends what is pending on c.
	flush(s *Server, c *conn) error
	delta() bool
}

func (s *Server) serve(ctx context.Context, w wire) error {
	id, err := s.admit(ctx)
	if err != nil {
		return err
	}
	c := newConn(s.nextID.Add(1), id, w.delta())
	log := s.log.WithFields(logrus.Fields{"identity": id.String(), "stream_id": c.streamID, "delta": c.isDelta})
	if err := s.addWithin(ctx, c); err != nil {
		log.WithError(err).Debug("xds stream refused")
		return err
	}
	s.stats.connected.Add(1)
	s.metrics.connected.Add(ctx, 1)
	if s.opts.Secrets != nil {
		s.opts.Secrets.Acquire(id)
	}
	defer func() {
		s.remove(c)
		if s.opts.Secrets != nil {
			s.opts.Secrets.Release(id)
		}
		s.stats.connected.Add(-1)
		s.metrics.connected.Add(context.WithoutCancel(ctx), -1)
		c.mu.Lock()
		s.mu.RLock()
		c.release(s.pool)
		s.mu.RUnlock()
		c.closed = true
		if c.ackTimer != nil {
			c.ackTimer.Stop() // the DISCONNECTED report carries the acked versions
		}
		c.mu.Unlock()
		s.publish(ctx, c, meshv1.ProxyEvent_PROXY_EVENT_DISCONNECTED, nil)
		log.WithField("node_id", c.nodeIDValue()).Debug("xds stream closed")
	}()

	recvErr := make(chan error, 1)
	go func() {
		for {
			flush, err := w.recv(s, c)
			if err != nil {
				recvErr <- err
				return
			}
			if flush {
				c.wake()
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-recvErr:
			if errors.Is(err, errClientDone) {
				return nil
			}
			if _, ok := status.FromError(err); ok {
				return err
			}
			return status.Errorf(codes.InvalidArgument, "%v", err)
		case err := <-c.evictCh:
			return err
		case <-c.wakeCh:
			if err := w.flush(s, c); err != nil {
				return err
			}
		}
	}
}

// request is what state-of-the-world and delta requests share.
type request interface {
	GetTypeUrl() string
	GetNode() *corev3.Node
}

// nextRequest reads the next request with recv and, with c.mu held, notes
// its node and returns its type's state; the caller releases c.mu and then
// runs after. A nil state means there is nothing more to do, with c.mu
// released: the stream ended (err: errClientDone when the client closed
// it, InvalidArgument for a request without a type URL), or the type is one
// the edge does not serve, which is never answered and keeps nothing.
func nextRequest[R request](ctx context.Context, s *Server, c *conn, recv func() (R, error)) (req R, st *typeState, after []func(), err error) {
	req, err = recv()
	switch {
	case errors.Is(err, io.EOF):
		return req, nil, nil, errClientDone
	case err != nil:
		return req, nil, nil, err
	case req.GetTypeUrl() == "":
		return req, nil, nil, status.Error(codes.InvalidArgument, "discovery request without type_url")
	}
	c.mu.Lock()
	if c.closed {
		// The stream's references are already released.
		c.mu.Unlock()
		return req, nil, nil, errClientDone
	}
	after = s.noteNode(ctx, c, req.GetNode())
	if st = c.state(req.GetTypeUrl()); st == nil {
		c.mu.Unlock()
		runAll(after)
	}
	return req, st, after, nil
}

// sender is what state-of-the-world and delta streams share for sending.
type sender[M any] interface {
	Send(M) error
}

// sendAll sends responses in order, counting each push.
func sendAll[M interface{ GetTypeUrl() string }](s *Server, st sender[M], responses []M) error {
	for _, r := range responses {
		if err := st.Send(r); err != nil {
			return err
		}
		s.recordPush(r.GetTypeUrl())
	}
	return nil
}

// refuseNewer refuses, with UNAVAILABLE, a proxy reconnecting with state
// from generation seen, newer than the replica's: it must not be rolled
// back, and retries another replica. Zero (unknown) passes, and so does
// state of an older epoch, whatever its number: mesh-compiled was lost and
// rewritten since, and the replica's epoch replaces it.
func (s *Server) refuseNewer(seen pool.Gen) error {
	if have := s.Applied(); have.Less(seen) {
		return status.Errorf(codes.Unavailable, "xds-edge %s holds generation %s, older than the %s this proxy has seen", s.opts.EdgeID, have, seen)
	}
	return nil
}

// noteNode records the node a request names; the first one makes the
// returned function publish the CONNECTED status, to run once c.mu is
// released. c.mu is held.
func (s *Server) noteNode(ctx context.Context, c *conn, node *corev3.Node) []func() {
	if !c.setNode(node) {
		return nil
	}
	var after []func()
	if g := c.flavourGroup(node); g != "" {
		// Served from g from this request on; the index follows.
		c.group.Store(&g)
		after = append(after, func() { s.reindex(c) })
	}
	return append(after, func() { s.publish(ctx, c, meshv1.ProxyEvent_PROXY_EVENT_CONNECTED, nil) })
}

// runAll runs the functions a request left to run once c.mu is released.
func runAll(fs []func()) {
	for _, f := range fs {
		f()
	}
}

// errClientDone ends a stream the client closed.
var errClientDone = errors.New("client closed the stream")

// publish reports a proxy event on the status subject.
func (s *Server) publish(ctx context.Context, c *conn, ev meshv1.ProxyEvent, nack *meshv1.Nack) {
	if s.opts.Status == nil {
		return
	}
	st := c.status(s.opts.EdgeID, ev, nack)
	s.opts.Status.PublishStatus(context.WithoutCancel(ctx), st)
}

// recordAck books the ACK of a response: counters, and the latency from the
// commit of the generation that caused it.
func (s *Server) recordAck(ctx context.Context, c *conn, typeURL string, sent sentResponse) {
	s.stats.acks.Add(1)
	s.conv.answered(c.streamID, sent.gen, time.Now(), nil)
	if !sent.commit.IsZero() {
		// Not the stream's context: the exemplar filter would walk its
		// long chain of values for a span on every ACK, and there is none.
		s.metrics.latency.Record(context.Background(), time.Since(sent.commit).Seconds(), typeAttr(typeURL))
	}
	s.publishAck(ctx, c)
}

// publishAck reports c's ACK status once AckStatusInterval has passed
// since its last report, plus a random delay of up to half the interval;
// one report covers every ACK in between (it carries the acked versions of
// every type). Reports are never made on the ACK path itself, and the
// random delay spreads the reports of proxies that ACKed one push together,
// so that they do not go out in one burst that competes with the next push.
func (s *Server) publishAck(ctx context.Context, c *conn) {
	if s.opts.Status == nil {
		return
	}
	interval := s.opts.AckStatusInterval
	if interval <= 0 {
		s.publish(ctx, c, meshv1.ProxyEvent_PROXY_EVENT_ACK, nil) // every ACK
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ackPending || c.closed {
		return
	}
	wait := max(c.ackPublished.Add(interval).Sub(time.Now()), 0) + rand.N(interval/2+1)
	c.ackPending = true
	c.ackTimer = time.AfterFunc(wait, func() {
		c.mu.Lock()
		closed := c.closed
		c.ackPending, c.ackTimer, c.ackPublished = false, nil, time.Now()
		c.mu.Unlock()
		if !closed {
			s.publish(ctx, c, meshv1.ProxyEvent_PROXY_EVENT_ACK, nil)
		}
	})
}

// recordNack books, logs and publishes a NACK.
func (s *Server) recordNack(ctx context.Context, c *conn, typeURL string, sent sentResponse, nonce, message string) {
	version := sent.version
	s.stats.nacks.Add(1)
	s.metrics.nacks.Add(ctx, 1, typeAttr(typeURL))
	s.log.WithContext(ctx).WithFields(logrus.Fields{
		"identity": c.id.String(), "node_id": c.nodeIDValue(), "type_url": typeURL, "version": version, "error_message": message,
	}).Warn("proxy rejected a response")
	nack := &meshv1.Nack{TypeUrl: typeURL, Version: version, Nonce: nonce, ErrorMessage: message, Time: timestamppb.Now()}
	s.conv.answered(c.streamID, sent.gen, nack.GetTime().AsTime(), nack)
	s.publish(ctx, c, meshv1.ProxyEvent_PROXY_EVENT_NACK, nack)
}

func (s *Server) recordPush(typeURL string) {
	s.stats.pushes.Add(1)
	s.metrics.pushes.Add(context.Background(), 1, typeAttr(typeURL)) // see recordAck
}

// typeAttrs hold the type_url attribute of each type the edge serves, by
// typeSlot, built once: building an attribute set sorts and allocates, and
// the edge records one per push and per ACK.
var typeAttrs = func() (a [len(pushOrderArray)]metric.MeasurementOption) {
	for i, t := range pushOrder {
		a[i] = metric.WithAttributeSet(attribute.NewSet(attribute.String("type_url", t)))
	}
	return a
}()

// typeAttr is the type_url attribute of typeURL.
func typeAttr(typeURL string) metric.MeasurementOption {
	if i := typeSlot(typeURL); i >= 0 {
		return typeAttrs[i]
	}
	return metric.WithAttributes(attribute.String("type_url", typeURL))
}
