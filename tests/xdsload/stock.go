package xdsload

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"sync/atomic"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/caclient"
	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// StockConfig configures the stock server: go-control-plane's own delta
// ADS server over one LinearCache per type (behind a MuxCache), fed from
// the same KV mesh-compiled as an edge. It is the baseline the harness
// compares the edge with; it serves every resource of a type to whoever
// names it, with no proxy groups and no SDS.
type StockConfig struct {
	// Bus reads mesh-compiled.
	Bus *bus.Conn
	// ListenAddr serves ADS over mTLS; AdminAddr serves /readyz and a
	// /metrics page with the heap figure the harness reads.
	ListenAddr, AdminAddr string
	// CertFile, KeyFile and ClientCAFile are the serving certificate and
	// the root that client certificates must chain to.
	CertFile, KeyFile, ClientCAFile string
}

// stockTypes are the types the stock server caches: the type URL of each
// short type name of mesh-compiled keys.
var stockTypes = map[string]string{
	layout.TypeCluster:  resourcev3.ClusterType,
	layout.TypeEndpoint: resourcev3.EndpointType,
	layout.TypeListener: resourcev3.ListenerType,
	layout.TypeRoute:    resourcev3.RouteType,
}

// RunStock serves until ctx ends. Like the edge, it applies what it reads
// only at generation boundaries, one UpdateResources call per type.
func RunStock(ctx context.Context, c StockConfig) error {
	caches := map[string]*cachev3.LinearCache{}
	mux := &cachev3.MuxCache{
		Classify:      func(r *cachev3.Request) string { return r.GetTypeUrl() },
		ClassifyDelta: func(r *cachev3.DeltaRequest) string { return r.GetTypeUrl() },
		Caches:        map[string]cachev3.Cache{},
	}
	for _, t := range stockTypes {
		caches[t] = cachev3.NewLinearCache(t)
		mux.Caches[t] = caches[t]
	}
	tlsConf, err := stockTLS(c)
	if err != nil {
		return err
	}
	store, err := c.Bus.Bucket(ctx, bus.BucketCompiled)
	if err != nil {
		return err
	}
	w, err := store.Watch(ctx, ">")
	if err != nil {
		return err
	}
	defer w.Stop()

	var ready atomic.Bool
	admin := &http.Server{Addr: c.AdminAddr, Handler: stockAdmin(&ready)}
	go func() { _ = admin.ListenAndServe() }()
	defer admin.Close()

	ln, err := net.Listen("tcp", c.ListenAddr)
	if err != nil {
		return err
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsConf)), grpc.MaxConcurrentStreams(1<<20))
	discovery.RegisterAggregatedDiscoveryServiceServer(gs, serverv3.NewServer(ctx, mux, nil))
	go func() { _ = gs.Serve(ln) }()
	defer gs.Stop()

	type pending struct {
		update map[string]cachetypes.Resource
		remove []string
	}
	staged := map[string]*pending{}
	stage := func(typeURL string) *pending {
		if staged[typeURL] == nil {
			staged[typeURL] = &pending{update: map[string]cachetypes.Resource{}}
		}
		return staged[typeURL]
	}
	initialized, applied := false, false
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events():
			if !ok {
				return w.Ended(ctx)
			}
			switch {
			case ev.Kind == bus.EventInitialized:
				initialized = true
				ready.Store(applied)
			case ev.Key == layout.GenerationKey:
				if ev.Kind != bus.EventPut {
					continue
				}
				for typeURL, p := range staged {
					if err := caches[typeURL].UpdateResources(p.update, p.remove); err != nil {
						return fmt.Errorf("update %s: %w", typeURL, err)
					}
				}
				staged, applied = map[string]*pending{}, true
				ready.Store(initialized)
			default:
				k, err := layout.ParseCompiled(ev.Key)
				typeURL := stockTypes[k.Type]
				if err != nil || k.Group || typeURL == "" {
					continue // groups (and sets) mean nothing to a stock cache
				}
				p := stage(typeURL)
				if ev.Kind == bus.EventDelete {
					delete(p.update, k.Name)
					p.remove = append(p.remove, k.Name)
					continue
				}
				var cr meshv1.CompiledResource
				if err := ev.Decode(&cr); err != nil {
					return fmt.Errorf("decode %s: %w", ev.Key, err)
				}
				m, err := (&anypb.Any{TypeUrl: cr.GetTypeUrl(), Value: cr.GetResource()}).UnmarshalNew()
				if err != nil {
					return fmt.Errorf("decode %s: %w", ev.Key, err)
				}
				p.update[k.Name] = m
			}
		}
	}
}

func stockTLS(c StockConfig) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, err
	}
	roots, err := caclient.PoolFromFile(c.ClientCAFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: roots, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}, nil
}

// stockAdmin answers /readyz once the first generation is applied,
// /metrics with go_memstats_heap_alloc_bytes, as the edge does, and
// /debug/pprof/heap, through which the harness forces a collection before
// it reads the heap, as it does with the edge.
func stockAdmin(ready *atomic.Bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/debug/pprof/heap", pprof.Handler("heap"))
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "no generation applied yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		fmt.Fprintf(w, "go_memstats_heap_alloc_bytes %d\n", ms.HeapAlloc)
	})
	return mux
}
