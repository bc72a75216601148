// Package pipeline is the policy-compiler's loop around the pure compile
// core. It watches KV mesh-observed, feeds every change to a
// compile.Engine, waits for the watcher's sync marker, and coalesces bursts
// with a debouncer: a lone change after a quiet spell compiles at once, a
// burst waits for a quiet period (Debounce), bounded by MaxDelay. It writes
// only the changed keys to KV mesh-compiled, then the generation record,
// and publishes policy verdicts on mesh.status.policy.<kind>.<ns>.<name>.
// Under a Leader (the compiler lease) only the leader writes; a standby
// keeps its model warm.
//
// On start it reads what mesh-compiled already holds, so a restarted (or
// newly active) compiler rebuilds from mesh-observed and writes only the keys
// whose content hash differs.
//
// A rejected policy keeps its last accepted version served. The compiler
// writes those versions (compile.Kept, under layout.AcceptedKey) in the
// batch of its other changed keys (alone, without a new generation, when
// nothing served changed), and on start or takeover seeds its engine with
// the ones it finds before its first compile, so that a restart or a
// failover changes nothing that no one edited. Its generations say that
// it keeps them (keeps_accepted_versions); after a generation of a
// compiler that does not, it restores none and marks the next generation.
//
// Generations are ordered by (epoch, number) (see meshv1.Generation). The
// compiler continues the epoch it finds in mesh-compiled; when it finds no
// generation there (a first install, a bucket deleted and recreated, a lost
// JetStream store), or loses the bucket while running, it starts a new epoch
// and writes every key under it, which edges take as a full replacement.
// While leading it checks every LostCheck that the bucket still holds its
// generation, so a loss is repaired even when nothing changes in the mesh.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/compile"
)

// Defaults of Options.
const (
	DefaultDebounce = 50 * time.Millisecond
	DefaultMaxDelay = 500 * time.Millisecond
	retryDelay      = time.Second
	// DefaultLostCheck is how often a leading compiler checks that
	// mesh-compiled still holds its generation.
	DefaultLostCheck = 2 * time.Second
)

// Watchable is a KV bucket the compiler watches (a *bus.Store).
type Watchable interface {
	Watch(ctx context.Context, pattern string) (*bus.Watcher, error)
}

// Writable is the KV bucket the compiler writes (a *bus.Store).
type Writable interface {
	Watchable
	Put(ctx context.Context, key string, m proto.Message) (uint64, error)
	// Batch pipelines a generation's writes.
	Batch() *bus.Batch
	// Claim fences the bucket with a lease term (bus.Store.Claim); Term
	// is the term claimed.
	Claim(ctx context.Context, term uint64, holder string) error
	Term() uint64
	Unclaim()
	ClaimLost(ctx context.Context) (bool, error)
	// Redeclare declares the bucket again after it was lost.
	Redeclare(ctx context.Context) error
	// Get reads a key (bus.ErrNotFound when absent).
	Get(ctx context.Context, key string, m proto.Message) (uint64, error)
}

var _ Writable = (*bus.Store)(nil)

// Options configure a Compiler.
type Options struct {
	// Engine configures the compile core.
	Engine compile.Options
	// Debounce is the quiet period after a change before compiling;
	// default DefaultDebounce.
	Debounce time.Duration
	// MaxDelay bounds how long a burst of changes can postpone a compile;
	// default DefaultMaxDelay.
	MaxDelay time.Duration
	// Log receives the compiler's logs.
	Log *logrus.Entry
	// Metrics records the compiler's metrics; nil records none.
	Metrics *Metrics
	// Leader, when set, gates writing: a standby keeps its model warm and
	// writes nothing; on becoming leader it re-reads mesh-compiled and writes
	// only the keys whose content differs. Nil means always the leader.
	Leader Leader
	// LostCheck is how often a leading compiler checks that mesh-compiled
	// still holds its generation; default DefaultLostCheck.
	LostCheck time.Duration
	// Now is the clock a new epoch is read from; default time.Now.
	Now func() time.Time
}

// Leader says whether this instance is the active compiler (a
// *lease.Elector).
type Leader interface {
	Leading() bool
	Changes() <-chan bool
}

