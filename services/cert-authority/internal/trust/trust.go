// Package trust holds the CA's current trust bundle, keeps it equal to the
// provider's roots, lets gRPC streams wait for changes to it, and publishes
// it to KV mesh-trust, the bucket the cert-authority alone writes.
package trust

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/openservicemesh/osm/libs/backoff"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// Hub is the current trust bundle with change notification. The zero value
// is not usable; use NewHub.
type Hub struct {
	mu      sync.Mutex
	current *meshv1.TrustBundle
	changed chan struct{} // closed and replaced on every change
	now     func() time.Time
}

// NewHub returns an empty hub.
func NewHub() *Hub { return &Hub{changed: make(chan struct{}), now: time.Now} }

// Set replaces the bundle when its version differs from the current one and
// reports whether it did. The stored bundle gets UpdateTime now unless it
// carries one.
func (h *Hub) Set(b *meshv1.TrustBundle) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.current != nil && h.current.Version == b.Version {
		return false
	}
	b = proto.CloneOf(b)
	if b.UpdateTime == nil {
		b.UpdateTime = timestamppb.New(h.now())
	}
	h.current = b
	close(h.changed)
	h.changed = make(chan struct{})
	return true
}

// Current returns the bundle (nil before the first Set) and a channel that
// is closed at the next change. The bundle must not be modified.
func (h *Hub) Current() (*meshv1.TrustBundle, <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.current, h.changed
}

// Next waits until the hub holds a bundle whose version differs from known,
// and returns it.
func (h *Hub) Next(ctx context.Context, known string) (*meshv1.TrustBundle, error) {
	for {
		b, changed := h.Current()
		if b != nil && b.Version != known {
			return b, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-changed:
		}
	}
}

// Store is the part of a KV bucket the publisher uses (bus.Store).
type Store interface {
	Get(ctx context.Context, key string, m proto.Message) (uint64, error)
	Put(ctx context.Context, key string, m proto.Message) (uint64, error)
	// Redeclare declares the bucket again after it was lost.
	Redeclare(ctx context.Context) error
}

// Publisher copies the hub's bundle into one KV key.
type Publisher struct {
	hub       *Hub
	store     Store
	key       string
	notFound  error
	gone      func(error) bool
	retry     time.Duration
	check     time.Duration
	onError   func(error)
	onRestore func(version string)

	mu        sync.Mutex
	published string
}

// PublisherOptions configures NewPublisher.
type PublisherOptions struct {
	// Key is the KV key (layout.BundleKey).
	Key string
	// NotFound is the error Get wraps for an absent key (bus.ErrNotFound).
	NotFound error
	// Gone reports whether an error says the bucket itself is lost
	// (bus.IsBucketGone); the publisher then declares it again.
	Gone func(error) bool
	// Retry caps the wait between failed writes, which grow from a tenth
	// of it (libs/backoff); default 2s.
	Retry time.Duration
	// Check is how often the publisher looks whether the bucket still
	// holds a bundle, and writes the current one again when the key or
	// the bucket was lost (an operator's delete, a JetStream volume lost);
	// default 2s.
	Check time.Duration
	// OnError receives write failures (the publisher keeps retrying).
	OnError func(error)
	// OnRestore is told each bundle written again after a loss.
	OnRestore func(version string)
}

// NewPublisher returns a publisher of hub's bundle into store.
func NewPublisher(hub *Hub, store Store, o PublisherOptions) *Publisher {
	if o.Retry == 0 {
		o.Retry = 2 * time.Second
	}
	if o.Check == 0 {
		o.Check = 2 * time.Second
	}
	if o.OnError == nil {
		o.OnError = func(error) {}
	}
	if o.OnRestore == nil {
		o.OnRestore = func(string) {}
	}
	return &Publisher{hub: hub, store: store, key: o.Key, notFound: o.NotFound, gone: o.Gone, retry: o.Retry, check: o.Check,
		onError: o.OnError, onRestore: o.OnRestore}
}

// Published is the version last written or found in the bucket, "" before.
func (p *Publisher) Published() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.published
}

