package scale

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/openservicemesh/osm/libs/identity"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/xdstest"
	"github.com/openservicemesh/osm/tests/stack"
)

// The fleet is the simulated proxies' own process: the harness starts it
// (RunFleet, behind `scale fleet` or the test binary with EnvFleet set)
// and drives it with one JSON request a line on its stdin; it answers one
// JSON reply a line on its stdout. Its proxies are the load generator's
// delta ADS clients (xdstest.StartProxy), each over its own mTLS
// connection with an xDS client certificate of its identity, signed by a
// throw-away CA the fleet makes and whose root it writes to a file the
// edges trust (--tls-client-ca-file).

// EnvFleet, set to the root file's path, makes a test binary's TestMain
// run the fleet instead of the tests.
const EnvFleet = "OSM_SCALE_FLEET_ROOT"

// proxyTypes are what every simulated proxy subscribes to, as wildcards,
// in Envoy's order. Proxies with SDS also ask for their two secrets.
var proxyTypes = []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType}

// ProxySpec is one proxy to connect.
type ProxySpec struct {
	Namespace      string `json:"ns"`
	ServiceAccount string `json:"sa"`
	// SDS subscribes to the service-cert and root-cert secrets too.
	SDS bool `json:"sds,omitempty"`
}

// Cond is what a proxy must receive: a response of Type holding resource
// Name (any resource of the type when empty) whose serialised bytes
// contain every Contains string and none of Lacks, and, with Changed, at
// a version other than the one the proxy held when the condition was
// registered. A proxy's conditions are met at the ACK of the response that
// meets the last of them.
type Cond struct {
	Proxy    int      `json:"proxy"`
	Type     string   `json:"type"`
	Name     string   `json:"name,omitempty"`
	Contains []string `json:"contains,omitempty"`
	Lacks    []string `json:"lacks,omitempty"`
	Changed  bool     `json:"changed,omitempty"`
}

// fleetRequest is one line the harness sends.
type fleetRequest struct {
	Op string `json:"op"` // connect, reconnect, watch, holders
	ID int    `json:"id"`
	// connect: the edges' ADS addresses, the file of the mesh's roots
	// that verify them, and the proxies to add (their indexes follow the
	// ones already connected); Wait waits for their initial sync.
	Edges   []string      `json:"edges,omitempty"`
	Roots   string        `json:"roots,omitempty"`
	Proxies []ProxySpec   `json:"proxies,omitempty"`
	Wait    bool          `json:"wait,omitempty"`
	Timeout time.Duration `json:"timeout,omitempty"`
	// reconnect: every proxy moves to edge (index mod Edges), as a
	// restarted proxy (holding nothing), and the reply waits for each
	// one's first responses.
	// watch: the conditions, answered when all are met or Timeout passes.
	Conds []Cond `json:"conds,omitempty"`
	// holders: the proxies holding resource Name of Type now.
	Type string `json:"type,omitempty"`
	Name string `json:"name,omitempty"`
}

// Ack is when one proxy met its conditions: the wall clock (Unix
// nanoseconds) at which the fleet read the response that met the last of
// them, just after the proxy sent its ACK, and the compiled generation of
// the responses that met them (the highest system version).
type Ack struct {
	Proxy int    `json:"proxy"`
	At    int64  `json:"at"`
	Gen   uint64 `json:"gen"`
}

// fleetReply is one line the fleet answers.
type fleetReply struct {
	ID  int    `json:"id"`
	Err string `json:"err,omitempty"`
	// connect: how many of the new proxies synced, and when the last did.
	Synced   int   `json:"synced,omitempty"`
	SyncedAt int64 `json:"synced_at,omitempty"`
	// watch: the proxies that met their conditions, those that had not by
	// the timeout, and those that met them already at registration (before
	// the edit: a harness error).
	Acks    []Ack `json:"acks,omitempty"`
	Missing []int `json:"missing,omitempty"`
	Already []int `json:"already,omitempty"`
	// holders
	Holders []int `json:"holders,omitempty"`
}

// fleet is the fleet process's state.
type fleet struct {
	ctx  context.Context
	ca   *xdstest.CA
	out  *json.Encoder
	outM sync.Mutex

	mu      sync.Mutex
	proxies []*fleetProxy
	certs   map[string]tls.Certificate // identity → xDS client certificate
	waiting map[int][]*cond            // conditions of proxies not connected yet
}