// Stats are counters of what the compiler wrote, for tests and debugging.
type Stats struct {
	// Puts and Deletes count KV writes of resources, groups and name sets
	// (not the generation record).
	Puts, Deletes int
	// Skipped counts compiled keys whose content was already in the bucket.
	Skipped int
	// Generations counts generation records written.
	Generations int
	// Epoch and Generation are the epoch and number of the last
	// generation written or found.
	Epoch, Generation uint64
	// Epochs counts the epochs this compiler started.
	Epochs int
	// Statuses counts published policy statuses.
	Statuses int
	// Kept counts writes and deletes of kept versions (accepted.* keys).
	Kept int
}

// Compiler is the policy-compiler's main loop.
type Compiler struct {
	observed Watchable
	compiled Writable
	pub      bus.Publisher
	o        Options
	log      *logrus.Entry
	engine   *compile.Engine

	written  map[string]string // key → version of what mesh-compiled holds
	resync   bool              // diff the whole output against written
	genDirty bool              // keys were written since the last generation
	// unmarked: the bucket's generation does not say that its writer keeps
	// the accepted.* records current (an older compiler wrote it): the next
	// commit writes a generation that does, even with no key changed.
	unmarked bool
	epoch    uint64 // of the generations written (see newEpoch)
	gen      uint64
	lastRev  uint64
	statuses []*meshv1.PolicyStatus // verdicts waiting for a commit
	ready    atomic.Bool
	warm     atomic.Bool // observed state loaded (what a standby needs)
	stats    atomic.Pointer[Stats]
}

// New returns a Compiler reading observed, writing compiled and publishing
// statuses through pub.
func New(observed Watchable, compiled Writable, pub bus.Publisher, o Options) *Compiler {
	if o.Debounce <= 0 {
		o.Debounce = DefaultDebounce
	}
	if o.MaxDelay <= 0 {
		o.MaxDelay = DefaultMaxDelay
	}
	if o.MaxDelay < o.Debounce {
		o.MaxDelay = o.Debounce
	}
	if o.LostCheck <= 0 {
		o.LostCheck = DefaultLostCheck
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		l := logrus.New()
		l.Out = nopWriter{}
		o.Log = logrus.NewEntry(l)
	}
	c := &Compiler{observed: observed, compiled: compiled, pub: pub, o: o, log: o.Log, engine: compile.New(o.Engine)}
	c.stats.Store(&Stats{})
	return c
}

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }

// leading reports whether this instance may write: it is asked before each
// write of a commit, not only when the commit starts, since the lease
// answers on the clock of the call (a commit that stalls past the renew
// deadline stops writing before a standby may take over).
func (c *Compiler) leading() bool { return c.o.Leader == nil || c.o.Leader.Leading() }

// termed is a Leader that names the term it holds (a *lease.Elector).
type termed interface{ Term() uint64 }

// claim fences mesh-compiled with the lease's term before the first write
// of each term: from then on the server refuses the writes of any older
// term (bus.ErrFenced), so a compiler that stalled past its lease, and still
// believes it leads, lands nothing once its successor has written. Without
// a lease (a single compiler) there is nothing to fence.
func (c *Compiler) claim(ctx context.Context) error {
	t, ok := c.o.Leader.(termed)
	if !ok {
		return nil
	}
	term := t.Term()
	if term == 0 {
		return errLeaseLost
	}
	if c.compiled.Term() == term {
		return nil
	}
	if err := c.compiled.Claim(ctx, term, "policy-compiler"); err != nil {
		return fmt.Errorf("fence mesh-compiled for lease term %d: %w", term, err)
	}
	c.log.WithContext(ctx).WithField("term", term).Info("claimed mesh-compiled for the lease term")
	return nil
}

// afterFailedCommit handles the failures that need more than a retry.
//   - Fenced by a newer compiler: drop the claim; the next claim fails too
//     until the lease ends this term.
//   - The bucket, or this term's claim in it, is gone (deleted, perhaps
//     recreated, or JetStream lost its store): declare the bucket again,
//     forget what it held, and let the next commit write every key and a
//     generation numbered after the last one, which the running edges
//     accept as newer.
func (c *Compiler) afterFailedCommit(ctx context.Context, err error) {
	lost := bus.IsBucketGone(err)
	if errors.Is(err, bus.ErrFenced) {
		if gone, cerr := c.compiled.ClaimLost(ctx); cerr == nil && gone {
			lost = true
		}
		c.compiled.Unclaim()
	}
	if !lost {
		return
	}
	c.log.WithContext(ctx).WithError(err).Warn("mesh-compiled was lost: declaring it again and rewriting every key")
	if err := c.compiled.Redeclare(ctx); err != nil {
		c.log.WithContext(ctx).WithError(err).Warn("declare mesh-compiled again")
	}
	c.rewriteAll(ctx)
}

