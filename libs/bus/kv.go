package bus

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
)

// ErrTooLarge is returned for a value that would exceed the server's
// max_payload. The mesh splits state per resource, so this is a bug in the
// writer, not a condition to retry.
var ErrTooLarge = errors.New("value too large")

// ErrNotFound is returned by Get for a key that is absent or deleted.
var ErrNotFound = jetstream.ErrKeyNotFound

// KV operation headers, as the NATS KV clients write them.
const (
	hdrOperation = "KV-Operation"
	opDelete     = "DEL"
	opPurge      = "PURGE"
)

// marshal is deterministic so that equal messages give equal bytes and
// unchanged puts can be detected.
var marshal = proto.MarshalOptions{Deterministic: true}

// Store is one KV bucket holding protobuf values.
//
// A Store remembers a digest of the last value it wrote or saw for each key,
// so PutIfChanged and DeleteIfPresent can skip writes that would change
// nothing. That memory is valid because each bucket has a single writer role.
type Store struct {
	conn   *Conn
	bucket string
	kv     jetstream.KeyValue
	prefix string // "$KV.<bucket>."

	mu     sync.Mutex
	digest map[string][sha256.Size]byte
	primed bool // digest holds every key of the bucket

	fence    atomic.Pointer[fence] // the claimed term, nil for none (see Claim)
	declared *BucketOptions        // how the writer declared the bucket (see Redeclare)
}

// Bucket opens an existing bucket.
func (c *Conn) Bucket(ctx context.Context, name string) (*Store, error) {
	kv, err := c.js.KeyValue(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", name, err)
	}
	return c.newStore(name, kv), nil
}

// EnsureBucket declares the bucket (idempotently) and opens it. Only the
// bucket's writer role is allowed to declare it.
func (c *Conn) EnsureBucket(ctx context.Context, name string, o BucketOptions) (*Store, error) {
	kv, err := EnsureBucket(ctx, c.js, name, o)
	if err != nil {
		return nil, err
	}
	s := c.newStore(name, kv)
	s.declared = &o
	return s, nil
}

// Redeclare declares the store's bucket again, with the options it was
// declared with, after it was lost (deleted, or JetStream lost its store).
// Only the bucket's writer, which declared it, may.
func (s *Store) Redeclare(ctx context.Context) error {
	if s.declared == nil {
		return fmt.Errorf("redeclare %s: this store opened the bucket; only its writer declares it", s.bucket)
	}
	_, err := EnsureBucket(ctx, s.conn.js, s.bucket, *s.declared)
	return err
}

// IsBucketGone reports whether err says the bucket's stream does not exist.
func IsBucketGone(err error) bool {
	return errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound)
}

func (c *Conn) newStore(name string, kv jetstream.KeyValue) *Store {
	return &Store{
		conn:   c,
		bucket: name,
		kv:     kv,
		prefix: "$KV." + name + ".",
		digest: make(map[string][sha256.Size]byte),
	}
}

// Name is the bucket name.
func (s *Store) Name() string { return s.bucket }

// Put writes m under key, whatever the current value. The trace context of
// ctx travels in the message headers.
func (s *Store) Put(ctx context.Context, key string, m proto.Message) (uint64, error) {
	data, err := marshal.Marshal(m)
	if err != nil {
		return 0, fmt.Errorf("put %s/%s: marshal: %w", s.bucket, key, err)
	}
	return s.putBytes(ctx, key, data)
}

func (s *Store) putBytes(ctx context.Context, key string, data []byte) (uint64, error) {
	if !ValidKey(key) {
		return 0, fmt.Errorf("put %s/%q: %w (escape each part with Key)", s.bucket, key, ErrBadKey)
	}
	msg := &nats.Msg{Subject: s.prefix + key, Data: data, Header: nats.Header{}}
	InjectTrace(ctx, msg.Header)
	injectHeaders(ctx, msg.Header)
	s.fenceHeader(msg.Header)
	if limit := s.maxPayload(); len(data)+headerSize(msg.Header) > limit {
		return 0, fmt.Errorf("put %s/%s: %w: %d bytes, the limit is %d", s.bucket, key, ErrTooLarge, len(data), limit)
	}
	ack, err := s.publish(ctx, msg)
	if err != nil {
		return 0, fmt.Errorf("put %s/%s: %w", s.bucket, key, fencedErr(s.conn.explain(msg.Subject, err)))
	}
	s.remember(key, data)
	return ack.Sequence, nil
}

// remember records the digest of key's value as written.
func (s *Store) remember(key string, data []byte) {
	s.mu.Lock()
	s.digest[key] = sha256.Sum256(data)
	s.mu.Unlock()
}

func (s *Store) maxPayload() int {
	if mp := s.conn.nc.MaxPayload(); mp > 0 {
		return int(min(mp, MaxValueSize))
	}
	return MaxValueSize
}