// RunFleet runs the fleet: it writes its CA's root to rootFile, prints
// "ready", and serves requests from in until in ends or ctx does.
func RunFleet(ctx context.Context, rootFile string, in io.Reader, out io.Writer) error {
	ca, err := xdstest.NewCA("scale-proxies")
	if err != nil {
		return err
	}
	if err := os.WriteFile(rootFile, ca.CertPEM, 0o600); err != nil {
		return err
	}
	f := &fleet{ctx: ctx, ca: ca, out: json.NewEncoder(out), certs: map[string]tls.Certificate{}, waiting: map[int][]*cond{}}
	f.reply(fleetReply{ID: 0})
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<30)
	for sc.Scan() {
		var req fleetRequest
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			return fmt.Errorf("fleet: bad request: %w", err)
		}
		switch req.Op {
		case "connect":
			go func() { f.reply(f.connect(req)) }()
		case "reconnect":
			go func() { f.reply(f.reconnect(req)) }()
		case "watch":
			f.watch(req)
		case "holders":
			f.reply(fleetReply{ID: req.ID, Holders: f.holders(req.Type, req.Name)})
		default:
			f.reply(fleetReply{ID: req.ID, Err: fmt.Sprintf("unknown op %q", req.Op)})
		}
	}
	f.mu.Lock()
	ps := f.proxies
	f.mu.Unlock()
	for _, p := range ps {
		p.stop()
	}
	return sc.Err()
}

func (f *fleet) reply(r fleetReply) {
	f.outM.Lock()
	defer f.outM.Unlock()
	_ = f.out.Encode(r)
}

// cert is the xDS client certificate of a proxy of ns/sa.
func (f *fleet) cert(ns, sa string) (tls.Certificate, error) {
	key := ns + "/" + sa
	f.mu.Lock()
	c, ok := f.certs[key]
	f.mu.Unlock()
	if ok {
		return c, nil
	}
	c, _, _, err := f.ca.Leaf(identity.New(stack.TrustDomain, ns, sa).URLFor(identity.UsageXDSClient).String())
	if err != nil {
		return tls.Certificate{}, err
	}
	f.mu.Lock()
	f.certs[key] = c
	f.mu.Unlock()
	return c, nil
}

// connect starts req.Proxies, each on edge (index mod edges).
func (f *fleet) connect(req fleetRequest) fleetReply {
	pem, err := os.ReadFile(req.Roots)
	if err != nil {
		return fleetReply{ID: req.ID, Err: err.Error()}
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return fleetReply{ID: req.ID, Err: "no root in " + req.Roots}
	}
	edgeID := identity.ControlPlaneURI(stack.TrustDomain, identity.RoleXDSEdge).String()
	var fresh []*fleetProxy
	for _, spec := range req.Proxies {
		cert, err := f.cert(spec.Namespace, spec.ServiceAccount)
		if err != nil {
			return fleetReply{ID: req.ID, Err: err.Error()}
		}
		f.mu.Lock()
		idx := len(f.proxies)
		p := &fleetProxy{idx: idx, spec: spec, held: map[string]map[string]heldRes{}, synced: make(chan struct{})}
		f.proxies = append(f.proxies, p)
		// Conditions registered before the proxy connected.
		if cs := f.waiting[idx]; len(cs) > 0 {
			p.add(cs)
			delete(f.waiting, idx)
		}
		f.mu.Unlock()
		cc, err := stack.DialEdge(req.Edges[idx%len(req.Edges)], cert, roots, edgeID)
		if err != nil {
			return fleetReply{ID: req.ID, Err: fmt.Sprintf("proxy %d: %v", idx, err)}
		}
		p.cc = cc
		fresh = append(fresh, p)
		ctx, cancel := context.WithCancel(f.ctx)
		p.cancel = cancel
		p.done = make(chan struct{})
		go p.run(ctx)
	}
	if !req.Wait {
		return fleetReply{ID: req.ID}
	}
	return f.waitSynced(req, fresh)
}