// rewriteAll forgets what mesh-compiled held and starts a new epoch: the
// next commit writes every key, and the generation, under it.
func (c *Compiler) rewriteAll(ctx context.Context) {
	c.compiled.Unclaim()
	c.written = map[string]string{}
	c.resync = true
	c.newEpoch(ctx)
}

// newEpoch starts an epoch after every one this compiler knows: its wall
// clock in Unix milliseconds, or the last epoch plus one when the clock is
// behind it. Numbers start again at 1. A compiler that starts on an empty
// bucket knows no earlier epoch; its clock must not lag the clock of the
// compiler that started the lost epoch by more than that epoch's age (see
// docs/ARCHITECTURE.md, "Generations and epochs").
func (c *Compiler) newEpoch(ctx context.Context) {
	prev := c.epoch
	c.epoch = max(prev+1, uint64(c.o.Now().UnixMilli()))
	c.gen, c.genDirty = 0, false
	c.count(func(s *Stats) { s.Epochs++; s.Epoch, s.Generation = c.epoch, 0 })
	c.log.WithContext(ctx).WithFields(logrus.Fields{"epoch": c.epoch, "previous_epoch": prev}).Warn("mesh-compiled holds no generation: starting a new epoch")
}

// checkLost reports whether mesh-compiled lost the generation this compiler
// last committed: the key, or the whole bucket, is gone (deleted, maybe
// recreated, or JetStream lost its store). A missing bucket is declared
// again first, so that a bucket merely unreachable (JetStream restarting)
// is not taken for lost: the check fails and runs again later.
func (c *Compiler) checkLost(ctx context.Context) (bool, error) {
	var g meshv1.Generation
	_, err := c.compiled.Get(ctx, layout.GenerationKey, &g)
	if err == nil {
		return false, nil
	}
	if !errors.Is(err, bus.ErrNotFound) && !bus.IsBucketGone(err) {
		return false, err
	}
	if err := c.compiled.Redeclare(ctx); err != nil {
		return false, err
	}
	if _, err = c.compiled.Get(ctx, layout.GenerationKey, &g); err == nil {
		return false, nil
	}
	if !errors.Is(err, bus.ErrNotFound) {
		return false, err
	}
	return true, nil
}

// errLeaseLost ends a commit whose lease ran out while it wrote.
var errLeaseLost = errors.New("the compiler lease ran out during the commit; the new leader finishes it")

// Ready fails until the compiler has committed its first compile, or, on a
// standby, until its model holds the observed state.
func (c *Compiler) Ready(context.Context) error {
	if !c.leading() {
		if !c.warm.Load() {
			return errors.New("standby: observed state not loaded yet")
		}
		return nil
	}
	if !c.ready.Load() {
		return errors.New("no compile committed yet (waiting for mesh-observed to be synced)")
	}
	return nil
}

// Stats returns a copy of the write counters.
func (c *Compiler) Stats() Stats { return *c.stats.Load() }

func (c *Compiler) count(f func(s *Stats)) {
	s := *c.stats.Load()
	f(&s)
	c.stats.Store(&s)
}

