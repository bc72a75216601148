package scale

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/tests/kube"
)

// EditKind is one of the edits the issue names.
type EditKind string

// The edits, in the order they are made.
const (
	PodNotReady EditKind = "pod not ready"
	SplitWeight EditKind = "TrafficSplit weight"
	NewTarget   EditKind = "new TrafficTarget"
	ServicePort EditKind = "Service gains a port"
	NamespaceIn EditKind = "namespace of 100 pods joins"
)

// EditKinds lists the edits in the order Run makes them.
func EditKinds() []EditKind {
	return []EditKind{PodNotReady, SplitWeight, NewTarget, ServicePort, NamespaceIn}
}

// editPlan is one edit ready to make: the conditions its affected proxies
// must meet, the watcher keys that carry it, and the write.
type editPlan struct {
	kind  EditKind
	what  string
	conds []Cond
	// affected counts the proxies the conditions are on.
	affected int
	// keys accepts the mesh-observed keys the edit makes the watcher write.
	keys func(layout.Observed) bool
	// apply makes the edit and returns when the apiserver answered (for a
	// namespace joining, when the last of its pods was reported Ready).
	apply func(ctx context.Context) (time.Time, error)
	// before runs after the conditions are registered and before apply
	// (the joining proxies connect there).
	before func(ctx context.Context) error
}

// pbString is s as a protobuf string field's bytes end: its length, then
// s. Matching it keeps "10.16.0.2" from matching "10.16.0.23".
func pbString(s string) string { return string([]byte{byte(len(s))}) + s }

// proxiesOf lists the base proxies of service identity i.
func (r *run) proxiesOf(i int) []int {
	var out []int
	for k := i; k < r.cfg.Proxies; k += r.s.services {
		out = append(out, k)
	}
	return out
}

// holders asks the fleet which proxies hold typeURL's name.
func (r *run) holders(ctx context.Context, typeURL, name string) ([]int, error) {
	rep, err := r.fleet.call(ctx, fleetRequest{Op: "holders", Type: typeURL, Name: name})
	return rep.Holders, err
}

// pick returns the first candidate service, from start on, for which ok
// holds, trying at most the mesh's services.
func (r *run) pick(ctx context.Context, start int, ok func(i int) (bool, error)) (int, error) {
	for c := range r.s.services {
		i := (start + c) % r.s.services
		good, err := ok(i)
		if err != nil {
			return 0, err
		}
		if good {
			return i, nil
		}
	}
	return 0, fmt.Errorf("no service fits")
}

func (r *run) plan(ctx context.Context, kind EditKind, rep int) (*editPlan, error) {
	switch kind {
	case PodNotReady:
		return r.planPodNotReady(ctx, rep)
	case SplitWeight:
		return r.planSplit(ctx, rep)
	case NewTarget:
		return r.planTarget(ctx, rep)
	case ServicePort:
		return r.planPort(ctx, rep)
	case NamespaceIn:
		return r.planNamespace(ctx, rep)
	}
	return nil, fmt.Errorf("unknown edit %q", kind)
}

// planPodNotReady: the first pod of a service whose load assignment some
// proxies hold turns not ready (the kubelet stand-in's status update);
// every holder must receive the assignment without the pod's IP.
func (r *run) planPodNotReady(ctx context.Context, rep int) (*editPlan, error) {
	var hs []int
	x, err := r.pick(ctx, 11+rep*37, func(i int) (bool, error) {
		if i >= r.s.pods || r.used[i] {
			return false, nil
		}
		var err error
		hs, err = r.holders(ctx, resourcev3.EndpointType, r.s.cluster(i))
		return len(hs) > 0, err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: no service whose endpoints a proxy holds: %w", PodNotReady, err)
	}
	r.used[x] = true
	ns, name, ip := r.s.ns(x), r.s.podName(x), podIP(x)
	p := &editPlan{kind: PodNotReady, what: fmt.Sprintf("pod %s/%s (%s) not ready", ns, name, ip), affected: len(hs),
		keys: func(o layout.Observed) bool {
			return o.Kind == layout.KindEndpointSlice && o.Namespace == ns && strings.HasPrefix(o.Name, svcName(x)+"-")
		}}
	for _, h := range hs {
		p.conds = append(p.conds, Cond{Proxy: h, Type: resourcev3.EndpointType, Name: r.s.cluster(x), Lacks: []string{pbString(ip)}})
	}
	p.apply = func(ctx context.Context) (time.Time, error) {
		pod, err := r.k.cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return time.Time{}, err
		}
		_, err = r.kubelet.MakeNotReady(ctx, pod, ip)
		return time.Now(), err
	}
	return p, nil
}