// reconnect moves every proxy to edge (index mod len(req.Edges)).
func (f *fleet) reconnect(req fleetRequest) fleetReply {
	pem, err := os.ReadFile(req.Roots)
	if err != nil {
		return fleetReply{ID: req.ID, Err: err.Error()}
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return fleetReply{ID: req.ID, Err: "no root in " + req.Roots}
	}
	edgeID := identity.ControlPlaneURI(stack.TrustDomain, identity.RoleXDSEdge).String()
	f.mu.Lock()
	ps := slices.Clone(f.proxies)
	f.mu.Unlock()
	for _, p := range ps {
		p.stop()
		// As a restarted Envoy: nothing held, so that the new edge sends
		// every type (a delta stream that resumes with up-to-date
		// versions may get no response at all).
		p.mu.Lock()
		p.held = map[string]map[string]heldRes{}
		p.mu.Unlock()
		cert, err := f.cert(p.spec.Namespace, p.spec.ServiceAccount)
		if err != nil {
			return fleetReply{ID: req.ID, Err: err.Error()}
		}
		if p.cc, err = stack.DialEdge(req.Edges[p.idx%len(req.Edges)], cert, roots, edgeID); err != nil {
			return fleetReply{ID: req.ID, Err: fmt.Sprintf("proxy %d: %v", p.idx, err)}
		}
		p.synced = make(chan struct{})
		ctx, cancel := context.WithCancel(f.ctx)
		p.cancel, p.done = cancel, make(chan struct{})
		go p.run(ctx)
	}
	return f.waitSynced(req, ps)
}

// waitSynced waits until every proxy of ps has its first response of each
// type on its current stream.
func (f *fleet) waitSynced(req fleetRequest, fresh []*fleetProxy) fleetReply {
	deadline := time.After(req.Timeout)
	n := 0
	var last int64
	for _, p := range fresh {
		select {
		case <-p.synced:
			n++
			last = max(last, p.syncedAt.Load())
		case <-deadline:
			return fleetReply{ID: req.ID, Synced: n, Err: fmt.Sprintf("%d of %d proxies synced within %s; e.g. proxy %d (%s/%s) has %s",
				n, len(fresh), req.Timeout, p.idx, p.spec.Namespace, p.spec.ServiceAccount, p.describe())}
		case <-f.ctx.Done():
			return fleetReply{ID: req.ID, Err: f.ctx.Err().Error()}
		}
	}
	return fleetReply{ID: req.ID, Synced: n, SyncedAt: last}
}

// watch registers req.Conds and answers when every proxy met its own, or
// at the timeout.
func (f *fleet) watch(req fleetRequest) {
	w := &watch{id: req.ID, left: map[int]int{}, acks: map[int]*Ack{}, done: make(chan struct{})}
	byProxy := map[int][]*cond{}
	for _, c := range req.Conds {
		byProxy[c.Proxy] = append(byProxy[c.Proxy], &cond{Cond: c, w: w})
		if w.left[c.Proxy]++; w.left[c.Proxy] == 1 {
			w.open++
		}
	}
	if w.open == 0 {
		close(w.done)
	}
	var already []int
	f.mu.Lock()
	for idx, cs := range byProxy {
		if idx >= len(f.proxies) {
			// A proxy not connected yet: its conditions wait for it.
			f.pending(idx, cs)
			continue
		}
		if n := f.proxies[idx].add(cs); n > 0 {
			already = append(already, idx)
			w.mu.Lock()
			for range n {
				w.settle(idx)
			}
			w.mu.Unlock()
		}
	}
	f.mu.Unlock()
	go func() {
		select {
		case <-w.done:
		case <-time.After(req.Timeout):
		case <-f.ctx.Done():
		}
		w.mu.Lock()
		r := fleetReply{ID: req.ID, Already: already}
		for idx, n := range w.left {
			if n > 0 {
				r.Missing = append(r.Missing, idx)
			}
		}
		for _, a := range w.acks {
			if w.left[a.Proxy] == 0 {
				r.Acks = append(r.Acks, *a)
			}
		}
		w.closed = true
		w.mu.Unlock()
		f.reply(r)
	}()
}

// pending keeps the conditions of a proxy not connected yet; f.mu is
// held.
func (f *fleet) pending(idx int, cs []*cond) {
	f.waiting[idx] = append(f.waiting[idx], cs...)
}