// Start runs the compiler until ctx is cancelled.
func (c *Compiler) Start(ctx context.Context) error {
	if err := c.loadCompiled(ctx); err != nil {
		return err
	}
	w, err := c.observed.Watch(ctx, ">")
	if err != nil {
		return fmt.Errorf("watch %s: %w", bus.BucketObserved, err)
	}
	defer func() { w.Stop() }()

	deb := newDebouncer(c.o.Debounce, c.o.MaxDelay, time.Now)
	defer deb.stop()
	lostTick := time.NewTicker(c.o.LostCheck)
	defer lostTick.Stop()
	initialized := false
	traceCtx := ctx
	var changes <-chan bool
	if c.o.Leader != nil {
		changes = c.o.Leader.Changes()
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events():
			if !ok {
				if !errors.Is(w.Err(), bus.ErrBucketRecreated) {
					return w.Ended(ctx)
				}
				// mesh-observed was lost and the watcher wrote it anew
				// under a new epoch: rebuild the model from it alone (keys
				// of the old bucket must not linger), then diff the whole
				// output against what mesh-compiled holds.
				c.log.WithContext(ctx).Warn("mesh-observed was recreated: rebuilding the model from it")
				w.Stop()
				kept := c.engine.Kept()
				c.engine = compile.New(c.o.Engine)
				c.seed(ctx, kept) // the versions it served stay served
				c.resync = true
				initialized = false
				c.warm.Store(false)
				if w, err = c.observed.Watch(ctx, ">"); err != nil {
					return fmt.Errorf("watch %s: %w", bus.BucketObserved, err)
				}
				continue
			}
			switch ev.Kind {
			case bus.EventInitialized:
				initialized = true
				c.warm.Store(true)
				c.log.WithContext(ctx).WithField("revision", c.lastRev).Info("observed state loaded")
				c.flushNow(traceCtx, deb)
				continue
			case bus.EventPut, bus.EventDelete:
				if err := c.engine.ApplyKey(ev.Key, ev.Value); err != nil {
					c.log.WithContext(ev.Context).WithError(err).WithField("key", ev.Key).Warn("observed key ignored")
				}
				c.lastRev = ev.Revision
				traceCtx = ev.Context
			}
			if initialized && deb.changed(len(w.Events()) > 0) {
				c.flushNow(traceCtx, deb)
			}
		case <-deb.C():
			c.flushNow(traceCtx, deb)
		case <-lostTick.C:
			if !c.leading() || c.gen == 0 || c.genDirty {
				continue // nothing committed to lose yet, or a retry pending
			}
			lost, err := c.checkLost(ctx)
			if err != nil {
				c.log.WithContext(ctx).WithError(err).Debug("could not check mesh-compiled for its generation")
				continue
			}
			if lost {
				c.log.WithContext(ctx).WithFields(logrus.Fields{"epoch": c.epoch, "generation": c.gen}).
					Warn("mesh-compiled lost its generation (bucket deleted or JetStream store lost): rewriting every key")
				c.rewriteAll(ctx)
				if initialized {
					c.flushNow(traceCtx, deb)
				}
			}
		case leading := <-changes:
			if !leading {
				c.ready.Store(false)
				c.log.WithContext(ctx).Warn("lost the compiler lease; standing by")
				continue
			}
			// Another compiler may have written since we last looked:
			// re-read mesh-compiled and diff the whole output against it.
			if err := c.loadCompiled(ctx); err != nil {
				return err
			}
			c.log.WithContext(ctx).WithField("generation", c.gen).Info("holding the compiler lease; taking over")
			if initialized {
				c.flushNow(traceCtx, deb)
			}
		}
	}
}

// flushNow compiles and commits what is pending, and has deb retry when a
// write failed.
func (c *Compiler) flushNow(ctx context.Context, deb *debouncer) {
	deb.fired()
	if retry := c.flush(ctx); retry {
		deb.retry(retryDelay)
	}
}

// loadCompiled reads the versions of what mesh-compiled holds.
func (c *Compiler) loadCompiled(ctx context.Context) error {
	w, err := c.compiled.Watch(ctx, ">")
	if err != nil {
		return fmt.Errorf("watch %s: %w", bus.BucketCompiled, err)
	}
	defer w.Stop()
	c.written = map[string]string{}
	c.genDirty = false // what the bucket holds decides (below)
	found := false     // a generation record
	keeps := false     // the generation's writer keeps accepted.* records current
	var kept []*compile.Kept
	// keysGen is the highest generation stamped into a key: above the
	// generation key's, the last compiler died between its key writes and
	// its generation write.
	var keysGen uint64
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-w.Events():
			if !ok {
				return fmt.Errorf("load %s: %w", bus.BucketCompiled, w.Err())
			}
			switch ev.Kind {
			case bus.EventInitialized:
				c.resync = true
				if !found {
					c.newEpoch(ctx)
				}
				if keysGen > c.gen {
					// Publish what was written: the next commit writes
					// generation keysGen even if no key changes.
					c.log.WithContext(ctx).WithFields(logrus.Fields{"generation": c.gen, "keys_generation": keysGen}).
						Warn("mesh-compiled holds keys of a generation that was never committed; committing it")
					c.gen, c.genDirty = keysGen, true
				}
				c.count(func(s *Stats) { s.Epoch, s.Generation = c.epoch, c.gen })
				c.log.WithContext(ctx).WithFields(logrus.Fields{"keys": len(c.written), "epoch": c.epoch, "generation": c.gen, "kept_versions": len(kept)}).Info("compiled state loaded")
				c.unmarked = found && !keeps
				switch {
				case keeps:
					c.seed(ctx, kept)
				case len(kept) > 0:
					// Written before a compiler that does not keep them led:
					// they may be stale. Compile cold; the resync rewrites them.
					c.log.WithContext(ctx).WithField("kept_versions", len(kept)).
						Warn("mesh-compiled's generation was written by a compiler that does not keep the rejected policies' accepted versions: not restoring them")
				}
				return nil
			case bus.EventPut:
				if layout.IsAcceptedKey(ev.Key) {
					k, version, err := keptOf(ev.Value)
					c.written[ev.Key] = version // rewritten or deleted by the resync if it differs
					if err != nil {
						c.log.WithContext(ctx).WithError(err).WithField("key", ev.Key).Warn("kept version not restored")
						continue
					}
					kept = append(kept, k)
					continue
				}
				if v, gen, ok := versionOf(ev.Key, ev.Value); ok {
					c.written[ev.Key] = v
					keysGen = max(keysGen, gen)
				} else if ev.Key == layout.GenerationKey {
					g := &meshv1.Generation{}
					if err := ev.Decode(g); err == nil {
						c.epoch, c.gen, found = g.GetEpoch(), g.GetNumber(), true
						keeps = g.GetKeepsAcceptedVersions()
					}
				}
			}
		}
	}
}

