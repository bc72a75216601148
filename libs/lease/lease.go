// Package lease elects one active instance of a role with a lease held in
// a NATS KV bucket (mesh-leases), as the policy-compiler needs: one writer,
// warm standbys.
//
// The holder renews the lease every TTL/3 with a compare-and-set on the
// key's revision. A standby takes the lease over, bumping its term, once
// renew_time + TTL has passed. A holder that cannot renew for RenewDeadline
// (2/3 of TTL by default) steps down on its own, before any standby may
// take over, so two instances never both believe they lead (given clocks
// that agree within TTL/3). On a clean stop the holder releases the lease so
// a standby takes over at once. An instance restarted under the same holder
// name (the same pod) takes its old lease over at once, with a new term.
package lease

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/openservicemesh/osm/libs/bus"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// kv is what the elector needs of a bucket.
type kv interface {
	getLease(ctx context.Context, key string) (*meshv1.Lease, uint64, error)
	create(ctx context.Context, key string, l *meshv1.Lease) (uint64, error)
	update(ctx context.Context, key string, l *meshv1.Lease, rev uint64) (uint64, error)
	// redeclare declares the bucket again after it was lost.
	redeclare(ctx context.Context) error
}

// Options configure an Elector.
type Options struct {
	// Key of the lease in the bucket, e.g. layout.CompilerLeaseKey.
	Key string
	// Holder identifies this instance (its pod name).
	Holder string
	// TTL is how long a lease holds without renewal; default 15s.
	TTL time.Duration
	// RenewDeadline is how long a holder keeps leading without a successful
	// renewal; default 2/3 of TTL.
	RenewDeadline time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	// OnChange, when set, is told each change of leadership, with the term.
	OnChange func(leading bool, term uint64)
}

// Elector campaigns for one lease.
type Elector struct {
	store kv
	o     Options

	mu        sync.Mutex
	leading   bool
	term      uint64
	rev       uint64
	lastRenew time.Time
	changes   chan bool
	// seen is set once the lease was read: an elector may take over a
	// lease held under its own name (an earlier process of the same pod)
	// only before that, so two live processes misconfigured with one name
	// do not take it from each other in turn.
	seen bool
	// lastTerm is the newest term this elector saw in the bucket.
	lastTerm uint64
}

// New returns an elector for the lease o.Key in store.
func New(store *bus.Store, o Options) (*Elector, error) {
	if o.Key == "" || o.Holder == "" {
		return nil, errors.New("lease: key and holder are required")
	}
	if o.TTL <= 0 {
		o.TTL = 15 * time.Second
	}
	if o.RenewDeadline <= 0 || o.RenewDeadline >= o.TTL {
		o.RenewDeadline = o.TTL * 2 / 3
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Elector{store: busKV{store}, o: o, changes: make(chan bool, 1)}, nil
}

// Leading reports whether this instance holds the lease now: it won or
// renewed it less than RenewDeadline ago, read on the clock at this call.
// A campaign loop blocked in a NATS call cannot keep it true past the
// deadline, so a writer that asks before each write never writes once a
// standby may have taken over.
func (e *Elector) Leading() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.validLocked()
}

// Term is the term of the lease this instance holds, 0 when it does not
// (see Leading).
func (e *Elector) Term() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.validLocked() {
		return 0
	}
	return e.term
}

func (e *Elector) validLocked() bool {
	return e.leading && e.o.Now().Sub(e.lastRenew) < e.o.RenewDeadline
}

// Changes delivers the new leadership state after each change (only the
// latest is kept if the reader is slow).
func (e *Elector) Changes() <-chan bool { return e.changes }

func (e *Elector) set(leading bool, term uint64) {
	e.mu.Lock()
	changed := e.leading != leading
	e.leading, e.term = leading, term
	e.mu.Unlock()
	if !changed {
		return
	}
	select {
	case <-e.changes:
	default:
	}
	e.changes <- leading
	if e.o.OnChange != nil {
		e.o.OnChange(leading, term)
	}
}

// Run campaigns until ctx ends, then releases the lease if it holds it.
func (e *Elector) Run(ctx context.Context) error {
	t := time.NewTicker(e.o.TTL / 3)
	defer t.Stop()
	for {
		e.tryOnce(ctx)
		select {
		case <-ctx.Done():
			e.release()
			return nil
		case <-t.C:
		}
	}
}

