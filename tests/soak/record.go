package soak

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc/status"
)

// recorder collects what the proxies and the fault runner saw.
type recorder struct {
	mu             sync.Mutex
	start          time.Time
	gaps           []gap
	regressions    int
	sameBack       int
	wrongIDs       int
	viewBack       int
	unparsedVers   int
	tlsErrors      int
	examples       map[string][]string // by figure, the first few
	endedBy        map[string]int      // stream ends by gRPC code
	faults         []faultEvent
	expiredProxies map[int]bool // proxies seen holding an expired service-cert
	maxExpired     time.Duration
}

// gap is a time a proxy was without a control plane: from the end of a
// stream that had delivered its config to the first response of the next
// one that did.
type gap struct {
	proxy      int
	start, end time.Time
}

func (g gap) dur() time.Duration { return g.end.Sub(g.start) }

// faultEvent is one fault injected, from its start to its end (the
// component back); the gaps that start from start until impact belong to
// it.
type faultEvent struct {
	name               string
	start, end, impact time.Time
	err                error
}

func newRecorder() *recorder {
	return &recorder{examples: map[string][]string{}, endedBy: map[string]int{}, expiredProxies: map[int]bool{}}
}

// at is t as a time from the soak's start, m:ss.
func (r *recorder) at(t time.Time) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return clock(t.Sub(r.start))
}

// setStart starts the soak's clock.
func (r *recorder) setStart(t time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.start = t
}

func (r *recorder) example(figure, what string) {
	if len(r.examples[figure]) < 5 {
		r.examples[figure] = append(r.examples[figure], what)
	}
}

func (r *recorder) gap(p *proxy, from, to time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gaps = append(r.gaps, gap{proxy: p.idx, start: from, end: to})
}

func (r *recorder) regression(what string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.regressions++
	r.example("version regressions", what)
}

// sameContentBack counts a resource served under an older generation than
// the one held with the same content hash: not a rollback of config, but
// two edges that give one record different versions.
func (r *recorder) sameContentBack(what string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sameBack++
	r.example("same content under an older version", what)
}

func (r *recorder) wrongIdentity(what string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.wrongIDs++
	r.example("wrong-identity secrets", what)
}

func (r *recorder) unparsed(v string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unparsedVers++
	r.example("versions without a generation", v)
}

// sysVersion counts a response whose system version is below one the
// proxy was sent earlier for the type, from an edge whose view of that
// type is older but, for what the proxy holds, no different (the
// regressions are counted by apply).
func (r *recorder) sysVersion(p *proxy, typeURL string, sys ver) {
	// p.mu is held by the caller.
	if p.sysTop == nil {
		p.sysTop = map[string]ver{}
	}
	if sys.less(p.sysTop[typeURL]) {
		r.mu.Lock()
		r.viewBack++
		r.mu.Unlock()
		return
	}
	p.sysTop[typeURL] = sys
}

func (r *recorder) tlsError(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tlsErrors++
	r.example("edge certificates the proxies refused", err.Error())
}

func (r *recorder) streamEnded(err error) {
	code := "ok"
	switch {
	case err == nil || errors.Is(err, io.EOF):
	default:
		code = status.Code(err).String()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.endedBy[code]++
}

func (r *recorder) fault(f faultEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.faults = append(r.faults, f)
}

func (r *recorder) expired(p *proxy, by time.Duration) {
	what := p.describe()
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.expiredProxies[p.idx] {
		r.example("service-certs held past their expiry", fmt.Sprintf("at %s: %s, %s past expiry", clock(time.Since(r.start)), what, by.Round(time.Millisecond)))
	}
	r.expiredProxies[p.idx] = true
	r.maxExpired = max(r.maxExpired, by)
}

// phaseOf names the fault a gap starting at t belongs to: the last one
// that started before t and whose impact had not ended.
func (r *recorder) phaseOf(t time.Time) string {
	name := "steady (max-connection-age reconnects, certificate renewals)"
	var best time.Time
	for _, f := range r.faults {
		if !f.start.After(t) && t.Before(f.impact) && f.start.After(best) {
			name, best = f.name, f.start
		}
	}
	return name
}

// phaseRow is one line of the per-fault table.
type phaseRow struct {
	name     string
	at, took time.Duration
	gaps     int
	longest  time.Duration
	p99      time.Duration
	err      error
}

// phases groups the gaps by fault, in the order the faults happened, the
// steady state first.
func (r *recorder) phases() []phaseRow {
	r.mu.Lock()
	defer r.mu.Unlock()
	byName := map[string][]time.Duration{}
	for _, g := range r.gaps {
		n := r.phaseOf(g.start)
		byName[n] = append(byName[n], g.dur())
	}
	steady := r.phaseOf(time.Time{})
	rows := []phaseRow{{name: steady}}
	for _, f := range r.faults {
		rows = append(rows, phaseRow{name: f.name, at: f.start.Sub(r.start), took: f.end.Sub(f.start), err: f.err})
	}
	seen := map[string]bool{}
	for i := range rows {
		ds := byName[rows[i].name]
		if seen[rows[i].name] {
			continue // a fault repeated under one name: its gaps are on its first row
		}
		seen[rows[i].name] = true
		sort.Slice(ds, func(a, b int) bool { return ds[a] < ds[b] })
		rows[i].gaps = len(ds)
		rows[i].longest = quantile(ds, 1)
		rows[i].p99 = quantile(ds, 0.99)
	}
	return rows
}

// longestGap is the longest gap, and the proxy that had it.
func (r *recorder) longestGap() (gap, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var best gap
	for _, g := range r.gaps {
		if g.dur() > best.dur() {
			best = g
		}
	}
	return best, len(r.gaps) > 0
}