// seed gives the engine kept versions before its next compile.
func (c *Compiler) seed(ctx context.Context, kept []*compile.Kept) {
	for _, err := range c.engine.Seed(kept) {
		c.log.WithContext(ctx).WithError(err).Warn("kept version not restored")
	}
	if len(kept) > 0 {
		c.log.WithContext(ctx).WithField("kept_versions", len(kept)).Info("restored the last accepted versions of rejected policies")
	}
}

// keptOf reads an accepted.* record: the record and its content version,
// or the error that keeps it from being restored (the version is then
// still that of its bytes, so the resync replaces it).
func keptOf(value []byte) (*compile.Kept, string, error) {
	p := &meshv1.KeptVersion{}
	if err := proto.Unmarshal(value, p); err != nil {
		return nil, "undecodable", fmt.Errorf("decode kept version: %w", err)
	}
	k, err := compile.KeptFromProto(p)
	if err != nil {
		return nil, "foreign", err
	}
	return k, k.Version(), nil
}

// versionOf is the content version of a compiled resource, group or name
// set value, and the generation stamped into it.
func versionOf(key string, value []byte) (version string, gen uint64, ok bool) {
	k, err := layout.ParseCompiled(key)
	if err != nil {
		return "", 0, false
	}
	if k.Set {
		s := &meshv1.NameSet{}
		if proto.Unmarshal(value, s) != nil {
			return "", 0, false
		}
		return compile.SetVersion(s), s.GetGeneration(), true
	}
	if !k.Group {
		r := &meshv1.CompiledResource{}
		if proto.Unmarshal(value, r) != nil {
			return "", 0, false
		}
		return r.GetVersion(), r.GetGeneration(), true
	}
	g := &meshv1.ProxyGroup{}
	if proto.Unmarshal(value, g) != nil {
		return "", 0, false
	}
	return compile.GroupVersion(g), g.GetGeneration(), true
}

// flush compiles what is pending and commits it. It reports whether it
// should be retried (a write failed).
func (c *Compiler) flush(ctx context.Context) bool {
	if !c.leading() {
		// A standby compiles nothing: the engine keeps what changed and
		// the new leader compiles it on takeover.
		return false
	}
	m := c.engine.Model()
	if !m.Synced() {
		if c.engine.Pending() {
			c.log.WithContext(ctx).Debug("waiting for the sync marker")
		}
		return false
	}
	start := time.Now()
	d := c.engine.Compile()
	for _, err := range d.Invalid {
		c.log.WithContext(ctx).WithError(err).Error("compiled resource failed validation")
	}
	c.o.Metrics.invalid(ctx, len(d.Invalid))
	c.statuses = append(c.statuses, d.Statuses...)
	committed, err := c.commit(ctx, d)
	c.o.Metrics.compiled(ctx, trigger(d.Triggers), time.Since(start), c.engine.Rejected())
	if err != nil {
		c.afterFailedCommit(ctx, err)
		c.log.WithContext(ctx).WithError(err).Warn("commit failed, retrying")
		return true
	}
	c.ready.Store(true)
	var gen uint64
	if committed {
		gen = c.gen
	}
	c.publish(ctx, c.statuses, gen)
	c.statuses = nil
	return false
}