// tryOnce acquires, renews or observes the lease once.
func (e *Elector) tryOnce(ctx context.Context) {
	now := e.o.Now()
	cur, rev, err := e.store.getLease(ctx, e.o.Key)
	if err == nil || errors.Is(err, bus.ErrNotFound) {
		defer e.markSeen()
	}
	if err == nil {
		e.sawTerm(cur.GetTerm())
	}
	switch {
	case errors.Is(err, bus.ErrNotFound):
		// A new lease key (the first, or the bucket lost its state) starts
		// its term at the wall clock in ms, so terms keep growing across a
		// lost bucket: the buckets the leader fences (bus.Store.Claim)
		// still hold the old terms.
		next := &meshv1.Lease{Holder: e.o.Holder, Term: e.firstTerm(now), RenewTime: timestamppb.New(now), Ttl: durationpb.New(e.o.TTL)}
		if rev, err := e.store.create(ctx, e.o.Key, next); err == nil {
			e.won(next, rev, now)
			return
		}
	case bus.IsBucketGone(err):
		// The bucket was deleted or JetStream lost its store: declare it
		// again; the next look finds no lease and creates one.
		_ = e.store.redeclare(ctx)
	case err != nil:
		// Cannot see the lease: keep leading only within the deadline.
	case cur.GetHolder() == e.o.Holder && cur.GetTerm() == e.currentTerm():
		next := &meshv1.Lease{Holder: e.o.Holder, Term: cur.GetTerm(), RenewTime: timestamppb.New(now), Ttl: durationpb.New(e.o.TTL)}
		if rev, err := e.store.update(ctx, e.o.Key, next, rev); err == nil {
			e.won(next, rev, now)
			return
		}
	case expired(cur, now) || (cur.GetHolder() == e.o.Holder && !e.seenOnce()):
		// Expired, or, at this instance's first look, held under its name
		// by an earlier process (a restart of the same pod): taken over at
		// once with a new term rather than after the old process's TTL.
		// Should another live process carry the same name, its next
		// renewal finds the term changed and it steps down, and the
		// bucket's writer-term fence refuses its writes.
		next := &meshv1.Lease{Holder: e.o.Holder, Term: cur.GetTerm() + 1, RenewTime: timestamppb.New(now), Ttl: durationpb.New(e.o.TTL)}
		if rev, err := e.store.update(ctx, e.o.Key, next, rev); err == nil {
			e.won(next, rev, now)
			return
		}
	default:
		// Another instance holds a valid lease.
		e.set(false, 0)
		return
	}
	// The clock is read again: the calls above may have blocked.
	e.mu.Lock()
	stale := e.leading && !e.validLocked()
	e.mu.Unlock()
	if stale {
		e.set(false, 0)
	}
}

func (e *Elector) sawTerm(t uint64) {
	e.mu.Lock()
	e.lastTerm = max(e.lastTerm, t)
	e.mu.Unlock()
}

// firstTerm is the term of a new lease key: after every term this elector
// saw, and at least the wall clock in ms.
func (e *Elector) firstTerm(now time.Time) uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return max(e.lastTerm+1, e.term+1, uint64(max(now.UnixMilli(), 1)))
}

func (e *Elector) seenOnce() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.seen
}

func (e *Elector) markSeen() {
	e.mu.Lock()
	e.seen = true
	e.mu.Unlock()
}

func (e *Elector) currentTerm() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.term
}

func (e *Elector) won(l *meshv1.Lease, rev uint64, now time.Time) {
	e.mu.Lock()
	e.rev, e.lastRenew = rev, now
	e.mu.Unlock()
	e.set(true, l.GetTerm())
}

// release hands the lease back (renew time zero), so a standby takes over
// without waiting for the TTL.
func (e *Elector) release() {
	e.mu.Lock()
	leading, term, rev := e.leading, e.term, e.rev
	e.mu.Unlock()
	if !leading {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	done := &meshv1.Lease{Holder: e.o.Holder, Term: term, RenewTime: timestamppb.New(time.Unix(0, 0)), Ttl: durationpb.New(e.o.TTL)}
	_, _ = e.store.update(ctx, e.o.Key, done, rev)
	e.set(false, 0)
}

func expired(l *meshv1.Lease, now time.Time) bool {
	return !now.Before(l.GetRenewTime().AsTime().Add(l.GetTtl().AsDuration()))
}

// busKV adapts a *bus.Store.
type busKV struct{ s *bus.Store }

func (b busKV) getLease(ctx context.Context, key string) (*meshv1.Lease, uint64, error) {
	l := &meshv1.Lease{}
	rev, err := b.s.Get(ctx, key, l)
	if err != nil {
		return nil, 0, err
	}
	return l, rev, nil
}

func (b busKV) create(ctx context.Context, key string, l *meshv1.Lease) (uint64, error) {
	return b.s.Create(ctx, key, l)
}

func (b busKV) redeclare(ctx context.Context) error { return b.s.Redeclare(ctx) }

func (b busKV) update(ctx context.Context, key string, l *meshv1.Lease, rev uint64) (uint64, error) {
	return b.s.Update(ctx, key, l, rev)
}

// String describes the elector for logs.
func (e *Elector) String() string {
	return fmt.Sprintf("lease %s held by %s", e.o.Key, e.o.Holder)
}
