package soak

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// edit is one change written to the apiserver, and which proxies have
// received it: its clock starts before the write and stops, for each
// affected proxy, at the response (ACKed before it is read) that makes
// check true.
type edit struct {
	obj        string // the object edited (edits.run)
	kind, what string
	typeURL    string // the type whose responses can complete it
	at         time.Time
	affects    []bool // by proxy index
	check      func(*proxy) bool

	mu        sync.Mutex
	got       map[int]time.Duration
	remaining int
	finished  chan struct{}
	timedOut  bool
	failed    bool // the write failed
}

// try completes the edit for p when p now holds it.
func (e *edit) try(p *proxy) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.remaining == 0 || e.timedOut {
		return
	}
	if _, ok := e.got[p.idx]; ok || !e.check(p) {
		return
	}
	e.got[p.idx] = time.Since(e.at)
	if e.remaining--; e.remaining == 0 {
		close(e.finished)
	}
}

// edits makes the edits and tracks what the proxies received.
type edits struct {
	s       *soak
	timeout time.Duration

	mu      sync.RWMutex
	pending []*edit
	all     []*edit
	// busy serialises the edits of one object, so that an edit's check
	// cannot be made true by the one before it.
	busy  map[string]chan struct{}
	state map[string]bool // each object's state, flipped by its edits
}

func newEdits(s *soak, timeout time.Duration) *edits {
	return &edits{s: s, timeout: timeout, busy: map[string]chan struct{}{}}
}

// observe lets the pending edits of typeURL look at p after a response.
func (t *edits) observe(p *proxy, typeURL string) {
	t.mu.RLock()
	pend := t.pending
	t.mu.RUnlock()
	for _, e := range pend {
		if e.typeURL == typeURL && e.affects[p.idx] {
			e.try(p)
		}
	}
}

// errAllBusy says every object's last edit is still on its way.
var errAllBusy = errors.New("every app's last edit is still on its way")

// errBusy says the object's last edit is still on its way.
var errBusy = errors.New("the last edit of the object is still on its way")

// spec is one edit to make.
type spec struct {
	kind, what, typeURL string
	affected            []*proxy
	check               func(*proxy) bool
	write               func(context.Context) error
	timeout             time.Duration // 0: the edits' timeout
	since               time.Time     // when the change began; zero: now, before the write
}

// run makes the edit build returns as an edit of object obj, unless obj's
// last edit is still on its way (errBusy). build runs once obj is taken,
// so that it may flip obj's state. It returns once the write is done; the
// edit completes in the background.
func (t *edits) run(ctx context.Context, obj string, build func() spec) error {
	done := make(chan struct{})
	t.mu.Lock()
	if prev := t.busy[obj]; prev != nil {
		select {
		case <-prev:
		default:
			t.mu.Unlock()
			return errBusy
		}
	}
	t.busy[obj] = done
	t.mu.Unlock()
	sp := build()
	timeout := cmp.Or(sp.timeout, t.timeout)
	e := &edit{obj: obj, kind: sp.kind, what: sp.what, typeURL: sp.typeURL, affects: make([]bool, len(t.s.proxies)), check: sp.check,
		got: map[int]time.Duration{}, remaining: len(sp.affected), finished: make(chan struct{}), at: time.Now()}
	if !sp.since.IsZero() {
		e.at = sp.since
	}
	for _, p := range sp.affected {
		e.affects[p.idx] = true
	}
	if e.remaining == 0 {
		close(e.finished)
	}
	t.mu.Lock()
	t.pending = append(slices.Clone(t.pending), e)
	t.all = append(t.all, e)
	t.mu.Unlock()
	err := sp.write(ctx)
	if err != nil {
		// Not made: it counts among the failed writes, not the edits.
		e.mu.Lock()
		e.failed = true
		e.mu.Unlock()
		err = fmt.Errorf("edit %s: %w", sp.what, err)
	}
	// A proxy that holds the change already (none should before the
	// write) is counted now.
	for _, p := range sp.affected {
		e.try(p)
	}
	go func() {
		defer close(done)
		select {
		case <-e.finished:
		case <-time.After(timeout):
			e.mu.Lock()
			e.timedOut = true
			e.mu.Unlock()
		case <-ctx.Done():
		}
		t.mu.Lock()
		// Copy on write: observe reads the slice without the lock.
		t.pending = slices.DeleteFunc(slices.Clone(t.pending), func(x *edit) bool { return x == e })
		t.mu.Unlock()
	}()
	return err
}