func headerSize(h nats.Header) int {
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// PutIfChanged writes m under key only when its serialised form differs from
// the key's current value. It reports whether it wrote.
func (s *Store) PutIfChanged(ctx context.Context, key string, m proto.Message) (rev uint64, written bool, err error) {
	data, err := marshal.Marshal(m)
	if err != nil {
		return 0, false, fmt.Errorf("put %s/%s: marshal: %w", s.bucket, key, err)
	}
	sum := sha256.Sum256(data)
	known, present, err := s.knownDigest(ctx, key)
	if err != nil {
		return 0, false, err
	}
	if present && known == sum {
		return 0, false, nil
	}
	rev, err = s.putBytes(ctx, key, data)
	return rev, err == nil, err
}

// knownDigest returns the digest of key's current value, asking the server
// when the store has not seen the key yet.
func (s *Store) knownDigest(ctx context.Context, key string) ([sha256.Size]byte, bool, error) {
	s.mu.Lock()
	d, ok := s.digest[key]
	primed := s.primed
	s.mu.Unlock()
	if ok || primed {
		return d, ok, nil
	}
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return d, false, nil
	}
	if err != nil {
		return d, false, fmt.Errorf("get %s/%s: %w", s.bucket, key, err)
	}
	d = sha256.Sum256(e.Value())
	s.mu.Lock()
	s.digest[key] = d
	s.mu.Unlock()
	return d, true, nil
}

// Delete removes key (it writes a delete marker, which watchers see).
func (s *Store) Delete(ctx context.Context, key string) error {
	if !ValidKey(key) {
		return fmt.Errorf("delete %s/%q: %w (escape each part with Key)", s.bucket, key, ErrBadKey)
	}
	msg := &nats.Msg{Subject: s.prefix + key, Header: nats.Header{}}
	msg.Header.Set(hdrOperation, opDelete)
	InjectTrace(ctx, msg.Header)
	injectHeaders(ctx, msg.Header)
	s.fenceHeader(msg.Header)
	if _, err := s.publish(ctx, msg); err != nil {
		return fmt.Errorf("delete %s/%s: %w", s.bucket, key, fencedErr(s.conn.explain(msg.Subject, err)))
	}
	s.mu.Lock()
	delete(s.digest, key)
	s.mu.Unlock()
	return nil
}

// DeleteIfPresent deletes key only when it holds a value, and reports
// whether it wrote a delete marker.
func (s *Store) DeleteIfPresent(ctx context.Context, key string) (bool, error) {
	_, present, err := s.knownDigest(ctx, key)
	if err != nil || !present {
		return false, err
	}
	return true, s.Delete(ctx, key)
}

// Get reads key into m and returns its revision. It returns an error wrapping
// ErrNotFound when the key is absent or deleted.
func (s *Store) Get(ctx context.Context, key string, m proto.Message) (uint64, error) {
	e, err := s.kv.Get(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("get %s/%s: %w", s.bucket, key, err)
	}
	if err := proto.Unmarshal(e.Value(), m); err != nil {
		return 0, fmt.Errorf("get %s/%s: unmarshal: %w", s.bucket, key, err)
	}
	return e.Revision(), nil
}

// Prime loads the digest of every current key, so that a writer taking over
// (after a restart or a leader change) can reconcile with PutIfChanged and
// DeleteIfPresent without one round trip per key. It returns the keys present.
func (s *Store) Prime(ctx context.Context) ([]string, error) {
	w, err := s.Watch(ctx, ">")
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	digest := make(map[string][sha256.Size]byte)
	var keys []string
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("prime %s: %w", s.bucket, ctx.Err())
		case ev, ok := <-w.Events():
			if !ok {
				return nil, fmt.Errorf("prime %s: %w", s.bucket, w.Err())
			}
			switch ev.Kind {
			case EventPut:
				digest[ev.Key] = sha256.Sum256(ev.Value)
				keys = append(keys, ev.Key)
			case EventInitialized:
				s.mu.Lock()
				s.digest, s.primed = digest, true
				s.mu.Unlock()
				return keys, nil
			}
		}
	}
}

// Forget drops everything the store remembers about current values, for
// when another writer may have written in between (a leader change).
func (s *Store) Forget() {
	s.mu.Lock()
	s.digest = make(map[string][sha256.Size]byte)
	s.primed = false
	s.mu.Unlock()
}

// WaitBucket opens a bucket that another role declares, waiting until it
// exists. waiting, when not nil, is told why the bucket cannot be opened yet
// at the first failed attempt and then every ten seconds. It returns when
// the bucket opens or ctx ends.
func (c *Conn) WaitBucket(ctx context.Context, name string, waiting func(err error)) (*Store, error) {
	const every = 500 * time.Millisecond
	for attempt := 0; ; attempt++ {
		s, err := c.Bucket(ctx, name)
		if err == nil {
			return s, nil
		}
		if waiting != nil && attempt%20 == 0 {
			waiting(err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("open bucket %s: %w", name, errors.Join(ctx.Err(), err))
		case <-time.After(every):
		}
	}
}