// planSplit: a TrafficSplit on an HTTP apex goes from 90/10 to 50/50 (and
// back on the next repeat); every proxy holding the apex's route
// configuration must receive a new version of it.
func (r *run) planSplit(ctx context.Context, rep int) (*editPlan, error) {
	var hs []int
	var apex, b1, b2 int
	found := false
	for k := range r.s.splits {
		a, x1, x2, ok := r.s.split((k + rep*7) % r.s.splits)
		if !ok || !r.s.isHTTP(a) {
			continue
		}
		var err error
		if hs, err = r.holders(ctx, resourcev3.RouteType, r.s.cluster(a)); err != nil {
			return nil, err
		}
		if len(hs) > 0 {
			apex, b1, b2, found = a, x1, x2, true
			break
		}
	}
	if !found {
		return nil, fmt.Errorf("%s: no TrafficSplit on an HTTP apex whose routes a proxy holds", SplitWeight)
	}
	ns, name := r.s.ns(apex), svcName(apex)+"-split"
	w1, w2 := int64(50), int64(50)
	if r.splitFlipped[apex] {
		w1, w2 = 90, 10
	}
	r.splitFlipped[apex] = !r.splitFlipped[apex]
	p := &editPlan{kind: SplitWeight, what: fmt.Sprintf("TrafficSplit %s/%s to %d/%d", ns, name, w1, w2), affected: len(hs),
		keys: func(o layout.Observed) bool {
			return o.Kind == layout.KindTrafficSplit && o.Namespace == ns && o.Name == name
		}}
	for _, h := range hs {
		p.conds = append(p.conds, Cond{Proxy: h, Type: resourcev3.RouteType, Name: r.s.cluster(apex), Changed: true})
	}
	want := trafficSplit(name, svcName(apex), svcName(b1), svcName(b2), w1, w2)["spec"]
	p.apply = func(ctx context.Context) (time.Time, error) {
		res := r.k.dyn.Resource(kube.TrafficSplits).Namespace(ns)
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			cur, err := res.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			cur.Object["spec"] = want
			_, err = res.Update(ctx, cur, metav1.UpdateOptions{})
			return err
		})
		return time.Now(), err
	}
	return p, nil
}