// next makes the next policy edit in the round (*n counts them): an
// endpoint edit, then a TrafficTarget edit, over the apps in turn,
// skipping an object whose last edit is still on its way.
func (t *edits) next(ctx context.Context, n *int) error {
	objects := 2 * len(t.s.apps)
	for range objects {
		k := *n % objects
		*n++
		a := t.s.apps[k/2]
		var err error
		if k%2 == 0 {
			err = t.endpoint(ctx, a)
		} else {
			err = t.trafficTarget(ctx, a)
		}
		if !errors.Is(err, errBusy) {
			return err
		}
	}
	return errAllBusy
}

// wait waits until every edit made so far finished or timed out, or ctx
// ends.
func (t *edits) wait(ctx context.Context) {
	t.mu.RLock()
	var chans []chan struct{}
	for _, c := range t.busy {
		chans = append(chans, c)
	}
	t.mu.RUnlock()
	for _, c := range chans {
		select {
		case <-c:
		case <-ctx.Done():
			return
		}
	}
}

// endpoint flips a's second pod between Ready and NotReady: the proxies
// that call a must then hold a's load assignment with, or without, its IP.
func (t *edits) endpoint(ctx context.Context, a *app) error {
	return t.run(ctx, "endpoints/"+a.name, func() spec {
		t.mu.Lock()
		ready := t.flip("endpoints/"+a.name, true)
		t.mu.Unlock()
		verb := "NotReady"
		if ready {
			verb = "Ready"
		}
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: a.ns, Name: a.name + "-1"}}
		return spec{kind: "endpoint", what: fmt.Sprintf("pod %s/%s-1 %s", a.ns, a.name, verb), typeURL: resourcev3.EndpointType,
			affected: t.s.proxiesOf(caller(t.s.apps, a)),
			check: func(p *proxy) bool {
				res := p.heldRes(resourcev3.EndpointType, a.cluster)
				if res == nil {
					return false
				}
				cla := &endpointv3.ClusterLoadAssignment{}
				if res.UnmarshalTo(cla) != nil {
					return false
				}
				return slices.Contains(claIPs(cla), a.extraIP) == ready
			},
			write: func(ctx context.Context) error {
				var err error
				if ready {
					_, err = t.s.kubelet.MakeReady(ctx, pod, a.extraIP)
				} else {
					_, err = t.s.kubelet.MakeNotReady(ctx, pod, a.extraIP)
				}
				return err
			}}
	})
}

// trafficTarget adds or removes a's extra source: that source's proxies
// must then hold, or not, a's cluster.
func (t *edits) trafficTarget(ctx context.Context, a *app) error {
	return t.run(ctx, "traffictarget/"+a.name, func() spec {
		t.mu.Lock()
		allow := t.flip("traffictarget/"+a.name, false)
		t.mu.Unlock()
		src := extraSource(t.s.apps, a)
		verb, sources := "removes", []*app{caller(t.s.apps, a)}
		if allow {
			verb, sources = "adds", append(sources, src)
		}
		return spec{kind: "traffic-target", what: fmt.Sprintf("TrafficTarget %s/%s %s source %s", a.ns, a.name, verb, src.name),
			typeURL: resourcev3.ClusterType, affected: t.s.proxiesOf(src),
			check: func(p *proxy) bool { return p.holds(resourcev3.ClusterType, a.cluster) == allow },
			write: func(ctx context.Context) error { return setSources(ctx, t.s.cluster, a, sources...) }}
	})
}

// flip flips obj's state, which starts at initial, and returns the new
// one; t.mu is held.
func (t *edits) flip(obj string, initial bool) bool {
	if t.state == nil {
		t.state = map[string]bool{}
	}
	cur, ok := t.state[obj]
	if !ok {
		cur = initial
	}
	t.state[obj] = !cur
	return !cur
}

