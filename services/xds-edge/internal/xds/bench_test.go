package xds

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/url"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/xdstest"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// benchStream is an in-memory delta stream: requests come from a channel,
// and each response is counted and ACKed, as a proxy would. With bytes set,
// it first serialises the response, as gRPC's codec does, and adds its
// size. It measures the edge's own work, without the network, HTTP/2
// framing and TLS.
type benchStream struct {
	grpc.ServerStream
	ctx  context.Context
	reqs chan *discovery.DeltaDiscoveryRequest
	sent *atomic.Int64
	// wg, when set, is told of every response.
	wg *sync.WaitGroup
	// bytes, when set, adds up the responses' serialised sizes.
	bytes *atomic.Int64
}

func (b *benchStream) Context() context.Context { return b.ctx }

// Send counts the response and ACKs it.
func (b *benchStream) Send(r *discovery.DeltaDiscoveryResponse) error {
	if b.bytes != nil {
		m, err := proto.Marshal(r)
		if err != nil {
			return err
		}
		b.bytes.Add(int64(len(m)))
	}
	b.sent.Add(1)
	if b.wg != nil {
		b.wg.Done()
	}
	select {
	case b.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()}:
	default:
	}
	return nil
}

func (b *benchStream) Recv() (*discovery.DeltaDiscoveryRequest, error) {
	select {
	case r := <-b.reqs:
		return r, nil
	case <-b.ctx.Done():
		return nil, io.EOF
	}
}

// peerContext carries a verified client certificate for ns/ns.
func peerContext(ctx context.Context, ns string) context.Context {
	u, _ := url.Parse(xdstest.ProxyURI(spiffe(ns)))
	cert := &x509.Certificate{URIs: []*url.URL{u}}
	return peer.NewContext(ctx, &peer.Peer{AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{
		PeerCertificates: []*x509.Certificate{cert}, VerifiedChains: [][]*x509.Certificate{{cert}},
	}}})
}

// benchMesh commits groups identities; every group names the shared
// endpoints "ep-shared" plus 20 clusters and endpoints of its own.
func benchMesh(b *testing.B, s *Server, groups int) {
	stage := func(w xdstest.Write) {
		v, err := proto.Marshal(w.Value)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Stage(w.Key, v); err != nil {
			b.Fatal(err)
		}
	}
	must := func(w xdstest.Write, err error) xdstest.Write {
		if err != nil {
			b.Fatal(err)
		}
		return w
	}
	stage(must(xdstest.Resource(xdstest.Endpoints("ep-shared", 1), "ep-shared", 1)))
	for g := range groups {
		clusters, eps := []string{}, []string{"ep-shared"}
		for i := range 20 {
			n := fmt.Sprintf("g%d-c%d", g, i)
			stage(must(xdstest.Resource(xdstest.Cluster(n, time.Second), n, 1)))
			stage(must(xdstest.Resource(xdstest.Endpoints(n, 80), n, 1)))
			clusters, eps = append(clusters, n), append(eps, n)
		}
		ns := fmt.Sprintf("ns%d", g)
		stage(xdstest.Group(ns, ns, 1, map[string][]string{cds: clusters, eds: eps}))
	}
	if _, err := s.Commit(&meshv1.Generation{Number: 1}); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkEndpointChangeToPush measures one endpoint change that every
// proxy references, from Commit until every delta stream has sent its
// response (which carries that one resource). The goal it tracks: 10,000
// proxies, p99 ≤ 1 s.
func BenchmarkEndpointChangeToPush(b *testing.B) {
	for _, proxies := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("proxies=%d", proxies), func(b *testing.B) {
			log := logrus.New()
			log.SetOutput(io.Discard)
			s, err := New(Options{Log: logrus.NewEntry(log), EdgeID: "bench"})
			if err != nil {
				b.Fatal(err)
			}
			benchMesh(b, s, 100)
			s.SetServing(true)
			ctx, cancel := context.WithCancel(context.Background())
			var sent atomic.Int64
			var wg sync.WaitGroup
			var done sync.WaitGroup
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for i := range proxies {
				st := &benchStream{ctx: peerContext(ctx, fmt.Sprintf("ns%d", i%100)), reqs: make(chan *discovery.DeltaDiscoveryRequest, 64), sent: &sent, wg: &wg}
				wg.Add(2) // the initial CDS and EDS responses
				st.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: cds}
				st.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: eds}
				done.Add(1)
				go func() {
					defer done.Done()
					_ = (*adsService)(s).DeltaAggregatedResources(st)
				}()
			}
			wg.Wait()
			runtime.GC()
			runtime.ReadMemStats(&after)
			perProxy := float64(after.HeapAlloc-before.HeapAlloc) / float64(proxies)
			b.ResetTimer()
			for n := range b.N {
				w, err := xdstest.Resource(xdstest.Endpoints("ep-shared", uint32(n+2)), "ep-shared", uint64(n+2))
				if err != nil {
					b.Fatal(err)
				}
				v, _ := proto.Marshal(w.Value)
				wg.Add(proxies)
				if err := s.Stage(w.Key, v); err != nil {
					b.Fatal(err)
				}
				if _, err := s.Commit(&meshv1.Generation{Number: uint64(n + 2)}); err != nil {
					b.Fatal(err)
				}
				wg.Wait()
			}
			b.StopTimer()
			// Idle memory per proxy: stream state, goroutines' heap and the
			// resource versions it holds (goroutine stacks are not heap).
			b.ReportMetric(perProxy, "heap-B/proxy")
			cancel()
			done.Wait()
		})
	}
}

// BenchmarkLinearCacheEndpointChange is the same change through
// go-control-plane's stock delta server and LinearCache, for comparison:
// each proxy subscribes to its group's 21 load assignments.
func BenchmarkLinearCacheEndpointChange(b *testing.B) {
	for _, proxies := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("proxies=%d", proxies), func(b *testing.B) {
			initial := map[string]cachetypes.Resource{"ep-shared": xdstest.Endpoints("ep-shared", 1)}
			subs := make([][]string, 100)
			for g := range 100 {
				subs[g] = []string{"ep-shared"}
				for i := range 20 {
					n := fmt.Sprintf("g%d-c%d", g, i)
					initial[n] = xdstest.Endpoints(n, 80)
					subs[g] = append(subs[g], n)
				}
			}
			lc := cachev3.NewLinearCache(eds, cachev3.WithInitialResources(initial))
			ctx, cancel := context.WithCancel(context.Background())
			srv := serverv3.NewServer(ctx, lc, nil)
			var sent atomic.Int64
			var wg, done sync.WaitGroup
			for i := range proxies {
				st := &benchStream{ctx: ctx, reqs: make(chan *discovery.DeltaDiscoveryRequest, 64), sent: &sent, wg: &wg}
				wg.Add(1)
				st.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: eds, Node: &corev3.Node{Id: fmt.Sprint(i)}, ResourceNamesSubscribe: subs[i%100]}
				done.Add(1)
				go func() {
					defer done.Done()
					_ = srv.DeltaAggregatedResources(st)
				}()
			}
			wg.Wait()
			b.ResetTimer()
			for n := range b.N {
				wg.Add(proxies)
				if err := lc.UpdateResource("ep-shared", xdstest.Endpoints("ep-shared", uint32(n+2))); err != nil {
					b.Fatal(err)
				}
				wg.Wait()
			}
			b.StopTimer()
			cancel()
			done.Wait()
		})
	}
}
