package xds

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/sirupsen/logrus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/openservicemesh/osm/libs/xdstest"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// permissiveMesh stages and commits what the policy-compiler writes for a
// permissive mesh of services services, one identity each: per service a
// cluster, its endpoints, its route, its outbound listener (one HTTP chain
// on its cluster IP) and its local cluster; the shared outbound listener on
// 15001; an inbound listener per identity; 16 name sets holding the
// services' outbound names; and a group per identity listing its local
// cluster, its inbound and the shared outbound listener, and the sets.
type permissiveMesh struct {
	s        *Server
	services int
	gen      uint64
}

func setOf(svc int) string { return fmt.Sprintf("permissive-%02d", svc%16) }

func svcName(i int) string { return fmt.Sprintf("ns-%03d/svc-%05d|8080", i%100, i) }

func (m *permissiveMesh) stage(b *testing.B, w xdstest.Write) {
	v, err := proto.Marshal(w.Value)
	if err != nil {
		b.Fatal(err)
	}
	if err := m.s.Stage(w.Key, v); err != nil {
		b.Fatal(err)
	}
}

func (m *permissiveMesh) stageSet(w xdstest.Write) {
	v, err := proto.Marshal(w.Value)
	if err == nil {
		err = m.s.Stage(w.Key, v)
	}
	if err != nil {
		panic(err)
	}
}

func (m *permissiveMesh) commit(b *testing.B) {
	m.gen++
	if _, err := m.s.Commit(&meshv1.Generation{Number: m.gen}); err != nil {
		b.Fatal(err)
	}
}

// serviceListener is the outbound listener of service i, like the
// compiler's.
func serviceListener(b *testing.B, i int) *listenerv3.Listener {
	router, _ := anypb.New(&routerv3.Router{})
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix: "outbound:" + svcName(i),
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}, ResourceApiVersion: corev3.ApiVersion_V3},
			RouteConfigName: svcName(i),
		}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
	})
	if err != nil {
		b.Fatal(err)
	}
	return &listenerv3.Listener{
		Name: listenerName(i),
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: fmt.Sprintf("10.96.%d.%d", i/250, i%250), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8080},
		}}},
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		BindToPort:       wrapperspb.Bool(false),
		FilterChains: []*listenerv3.FilterChain{{
			Name:    "outbound:" + svcName(i),
			Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}},
		}},
	}
}

func listenerName(i int) string { return "outbound-listener:" + svcName(i) }

// service stages the resources of service i.
func (m *permissiveMesh) service(b *testing.B, i int) {
	n := svcName(i)
	m.stage(b, must(xdstest.Resource(xdstest.Cluster(n, time.Second), n, m.gen+1)))
	m.stage(b, must(xdstest.Resource(xdstest.Endpoints(n, 8080, 8081), n, m.gen+1)))
	m.stage(b, must(xdstest.Resource(xdstest.Route(n, n), n, m.gen+1)))
	m.stage(b, must(xdstest.Resource(xdstest.Cluster(n+"|local", time.Second), n+"|local", m.gen+1)))
	m.stage(b, must(xdstest.Resource(serviceListener(b, i), listenerName(i), m.gen+1)))
}

// sets stages the given set shards of the first n services.
func (m *permissiveMesh) sets(n int, shards ...int) {
	for _, shard := range shards {
		var names, listeners []string
		for i := shard; i < n; i += 16 {
			names, listeners = append(names, svcName(i)), append(listeners, listenerName(i))
		}
		m.stageSet(xdstest.NameSet(setOf(shard), m.gen+1, map[string][]string{cds: names, eds: names, rds: names, lds: listeners}))
	}
}

func newPermissiveMesh(b *testing.B, s *Server, services int) *permissiveMesh {
	m := &permissiveMesh{s: s, services: services}
	m.stage(b, must(xdstest.Resource(xdstest.Listener("outbound-listener", 15001), "outbound-listener", 1)))
	var sets []string
	for i := range 16 {
		sets = append(sets, setOf(i))
	}
	for i := range services {
		m.service(b, i)
		in := fmt.Sprintf("inbound-listener:ns%d/ns%d", i, i)
		m.stage(b, must(xdstest.Resource(xdstest.Listener(in, 15003), in, 1)))
		ns := fmt.Sprintf("ns%d", i)
		m.stage(b, xdstest.Group(ns, ns, 1, map[string][]string{
			cds: {svcName(i) + "|local"},
			lds: {in, "outbound-listener"},
		}, sets...))
	}
	all := make([]int, 16)
	for i := range all {
		all[i] = i
	}
	m.sets(services, all...)
	m.commit(b)
	return m
}

func cpuNow() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkBroadcast measures the edge's side of a permissive-mode
// broadcast: one service added to (then removed from) a mesh of 1000
// services with 2000 connected delta streams, each subscribed to CDS, EDS,
// LDS and RDS. The commit carries what the policy-compiler writes for it
// (the service's five resources, its listener among them, and one name
// set); the benchmark waits until every stream has sent (and serialised)
// its responses and reports the process's CPU time per broadcast and the
// bytes serialised.
func BenchmarkBroadcast(b *testing.B) {
	const services, proxies = 1000, 2000
	log := logrus.New()
	log.SetOutput(io.Discard)
	s, err := New(Options{Log: logrus.NewEntry(log), EdgeID: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	m := newPermissiveMesh(b, s, services)
	s.SetServing(true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var sent, bytes atomic.Int64
	var done sync.WaitGroup
	for i := range proxies {
		st := &benchStream{ctx: peerContext(ctx, fmt.Sprintf("ns%d", i%services)), reqs: make(chan *discovery.DeltaDiscoveryRequest, 64), sent: &sent, bytes: &bytes}
		for _, t := range []string{cds, eds, lds, rds} {
			st.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: t}
		}
		done.Add(1)
		go func() {
			defer done.Done()
			_ = (*adsService)(s).DeltaAggregatedResources(st)
		}()
	}
	until := func(n int64) {
		deadline := time.Now().Add(2 * time.Minute)
		for sent.Load() < n {
			if time.Now().After(deadline) {
				b.Fatalf("%d responses sent, want %d", sent.Load(), n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	until(4 * proxies)
	runtime.GC()
	var cpu time.Duration
	var sentBytes int64
	added := false
	for b.Loop() {
		before, c0 := sent.Load(), cpuNow()
		b0 := bytes.Load()
		shard := services % 16
		if !added {
			m.service(b, services)
			m.sets(services+1, shard)
		} else {
			n := svcName(services)
			for _, w := range []xdstest.Write{
				must(xdstest.Resource(xdstest.Cluster(n, time.Second), n, 0)),
				must(xdstest.Resource(xdstest.Endpoints(n), n, 0)),
				must(xdstest.Resource(xdstest.Route(n, n), n, 0)),
				must(xdstest.Resource(xdstest.Cluster(n+"|local", time.Second), n+"|local", 0)),
				must(xdstest.Resource(serviceListener(b, services), listenerName(services), 0)),
			} {
				if err := s.Stage(w.Key, nil); err != nil {
					b.Fatal(err)
				}
			}
			m.sets(services, shard)
		}
		m.commit(b)
		// Every stream gets one CDS, EDS, RDS and LDS response.
		until(before + 4*proxies)
		cpu += cpuNow() - c0
		sentBytes += bytes.Load() - b0
		added = !added
	}
	b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
	b.ReportMetric(float64(sentBytes)/float64(b.N)/(1<<20), "MiB-sent/op")
	cancel()
	done.Wait()
}

func must(w xdstest.Write, err error) xdstest.Write {
	if err != nil {
		panic(err)
	}
	return w
}