// holders lists the proxies that hold typeURL's name now.
func (f *fleet) holders(typeURL, name string) []int {
	f.mu.Lock()
	ps := f.proxies
	f.mu.Unlock()
	var out []int
	for _, p := range ps {
		p.mu.Lock()
		_, ok := p.held[typeURL][name]
		p.mu.Unlock()
		if ok {
			out = append(out, p.idx)
		}
	}
	return out
}

// watch is one registered set of conditions.
type watch struct {
	id     int
	mu     sync.Mutex
	left   map[int]int // proxy → conditions not met yet
	acks   map[int]*Ack
	closed bool
	done   chan struct{}
	open   int // proxies with conditions left; done closes at 0
}

// met books c as met at the response read at t, carrying gen.
func (w *watch) met(proxy int, t time.Time, gen uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	a := w.acks[proxy]
	if a == nil {
		a = &Ack{Proxy: proxy}
		w.acks[proxy] = a
	}
	a.At = max(a.At, t.UnixNano())
	a.Gen = max(a.Gen, gen)
	w.settle(proxy)
}

// settle books one condition of proxy as settled (met, or met already);
// w.mu is held.
func (w *watch) settle(proxy int) {
	if w.left[proxy]--; w.left[proxy] == 0 {
		if w.open--; w.open == 0 {
			close(w.done)
		}
	}
}

// cond is a registered condition.
type cond struct {
	Cond
	w        *watch
	baseline map[string]string // name → version held at registration (Changed)
	done     bool
}

// check reports whether the resource name (version v, bytes a) meets c.
func (c *cond) check(name, v string, a *anypb.Any) bool {
	if c.Name != "" && c.Name != name {
		return false
	}
	if c.Changed {
		if old, ok := c.baseline[name]; ok && old == v {
			return false
		}
	}
	for _, s := range c.Contains {
		if !bytes.Contains(a.GetValue(), []byte(s)) {
			return false
		}
	}
	for _, s := range c.Lacks {
		if bytes.Contains(a.GetValue(), []byte(s)) {
			return false
		}
	}
	return true
}

// heldRes is a resource a proxy holds.
type heldRes struct {
	version string
	res     *anypb.Any
}

// fleetProxy is one simulated proxy: it keeps its config across streams
// and reconnects, with what it holds as initial_resource_versions, when a
// stream ends.
type fleetProxy struct {
	idx    int
	spec   ProxySpec
	cc     *grpc.ClientConn
	cancel context.CancelFunc
	done   chan struct{}

	synced   chan struct{}
	syncedAt atomic.Int64

	mu    sync.Mutex
	held  map[string]map[string]heldRes
	seen  map[string]bool // types with a response on the current stream
	conds []*cond
}

// add registers cs; it returns how many are met already by what the
// proxy holds (those are left out).
func (p *fleetProxy) add(cs []*cond) (already int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		if c.Changed {
			c.baseline = map[string]string{}
			for n, h := range p.held[c.Type] {
				c.baseline[n] = h.version
			}
		}
		if !c.Changed && !c.noneHeld(p.held[c.Type]) {
			already++
			continue
		}
		p.conds = append(p.conds, c)
	}
	return already
}

// noneHeld reports that no held resource meets c already.
func (c *cond) noneHeld(hs map[string]heldRes) bool {
	for n, h := range hs {
		if c.check(n, h.version, h.res) {
			return false
		}
	}
	return true
}

func (p *fleetProxy) stop() {
	if p.cancel != nil {
		p.cancel()
		<-p.done
	}
	if p.cc != nil {
		p.cc.Close()
	}
}

// run keeps a stream open until ctx ends.
func (p *fleetProxy) run(ctx context.Context) {
	defer close(p.done)
	wait := time.Duration(0)
	for ctx.Err() == nil {
		if wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait/2 + rand.N(wait/2+1)):
			}
		}
		served, _ := p.stream(ctx)
		if served {
			wait = 0
			continue
		}
		wait = min(max(2*wait, 100*time.Millisecond), 5*time.Second)
	}
}

func (p *fleetProxy) types() []string {
	if p.spec.SDS {
		return append(append([]string(nil), proxyTypes...), resourcev3.SecretType)
	}
	return proxyTypes
}

