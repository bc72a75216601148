package service_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// The scale of the benchmarks' cluster, from the environment:
// OSM_BENCH_SERVICES (default 10000) Services, each with one EndpointSlice
// of OSM_BENCH_PODS/OSM_BENCH_SERVICES endpoints, and OSM_BENCH_PODS
// (default 50000) Pods, spread over 10 meshed namespaces.
func benchScale(b *testing.B) (services, pods int) {
	get := func(name string, def int) int {
		if v := os.Getenv(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				b.Fatalf("%s=%q: want a positive integer", name, v)
			}
			return n
		}
		return def
	}
	return get("OSM_BENCH_SERVICES", 10000), get("OSM_BENCH_PODS", 50000)
}

// scaleMesh is the populated mesh shared by the benchmarks of one run.
var scaleMesh struct {
	once     sync.Once
	mesh     string
	ns       []string
	objects  int
	err      error
	populate time.Duration
}

// populate creates the benchmark's objects once, with 32 clients in
// parallel. Services have no selector, so the endpointslice controller
// leaves them to the slices created here.
func populate(b *testing.B) {
	services, pods := benchScale(b)
	scaleMesh.once.Do(func() {
		start := time.Now()
		ctx := context.Background()
		cfg := cluster.RESTConfig()
		cfg.QPS, cfg.Burst = 5000, 10000
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			scaleMesh.err = err
			return
		}
		scaleMesh.mesh = "bench"
		const namespaces = 10
		for i := range namespaces {
			ns, err := cluster.CreateNamespace(ctx, fmt.Sprintf("bench-%d-", i), map[string]string{layout.LabelMonitoredBy: scaleMesh.mesh})
			if err != nil {
				scaleMesh.err = err
				return
			}
			scaleMesh.ns = append(scaleMesh.ns, ns.Name)
		}
		perSvc := max(pods/services, 1)
		work := make(chan func() error, 1024)
		var wg sync.WaitGroup
		var mu sync.Mutex
		for range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for f := range work {
					if err := f(); err != nil {
						mu.Lock()
						if scaleMesh.err == nil {
							scaleMesh.err = err
						}
						mu.Unlock()
					}
				}
			}()
		}
		for s := range services {
			ns := scaleMesh.ns[s%namespaces]
			svc := fmt.Sprintf("svc-%d", s)
			work <- func() error {
				_, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
					ObjectMeta: metav1.ObjectMeta{Name: svc},
					Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
				}, metav1.CreateOptions{})
				if err != nil {
					return err
				}
				eps := &discoveryv1.EndpointSlice{
					ObjectMeta: metav1.ObjectMeta{Name: svc + "-1", Labels: map[string]string{
						discoveryv1.LabelServiceName: svc, discoveryv1.LabelManagedBy: "osm-bench"}},
					AddressType: discoveryv1.AddressTypeIPv4,
					Ports:       []discoveryv1.EndpointPort{{Name: ptrTo("http"), Port: ptrTo[int32](8080), Protocol: ptrTo(corev1.ProtocolTCP)}},
				}
				for p := range perSvc {
					eps.Endpoints = append(eps.Endpoints, discoveryv1.Endpoint{
						Addresses:  []string{fmt.Sprintf("10.%d.%d.%d", 100+s/65536, (s/256)%256, (s%256+p)%256)},
						Conditions: discoveryv1.EndpointConditions{Ready: ptrTo(true)},
						TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: fmt.Sprintf("pod-%d-%d", s, p)},
					})
				}
				_, err = cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, eps, metav1.CreateOptions{})
				return err
			}
		}
		for p := range pods {
			s := p / perSvc
			ns := scaleMesh.ns[s%namespaces]
			work <- func() error {
				_, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pod-%d-%d", s, p%perSvc),
						Labels: map[string]string{"app": fmt.Sprintf("svc-%d", s)}},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.com/app:v1"}}},
				}, metav1.CreateOptions{})
				return err
			}
		}
		close(work)
		wg.Wait()
		// Namespaces, default ServiceAccounts, Services, slices, pods.
		scaleMesh.objects = namespaces*2 + services*2 + pods
		scaleMesh.populate = time.Since(start)
	})
	if scaleMesh.err != nil {
		b.Fatalf("populate the benchmark cluster: %v", scaleMesh.err)
	}
	b.Logf("cluster holds %d services and %d pods in %d meshed namespaces (populated in %s)",
		services, pods, len(scaleMesh.ns), scaleMesh.populate.Round(time.Second))
}

func ptrTo[T any](v T) *T { return &v }