// trigger names what caused a compile: the one observed kind that changed,
// "mixed", or "resync".
func trigger(t map[string]int) string {
	if len(t) == 0 {
		return "resync"
	}
	if len(t) > 1 {
		return "mixed"
	}
	for k := range t {
		return k
	}
	return ""
}

// entry is one key the compiler may write.
type entry struct {
	key, version string
	value        func(gen uint64) proto.Message
}

func resourceEntry(r *compile.Resource) entry {
	return entry{r.Key(), r.Version, func(gen uint64) proto.Message {
		return &meshv1.CompiledResource{TypeUrl: r.TypeURL, Name: r.Name, Version: r.Version, Resource: r.Bytes, Generation: gen}
	}}
}

func groupEntry(g *compile.Group) entry {
	return entry{g.Key(), g.Version, func(gen uint64) proto.Message {
		pg := proto.Clone(g.Group).(*meshv1.ProxyGroup)
		pg.Generation = gen
		return pg
	}}
}

func keptEntry(k *compile.Kept) entry {
	return entry{k.Key(), k.Version(), func(gen uint64) proto.Message { return k.Proto(gen) }}
}

func setEntry(s *compile.Set) entry {
	return entry{s.Key(), s.Version, func(gen uint64) proto.Message {
		ns := proto.Clone(s.Set).(*meshv1.NameSet)
		ns.Generation = gen
		return ns
	}}
}