// stream runs one ADS stream until it ends; served says it delivered a
// response.
func (p *fleetProxy) stream(ctx context.Context) (served bool, err error) {
	o := xdstest.ProxyOptions{NodeID: fmt.Sprintf("scale-%d.%s.%s", p.idx, p.spec.ServiceAccount, p.spec.Namespace), Delta: true,
		Types: p.types(), Initial: p.initialVersions()}
	if p.spec.SDS {
		o.Names = map[string][]string{resourcev3.SecretType: {layout.SecretServiceCert, layout.SecretRootCert}}
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	x, err := xdstest.StartProxy(sctx, p.cc, o)
	if err != nil {
		return false, err
	}
	defer x.Stop()
	p.mu.Lock()
	p.seen = map[string]bool{}
	p.mu.Unlock()
	for {
		r, err := x.Next(ctx)
		if err != nil {
			return served, err
		}
		served = true
		p.apply(r, time.Now())
	}
}

// initialVersions is what the proxy holds, by type, for a new stream;
// none for SDS, whose secrets are asked for by name.
func (p *fleetProxy) initialVersions() map[string]map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]map[string]string{}
	for t, hs := range p.held {
		if t == resourcev3.SecretType || len(hs) == 0 {
			continue
		}
		m := make(map[string]string, len(hs))
		for n, h := range hs {
			m[n] = h.version
		}
		out[t] = m
	}
	return out
}

// apply records a response the proxy ACKed, read at t, and checks the
// conditions of its type against it.
func (p *fleetProxy) apply(r xdstest.Response, t time.Time) {
	p.mu.Lock()
	hs := p.held[r.TypeURL]
	if hs == nil {
		hs = map[string]heldRes{}
		p.held[r.TypeURL] = hs
	}
	for n, a := range r.Resources {
		hs[n] = heldRes{version: r.Versions[n], res: a}
	}
	for _, n := range r.Removed {
		delete(hs, n)
	}
	type hit struct {
		c   *cond
		gen uint64
	}
	var hits []hit
	kept := p.conds[:0]
	for _, c := range p.conds {
		if c.Type != r.TypeURL {
			kept = append(kept, c)
			continue
		}
		met := false
		for n, a := range r.Resources {
			if c.check(n, r.Versions[n], a) {
				met = true
				break
			}
		}
		// The response's system version is the edge's generation when it
		// pushed: the one that brought the change (a resource's own
		// version keeps the generation that last changed its content, older
		// for a shared resource newly added to the proxy's group).
		gen := genOf(r.Version)
		if met {
			hits = append(hits, hit{c, gen})
		} else {
			kept = append(kept, c)
		}
	}
	p.conds = kept
	first := !p.seen[r.TypeURL]
	p.seen[r.TypeURL] = true
	all := len(p.seen) == len(p.types())
	p.mu.Unlock()
	for _, h := range hits {
		h.c.w.met(p.idx, t, h.gen)
	}
	if first && all {
		select {
		case <-p.synced:
		default:
			p.syncedAt.Store(t.UnixNano())
			close(p.synced)
		}
	}
}

// describe says what the proxy holds, for an error.
func (p *fleetProxy) describe() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var parts []string
	for _, t := range p.types() {
		parts = append(parts, fmt.Sprintf("%s: %d (response: %v)", short(t), len(p.held[t]), p.seen[t]))
	}
	return strings.Join(parts, ", ")
}

// genOf is the compiled generation of a version: "12", "<epoch>:12",
// "12.ab34" or "<epoch>:12.ab34" is 12; 0 when it has none.
func genOf(v string) uint64 {
	head, _, _ := strings.Cut(v, ".")
	if _, g, ok := strings.Cut(head, ":"); ok {
		head = g
	}
	n, err := strconv.ParseUint(head, 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// short is the xDS short name of a type URL.
func short(typeURL string) string {
	switch typeURL {
	case resourcev3.ClusterType:
		return "CDS"
	case resourcev3.EndpointType:
		return "EDS"
	case resourcev3.ListenerType:
		return "LDS"
	case resourcev3.RouteType:
		return "RDS"
	case resourcev3.SecretType:
		return "SDS"
	}
	return typeURL
}