// BenchmarkInitialSync measures a watcher's start, from the runner's start
// to the SYNCED marker, against the real apiserver holding the benchmark's
// objects, into an empty bucket. Goal: 30 s for 10k Services and 50k pods.
func BenchmarkInitialSync(b *testing.B) {
	populate(b)
	var total time.Duration
	var heap float64
	n := 0
	for b.Loop() {
		b.StopTimer()
		e := newEnv(b)
		e.mesh = scaleMesh.mesh
		b.StartTimer()
		start := time.Now()
		in := e.start(fmt.Sprintf("bench-%d", n), "--log-level", "info")
		m := e.waitSynced(0, 10*time.Minute)
		took := time.Since(start)
		b.StopTimer()
		total += took
		n++
		var objects uint64
		for _, c := range m.ObjectCounts {
			objects += c
		}
		if int(objects) != scaleMesh.objects {
			b.Errorf("marker counts %d objects (%v), want %d", objects, m.ObjectCounts, scaleMesh.objects)
		}
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		heap = float64(ms.HeapInuse) / (1 << 20)
		b.Logf("start to SYNCED marker: %s for %d objects; heap in use after sync %.0f MiB (the whole test process)",
			took.Round(time.Millisecond), objects, heap)
		in.stop(b)
		b.StartTimer()
	}
	b.ReportMetric(total.Seconds()/float64(n), "s/sync")
	b.ReportMetric(heap, "MiB-heap")
}

// BenchmarkPodIPChange measures the steady state: one pod's IP changes in
// the populated mesh. It reports the p50 and p99 from sending the pod status
// update to the apiserver to the KV watch seeing the new value (end to end:
// the apiserver's write, the watch event, the watcher, NATS), and
// the p50 of the watcher's own informer-event-to-KV-write histogram
// (osm_watcher_event_to_write_seconds, kind="pod"). Goal: p50 ≤ 5 ms from
// the informer event.
func BenchmarkPodIPChange(b *testing.B) {
	populate(b)
	e := newEnv(b)
	e.mesh = scaleMesh.mesh
	in := e.start("bench-steady", "--log-level", "info")
	e.waitSynced(0, 10*time.Minute)
	e.quiesce(time.Second)

	ctx := context.Background()
	cs := cluster.Clientset()
	ns := scaleMesh.ns[0]
	pod, err := cs.CoreV1().Pods(ns).Get(ctx, "pod-0-0", metav1.GetOptions{})
	if err != nil {
		b.Fatal(err)
	}
	key := layout.ObservedKey(layout.KindPod, ns, pod.Name)
	w, err := e.store.Watch(ctx, key)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop()
	for ev := range w.Events() {
		if ev.Kind == bus.EventInitialized {
			break
		}
	}
	var lat []time.Duration
	i := 0
	for b.Loop() {
		i++
		ip := fmt.Sprintf("10.250.%d.%d", (i/256)%256, i%256)
		pod.Status.PodIP, pod.Status.PodIPs = ip, []corev1.PodIP{{IP: ip}}
		pod.Status.Phase = corev1.PodRunning
		start := time.Now()
		if pod, err = cs.CoreV1().Pods(ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
			b.Fatal(err)
		}
		for {
			ev := <-w.Events()
			var p meshv1.Pod
			if ev.Kind == bus.EventPut && ev.Decode(&p) == nil && len(p.PodIps) == 1 && p.PodIps[0] == ip {
				break
			}
		}
		lat = append(lat, time.Since(start))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "ms-e2e-p50")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "ms-e2e-p99")
	if p50, err := histogramP50(in.admin, "osm_watcher_event_to_write_seconds", `kind="pod"`); err != nil {
		b.Error(err)
	} else {
		b.ReportMetric(p50*1000, "ms-event-to-write-p50<=")
	}
}

// histogramP50 reads a Prometheus histogram from the admin listener and
// returns the upper bound of the bucket holding the median.
func histogramP50(admin, name, match string) (float64, error) {
	body, err := apptest.Metrics(admin)
	if err != nil {
		return 0, err
	}
	type bucket struct{ le, n float64 }
	var buckets []bucket
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"_bucket{") || !strings.Contains(line, match) {
			continue
		}
		i := strings.Index(line, `le="`)
		j := strings.Index(line[i+4:], `"`)
		le, err1 := strconv.ParseFloat(line[i+4:i+4+j], 64)
		n, err2 := strconv.ParseFloat(line[strings.LastIndex(line, " ")+1:], 64)
		if err1 != nil || err2 != nil {
			continue
		}
		buckets = append(buckets, bucket{le, n})
	}
	if len(buckets) == 0 {
		return 0, fmt.Errorf("no %s{%s} in /metrics", name, match)
	}
	sort.Slice(buckets, func(i, j int) bool { return buckets[i].le < buckets[j].le })
	total := buckets[len(buckets)-1].n
	for _, bk := range buckets {
		if bk.n >= total/2 {
			return bk.le, nil
		}
	}
	return buckets[len(buckets)-1].le, nil
}