// burst makes n policy edits one after the other without waiting for
// them, calling mid after half of them were written.
func (t *edits) burst(ctx context.Context, n *int, size int, mid func() error) error {
	var errs []error
	for i := range size {
		if i == size/2 && mid != nil {
			if err := mid(); err != nil {
				return err
			}
		}
		if err := t.next(ctx, n); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// rotation tracks a root rotation step as an edit of every proxy: it is
// complete when check holds on each.
func (t *edits) rotation(ctx context.Context, what string, since time.Time, typeURL string, timeout time.Duration, check func(*proxy) bool) error {
	return t.run(ctx, "rotation/"+what, func() spec {
		return spec{kind: "rotation", what: what, typeURL: typeURL, affected: t.s.proxies, check: check,
			write: func(context.Context) error { return nil }, timeout: timeout, since: since}
	})
}

// claIPs lists the endpoint addresses of a load assignment.
func claIPs(cla *endpointv3.ClusterLoadAssignment) []string {
	var out []string
	for _, l := range cla.GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			out = append(out, e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
		}
	}
	return out
}

// editStats summarise the edits.
type editStats struct {
	n, notConverged, missing int
	failed                   int // writes the apiserver refused (or the soak's end cut)
	byKind                   map[string]int
	p50, p99, max            time.Duration
	proxyP99                 time.Duration
	// slowest are the slowest edits and those not converged, described.
	slowest []string
}

func (t *edits) stats() editStats {
	t.mu.RLock()
	all := slices.Clone(t.all)
	t.mu.RUnlock()
	st := editStats{byKind: map[string]int{}}
	var conv, per []time.Duration
	type slow struct {
		d    time.Duration
		what string
	}
	var slows []slow
	for _, e := range all {
		if e.kind == "rotation" {
			continue
		}
		e.mu.Lock()
		if e.failed {
			st.failed++
			e.mu.Unlock()
			continue
		}
		st.n++
		st.byKind[e.kind]++
		var last time.Duration
		for _, g := range e.got {
			per = append(per, g)
			last = max(last, g)
		}
		if e.remaining > 0 {
			st.notConverged++
			st.missing += e.remaining
			var miss []string
			for i, a := range e.affects {
				if _, ok := e.got[i]; a && !ok && len(miss) < 3 {
					miss = append(miss, t.s.proxies[i].describe())
				}
			}
			slows = append(slows, slow{time.Hour, fmt.Sprintf("%s at %s: %d of %d proxies never got it, e.g. %s", e.what, t.s.rec.at(e.at),
				e.remaining, e.remaining+len(e.got), strings.Join(miss, "; "))})
		} else {
			conv = append(conv, last)
			slows = append(slows, slow{last, fmt.Sprintf("%s at %s: %s", e.what, t.s.rec.at(e.at), ms(last))})
		}
		e.mu.Unlock()
	}
	st.p50, st.p99, st.max = quantile(conv, 0.5), quantile(conv, 0.99), quantile(conv, 1)
	st.proxyP99 = quantile(per, 0.99)
	slices.SortFunc(slows, func(a, b slow) int { return cmp.Compare(b.d, a.d) })
	for _, x := range slows[:min(len(slows), 5)] {
		st.slowest = append(st.slowest, x.what)
	}
	return st
}

// quantile is the q-quantile of d (nearest rank); 0 for none.
func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	d = slices.Clone(d)
	slices.Sort(d)
	i := int(q*float64(len(d))+0.5) - 1
	return d[min(max(i, 0), len(d)-1)]
}

// rotationStep is how a root rotation step reached the proxies.
type rotationStep struct {
	what      string
	converged time.Duration // until the last proxy had it; 0 when not all did
	missing   int
}

func (t *edits) rotationStats() []rotationStep {
	t.mu.RLock()
	all := slices.Clone(t.all)
	t.mu.RUnlock()
	var out []rotationStep
	for _, e := range all {
		if e.kind != "rotation" {
			continue
		}
		e.mu.Lock()
		st := rotationStep{what: e.what, missing: e.remaining}
		if e.remaining == 0 {
			for _, g := range e.got {
				st.converged = max(st.converged, g)
			}
		}
		e.mu.Unlock()
		out = append(out, st)
	}
	return out
}