// planTarget: a new TrafficTarget lets a source identity that has proxies
// and does not reach the destination yet call it: the source's proxies
// must receive the destination's cluster and load assignment, the
// destination's proxies an inbound listener naming the source.
func (r *run) planTarget(ctx context.Context, rep int) (*editPlan, error) {
	// An HTTP destination gets an HTTPRouteGroup rule, so its namespace
	// must have one (the mesh's other HTTP services without one have a
	// TCPRoute rule, which does not open their HTTP port).
	d, err := r.pick(ctx, 23+rep*53, func(i int) (bool, error) {
		return len(r.proxiesOf(i)) > 0 && !r.used[i] && (!r.s.isHTTP(i) || r.s.ttRule(i) != ""), nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: no destination with proxies: %w", NewTarget, err)
	}
	r.used[d] = true
	reach, err := r.holders(ctx, resourcev3.ClusterType, r.s.cluster(d))
	if err != nil {
		return nil, err
	}
	src, err := r.pick(ctx, d+1+rep*17, func(i int) (bool, error) {
		ps := r.proxiesOf(i)
		return i != d && len(ps) > 0 && !slices.ContainsFunc(ps, func(k int) bool { return slices.Contains(reach, k) }), nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: no source for %s: %w", NewTarget, svcName(d), err)
	}
	ns, name := r.s.ns(d), fmt.Sprintf("%s-new-%d", svcName(d), rep)
	p := &editPlan{kind: NewTarget, what: fmt.Sprintf("TrafficTarget %s/%s: %s/%s may call %s", ns, name, r.s.ns(src), svcName(src), svcName(d)),
		keys: func(o layout.Observed) bool {
			return o.Kind == layout.KindTrafficTarget && o.Namespace == ns && o.Name == name
		}}
	for _, k := range r.proxiesOf(src) {
		p.conds = append(p.conds,
			Cond{Proxy: k, Type: resourcev3.ClusterType, Name: r.s.cluster(d)},
			Cond{Proxy: k, Type: resourcev3.EndpointType, Name: r.s.cluster(d)})
		p.affected++
	}
	for _, k := range r.proxiesOf(d) {
		p.conds = append(p.conds, Cond{Proxy: k, Type: resourcev3.ListenerType, Contains: []string{spiffe(r.s.ns(src), svcName(src))}})
		p.affected++
	}
	obj := trafficTarget(ns, name, svcName(d), r.s.ttRule(d), subject{r.s.ns(src), svcName(src)})
	p.apply = func(ctx context.Context) (time.Time, error) {
		err := r.k.create(ctx, kube.TrafficTargets, ns, obj)
		return time.Now(), err
	}
	return p, nil
}

// planPort: an HTTP Service whose cluster some proxies hold gains port
// 8081; every holder must receive the new port's cluster and its load
// assignment (which the endpointslice controller's slice update brings).
func (r *run) planPort(ctx context.Context, rep int) (*editPlan, error) {
	var hs []int
	x, err := r.pick(ctx, 31+rep*41, func(i int) (bool, error) {
		if !r.s.isHTTP(i) || r.used[i] {
			return false, nil
		}
		var err error
		hs, err = r.holders(ctx, resourcev3.ClusterType, r.s.cluster(i))
		return len(hs) > 0, err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: no HTTP service whose cluster a proxy holds: %w", ServicePort, err)
	}
	r.used[x] = true
	ns, name := r.s.ns(x), svcName(x)
	newCluster := clusterName(ns, name, extraPort)
	p := &editPlan{kind: ServicePort, what: fmt.Sprintf("Service %s/%s gains port %d", ns, name, extraPort), affected: len(hs),
		keys: func(o layout.Observed) bool {
			return o.Namespace == ns && (o.Kind == layout.KindService && o.Name == name ||
				o.Kind == layout.KindEndpointSlice && strings.HasPrefix(o.Name, name+"-"))
		}}
	for _, h := range hs {
		p.conds = append(p.conds,
			Cond{Proxy: h, Type: resourcev3.ClusterType, Name: newCluster},
			Cond{Proxy: h, Type: resourcev3.EndpointType, Name: newCluster})
	}
	p.apply = func(ctx context.Context) (time.Time, error) {
		svcs := r.k.cs.CoreV1().Services(ns)
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			svc, err := svcs.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			extra := servicePort(extraPort, true)
			extra.Name = "http-extra"
			svc.Spec.Ports = append(svc.Spec.Ports, extra)
			_, err = svcs.Update(ctx, svc, metav1.UpdateOptions{})
			return err
		})
		return time.Now(), err
	}
	return p, nil
}

// The joining namespace: joinServices Services of joinPerService pods
// each, service k reachable from service k-1 (a ring) over an
// HTTPRouteGroup of the namespace.
const (
	joinServices   = 10
	joinPerService = 10
)

// planNamespace: a new namespace, labelled for the mesh, gets 10 Services
// with 10 pods each and a ring of TrafficTargets; a proxy per pod (with
// SDS) connects while the pods start; then every pod is reported Ready.
// Each joining proxy must hold its destination's cluster and a load
// assignment with all ten of its pods, an inbound listener naming its
// source, and its service certificate; the clock starts when the last
// pod was reported Ready.
func (r *run) planNamespace(ctx context.Context, rep int) (*editPlan, error) {
	ns := fmt.Sprintf("join-%d", rep)
	svc := func(k int) string { return fmt.Sprintf("join-%02d", (k+joinServices)%joinServices) }
	ip := func(k, j int) string { return fmt.Sprintf("10.200.%d.%d", rep, 1+k*joinPerService+j) }
	if err := r.k.namespace(ctx, ns, true); err != nil {
		return nil, err
	}
	if err := r.k.create(ctx, kube.HTTPRouteGroups, ns, routeGroup("join-routes", rep)); err != nil {
		return nil, err
	}
	var pods []*corev1.Pod
	var podIPs []string
	for k := range joinServices {
		if err := r.k.serviceAccount(ctx, ns, svc(k)); err != nil {
			return nil, err
		}
		if err := r.k.service(ctx, ns, svc(k), servicePort(httpPort, true)); err != nil {
			return nil, err
		}
		if err := r.k.create(ctx, kube.TrafficTargets, ns, trafficTarget(ns, svc(k)+"-access", svc(k), "join-routes", subject{ns, svc(k - 1)})); err != nil {
			return nil, err
		}
		for j := range joinPerService {
			pod, err := r.k.pod(ctx, ns, fmt.Sprintf("%s-%d", svc(k), j), svc(k), httpPort)
			if err != nil {
				return nil, err
			}
			pods, podIPs = append(pods, pod), append(podIPs, ip(k, j))
		}
	}
	base := r.nextProxy
	var specs []ProxySpec
	p := &editPlan{kind: NamespaceIn, what: fmt.Sprintf("namespace %s: %d Services, %d pods, %d proxies", ns, joinServices, len(pods), len(pods)),
		keys: func(o layout.Observed) bool { return o.Namespace == ns && o.Kind == layout.KindEndpointSlice }}
	for i, pod := range pods {
		k := i / joinPerService
		specs = append(specs, ProxySpec{Namespace: ns, ServiceAccount: pod.Spec.ServiceAccountName, SDS: true})
		idx := base + i
		dest := clusterName(ns, svc(k+1), httpPort)
		var want []string
		for j := range joinPerService {
			want = append(want, pbString(ip((k+1)%joinServices, j)))
		}
		p.conds = append(p.conds,
			Cond{Proxy: idx, Type: resourcev3.ClusterType, Name: dest},
			Cond{Proxy: idx, Type: resourcev3.EndpointType, Name: dest, Contains: want},
			Cond{Proxy: idx, Type: resourcev3.ListenerType, Contains: []string{spiffe(ns, svc(k-1))}},
			Cond{Proxy: idx, Type: resourcev3.SecretType, Name: layout.SecretServiceCert})
		p.affected++
	}
	r.nextProxy += len(pods)
	p.before = func(ctx context.Context) error {
		_, err := r.fleet.call(ctx, fleetRequest{Op: "connect", Edges: r.edgeAddrs, Roots: r.rootsFile, Proxies: specs})
		return err
	}
	p.apply = func(ctx context.Context) (time.Time, error) {
		err := parallel(ctx, len(pods), 16, func(ctx context.Context, i int) error {
			return r.k.setReady(ctx, pods[i], podIPs[i], true)
		})
		return time.Now(), err
	}
	return p, nil
}