// Start publishes every change of the hub until ctx ends. It writes only
// when the bucket's bundle has another version, so a restarted CA leaves an
// unchanged bundle (and its update_time) alone. Every Check it also writes
// the bundle again if the bucket lost it (the key absent, or the bucket
// gone: declared again first); a bundle of another version found there is
// left alone, as another CA instance (a rolling update) wrote it.
func (p *Publisher) Start(ctx context.Context) error {
	failures := 0
	tick := time.NewTicker(p.check)
	defer tick.Stop()
	due := false // a Check is due
	for {
		b, changed := p.hub.Current()
		if b != nil && (due || b.Version != p.Published()) {
			publish := p.publish
			if b.Version == p.Published() {
				publish = p.restore
			}
			if err := publish(ctx, b); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				p.onError(err)
				failures++
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(backoff.Wait(p.retry/10, p.retry, failures)):
				}
				continue
			}
			failures = 0
		}
		due = false
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-tick.C:
			due = true
		}
	}
}

// restore writes b again when the bucket no longer holds a bundle: the key
// is absent, or the bucket is gone and is declared again first.
func (p *Publisher) restore(ctx context.Context, b *meshv1.TrustBundle) error {
	var cur meshv1.TrustBundle
	_, err := p.store.Get(ctx, p.key, &cur)
	switch {
	case err == nil:
		return nil
	case p.gone != nil && p.gone(err):
		if err := p.store.Redeclare(ctx); err != nil {
			return fmt.Errorf("declare the trust bundle's bucket again: %w", err)
		}
	case p.notFound != nil && errors.Is(err, p.notFound):
	default:
		return fmt.Errorf("read trust bundle: %w", err)
	}
	if _, err := p.store.Put(ctx, p.key, b); err != nil {
		return fmt.Errorf("publish trust bundle %s again: %w", b.Version, err)
	}
	p.mu.Lock()
	p.published = b.Version
	p.mu.Unlock()
	p.onRestore(b.Version)
	return nil
}

func (p *Publisher) publish(ctx context.Context, b *meshv1.TrustBundle) error {
	var cur meshv1.TrustBundle
	_, err := p.store.Get(ctx, p.key, &cur)
	switch {
	case err == nil && cur.Version == b.Version:
		// Already there (for example, written before a restart).
	case err == nil || (p.notFound != nil && errors.Is(err, p.notFound)):
		if _, err := p.store.Put(ctx, p.key, b); err != nil {
			return fmt.Errorf("publish trust bundle %s: %w", b.Version, err)
		}
	default:
		return fmt.Errorf("read trust bundle: %w", err)
	}
	p.mu.Lock()
	p.published = b.Version
	p.mu.Unlock()
	return nil
}

// Source is where the bundle comes from: the provider's roots.
type Source interface {
	TrustBundle(ctx context.Context) (*meshv1.TrustBundle, error)
}

// Refresher keeps the hub's bundle equal to its source's: it loads it once
// with Load, then re-reads it every interval under Start, which picks up a
// root rotation done at the source (Vault issuers).
type Refresher struct {
	src   Source
	hub   *Hub
	every time.Duration
	log   *logrus.Entry
}

// NewRefresher returns a refresher of hub from src every interval; log
// receives changes and failed reads.
func NewRefresher(src Source, hub *Hub, every time.Duration, log *logrus.Entry) *Refresher {
	return &Refresher{src: src, hub: hub, every: every, log: log}
}

// Load reads the bundle once into the hub.
func (r *Refresher) Load(ctx context.Context) error {
	_, err := r.load(ctx)
	return err
}

// load reads the bundle into the hub and reports whether it changed.
func (r *Refresher) load(ctx context.Context) (bool, error) {
	b, err := r.src.TrustBundle(ctx)
	if err != nil {
		return false, err
	}
	return r.hub.Set(b), nil
}

// Start re-reads the bundle every interval until ctx ends. A failed read
// is logged and leaves the last bundle in place.
func (r *Refresher) Start(ctx context.Context) error {
	t := time.NewTicker(r.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		changed, err := r.load(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			r.log.WithContext(ctx).WithError(err).Warn("trust bundle refresh failed")
		case changed:
			b, _ := r.hub.Current()
			r.log.WithContext(ctx).WithFields(logrus.Fields{"bundle_version": b.Version, "roots": len(b.Roots)}).Info("trust bundle changed")
		}
	}
}
