package scale

import (
	"bufio"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/tests/stack"
)

// stages records the pipeline's timestamps between the apiserver and the
// proxies:
//   - every EndpointSlice write (by the endpointslice controller, between
//     a pod's status and the watcher), when the harness's own watch on the
//     apiserver received it;
//   - every write the smi-watcher makes to KV mesh-observed, at the time
//     the NATS server stored it (the JetStream message timestamp);
//   - every generation record the policy-compiler writes to KV
//     mesh-compiled, at the time the NATS server stored it (the compiler
//     writes it last, after the generation's resources);
//   - every edge's commit of each generation: the time of its "generation
//     applied" log line, logged (at debug level, in JSON, to the
//     millisecond) just after the edge's pool committed it.
type stages struct {
	mu       sync.Mutex
	slices   []observedWrite // EndpointSlice events the harness's own watch saw
	observed []observedWrite
	gens     map[uint64]time.Time
	edges    []*edgeLog
}

type observedWrite struct {
	key string
	at  time.Time
}

// edgeLog reads one edge's commits from its output.
type edgeLog struct {
	name    string
	proc    *stack.Proc
	offset  int
	commits map[uint64]time.Time
}

// watchStages starts the watches; they stop with ctx. It returns once
// both watches delivered their initial values.
func watchStages(ctx context.Context, admin *bus.Conn) (*stages, error) {
	s := &stages{gens: map[uint64]time.Time{}}
	obs, err := admin.Bucket(ctx, bus.BucketObserved)
	if err != nil {
		return nil, err
	}
	comp, err := admin.Bucket(ctx, bus.BucketCompiled)
	if err != nil {
		return nil, err
	}
	ow, err := obs.Watch(ctx, ">")
	if err != nil {
		return nil, err
	}
	gw, err := comp.Watch(ctx, layout.GenerationKey)
	if err != nil {
		ow.Stop()
		return nil, err
	}
	init := make(chan struct{}, 2)
	go func() {
		live := false
		for ev := range ow.Events() {
			switch {
			case ev.Kind == bus.EventInitialized:
				live = true
				init <- struct{}{}
			case live:
				s.mu.Lock()
				s.observed = append(s.observed, observedWrite{key: ev.Key, at: ev.Time})
				s.mu.Unlock()
			}
		}
	}()
	go func() {
		for ev := range gw.Events() {
			switch ev.Kind {
			case bus.EventInitialized:
				init <- struct{}{}
			case bus.EventPut:
				var g meshv1.Generation
				if ev.Decode(&g) == nil {
					s.mu.Lock()
					s.gens[g.GetNumber()] = ev.Time
					s.mu.Unlock()
				}
			}
		}
	}()
	for range 2 {
		select {
		case <-init:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Minute):
			return nil, errTimeout("the KV watches' initial values")
		}
	}
	return s, nil
}

type errTimeout string

func (e errTimeout) Error() string { return "timed out waiting for " + string(e) }

// watchSlices records the EndpointSlice events from now on; it stops
// with ctx.
func (s *stages) watchSlices(ctx context.Context, cs kubernetes.Interface) error {
	list, err := cs.DiscoveryV1().EndpointSlices("").List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		return err
	}
	w, err := cs.DiscoveryV1().EndpointSlices("").Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		return err
	}
	go func() {
		defer w.Stop()
		for ev := range w.ResultChan() {
			at := time.Now()
			es, ok := ev.Object.(*discoveryv1.EndpointSlice)
			if !ok {
				continue
			}
			s.mu.Lock()
			s.slices = append(s.slices, observedWrite{key: layout.ObservedKey(layout.KindEndpointSlice, es.Namespace, es.Name), at: at})
			s.mu.Unlock()
		}
	}()
	return nil
}

// lastSlice is the time of the last EndpointSlice event in (from, to]
// whose key match accepts; zero when none.
func (s *stages) lastSlice(from, to time.Time, match func(layout.Observed) bool) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return last(s.slices, from, to, match)
}

func last(ws []observedWrite, from, to time.Time, match func(layout.Observed) bool) time.Time {
	var t time.Time
	for _, w := range ws {
		if !w.at.After(from) || w.at.After(to) {
			continue
		}
		if o, err := layout.ParseObserved(w.key); err == nil && match(o) && w.at.After(t) {
			t = w.at
		}
	}
	return t
}

// addEdge follows the commits of an edge process (started with
// --log-format json --log-level debug).
func (s *stages) addEdge(name string, p *stack.Proc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.edges = append(s.edges, &edgeLog{name: name, proc: p, commits: map[uint64]time.Time{}})
}

// lastObserved is the time of the last watcher write in (from, to] whose
// key match accepts; zero when none.
func (s *stages) lastObserved(from, to time.Time, match func(layout.Observed) bool) (time.Time, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var last time.Time
	var key string
	for _, w := range s.observed {
		if !w.at.After(from) || w.at.After(to) {
			continue
		}
		o, err := layout.ParseObserved(w.key)
		if err == nil && match(o) && w.at.After(last) {
			last, key = w.at, w.key
		}
	}
	return last, key
}

// generation is when the NATS server stored generation g's record.
func (s *stages) generation(g uint64) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.gens[g]
	return t, ok
}

// commits is, per edge, when it committed generation g (or, if it never
// committed g itself, the first later one it committed); zero when not
// found.
func (s *stages) commits(g uint64) []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]time.Time, len(s.edges))
	for i, e := range s.edges {
		e.read()
		if t, ok := e.commits[g]; ok {
			out[i] = t
			continue
		}
		best := uint64(0)
		for n, t := range e.commits {
			if n > g && (best == 0 || n < best) {
				best, out[i] = n, t
			}
		}
	}
	return out
}

// read parses the edge's new output lines.
func (e *edgeLog) read() {
	out := e.proc.Output()
	if e.offset > len(out) {
		e.offset = 0
	}
	sc := bufio.NewScanner(strings.NewReader(out[e.offset:]))
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	consumed := e.offset
	for sc.Scan() {
		line := sc.Bytes()
		consumed += len(line) + 1
		if consumed > len(out) { // a partial last line: read it next time
			consumed -= len(line) + 1
			break
		}
		if !strings.Contains(string(line), "applied") {
			continue
		}
		var rec struct {
			Msg        string `json:"msg"`
			Generation uint64 `json:"generation"`
			Time       string `json:"time"`
		}
		if json.Unmarshal(line, &rec) != nil || !strings.HasPrefix(rec.Msg, "generation applied") {
			continue
		}
		t, err := time.Parse("2006-01-02T15:04:05.000Z07:00", rec.Time)
		if err == nil {
			e.commits[rec.Generation] = t
		}
	}
	e.offset = consumed
}