// commit writes the changed keys, then the generation: after any change,
// and on the first commit to a mesh-compiled that holds no generation. It
// reports whether it wrote a generation.
func (c *Compiler) commit(ctx context.Context, d *compile.Delta) (bool, error) {
	var puts []entry
	var deletes []string
	if c.resync {
		want := map[string]bool{}
		for _, r := range c.engine.Resources() {
			puts = append(puts, resourceEntry(r))
			want[r.Key()] = true
		}
		for _, s := range c.engine.Sets() {
			puts = append(puts, setEntry(s))
			want[s.Key()] = true
		}
		for _, g := range c.engine.Groups() {
			puts = append(puts, groupEntry(g))
			want[g.Key()] = true
		}
		for _, k := range c.engine.Kept() {
			puts = append(puts, keptEntry(k))
			want[k.Key()] = true
		}
		for k := range c.written {
			if !want[k] {
				deletes = append(deletes, k)
			}
		}
	} else {
		for _, r := range d.Resources {
			puts = append(puts, resourceEntry(r))
		}
		for _, s := range d.Sets {
			puts = append(puts, setEntry(s))
		}
		for _, g := range d.Groups {
			puts = append(puts, groupEntry(g))
		}
		for _, k := range d.Kept {
			puts = append(puts, keptEntry(k))
		}
		deletes = append(append(append(deletes, d.DeletedResources...), d.DeletedSets...), d.DeletedGroups...)
		deletes = append(deletes, d.DeletedKept...)
	}
	next := c.gen
	if !c.genDirty {
		next++
	}
	var nPut, nDel, nSkip, nKept int
	defer func() {
		c.count(func(s *Stats) { s.Puts += nPut; s.Deletes += nDel; s.Skipped += nSkip; s.Kept += nKept })
		c.o.Metrics.wrote(ctx, nPut, nDel, nSkip)
	}()
	if err := c.claim(ctx); err != nil {
		c.resync = true
		return false, err
	}
	// Queue the changed keys, send them pipelined, and record them only
	// once the server has stored every one; the generation goes last.
	batch := c.compiled.Batch()
	type queued struct{ key, version string }
	var done []queued
	for _, e := range puts {
		if c.written[e.key] == e.version {
			nSkip++
			continue
		}
		if !c.leading() {
			c.resync = true
			return false, errLeaseLost
		}
		if err := batch.Put(ctx, e.key, e.value(next)); err != nil {
			if errors.Is(err, bus.ErrTooLarge) {
				// A bug to fix in the compiler, not a condition to retry:
				// the rest of the mesh goes on.
				c.log.WithContext(ctx).WithError(err).WithField("key", e.key).Error("compiled value too large, not written")
				c.o.Metrics.invalid(ctx, 1)
				continue
			}
			c.resync = true
			return false, err
		}
		done = append(done, queued{e.key, e.version})
	}
	var deleted []string
	for _, k := range deletes {
		if _, ok := c.written[k]; !ok {
			continue
		}
		if !c.leading() {
			c.resync = true
			return false, errLeaseLost
		}
		if err := batch.Delete(ctx, k); err != nil {
			c.resync = true
			return false, err
		}
		deleted = append(deleted, k)
	}
	if batch.Len() > 0 && !c.leading() {
		c.resync = true
		return false, errLeaseLost
	}
	if err := batch.Flush(ctx); err != nil {
		c.resync = true
		return false, err
	}
	for _, q := range done {
		c.written[q.key] = q.version
	}
	for _, k := range deleted {
		delete(c.written, k)
	}
	for _, q := range done {
		if layout.IsAcceptedKey(q.key) {
			nKept++
		} else {
			nPut++
		}
	}
	for _, k := range deleted {
		if layout.IsAcceptedKey(k) {
			nKept++
		} else {
			nDel++
		}
	}
	// Kept versions alone change nothing an edge serves: they are written
	// (fenced like the rest) without a new generation.
	// An empty mesh is a complete state too: when mesh-compiled holds no
	// generation yet, the first compile writes one even with no key, so
	// that the edges can turn ready on it.
	if nPut+nDel > 0 || c.gen == 0 || c.unmarked {
		c.gen, c.genDirty = next, true
	}
	c.resync = false
	if !c.genDirty {
		return false, nil
	}
	if !c.leading() {
		// The keys are written; the next leader finds them stamped with
		// this generation and commits it (see loadCompiled).
		c.resync = true
		return false, errLeaseLost
	}
	g := &meshv1.Generation{
		Epoch:            c.epoch,
		Number:           c.gen,
		ObservedEpoch:    c.engine.Model().Sync().GetEpoch(),
		ObservedRevision: c.lastRev,
		CommitTime:       timestamppb.Now(),
		ChangedKeys:      uint32(nPut + nDel),

		KeepsAcceptedVersions: true,
	}
	if _, err := c.compiled.Put(ctx, layout.GenerationKey, g); err != nil {
		return false, err
	}
	c.genDirty, c.unmarked = false, false
	c.ready.Store(true)
	c.count(func(s *Stats) { s.Generations++; s.Epoch, s.Generation = c.epoch, c.gen })
	c.o.Metrics.generation(ctx, c.gen)
	c.log.WithContext(ctx).WithFields(logrus.Fields{"epoch": c.epoch, "generation": c.gen, "changed_keys": nPut + nDel, "skipped_keys": nSkip}).Info("generation committed")
	return true, nil
}

// publish sends policy verdicts on mesh.status.policy.<kind>.<ns>.<name>.
// gen is the generation that reflects them, 0 for none.
func (c *Compiler) publish(ctx context.Context, statuses []*meshv1.PolicyStatus, gen uint64) {
	for _, st := range statuses {
		st.Time = timestamppb.Now()
		st.Generation = gen
		o := st.GetObject()
		subject := layout.PolicyStatusSubject(o.GetKind(), o.GetNamespace(), o.GetName())
		if err := bus.Publish(ctx, c.pub, subject, st); err != nil {
			c.log.WithContext(ctx).WithError(err).WithField("subject", subject).Warn("publish policy status failed")
			continue
		}
		c.count(func(s *Stats) { s.Statuses++ })
		if st.GetCondition() == meshv1.PolicyCondition_POLICY_CONDITION_REJECTED {
			c.log.WithContext(ctx).WithFields(logrus.Fields{
				"kind": o.GetKind(), "namespace": o.GetNamespace(), "name": o.GetName(),
				"reason": st.GetReason(), "field_path": st.GetFieldPath(),
			}).Warn("policy rejected")
		}
		if st.GetCondition() == meshv1.PolicyCondition_POLICY_CONDITION_ACCEPTED_WITH_WARNING {
			c.log.WithContext(ctx).WithFields(logrus.Fields{
				"kind": o.GetKind(), "namespace": o.GetNamespace(), "name": o.GetName(),
				"reason": st.GetReason(), "field_path": st.GetFieldPath(),
			}).Info("policy accepted with a warning")
		}
	}
}
