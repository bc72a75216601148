package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The KV buckets of the mesh. Each has exactly one writer role (see roles.go).
const (
	// BucketObserved holds the normalised Kubernetes state; written by the smi-watcher.
	BucketObserved = "mesh-observed"
	// BucketCompiled holds compiled Envoy resources, proxy groups and the
	// generation record; written by the policy-compiler.
	BucketCompiled = "mesh-compiled"
	// BucketTrust holds the trust bundle; written by the cert-authority.
	BucketTrust = "mesh-trust"
	// BucketLeases holds the leases that elect one active instance of a
	// role; written by the policy-compiler. It is apart from mesh-compiled
	// so that lease renewals wake no edge.
	BucketLeases = "mesh-leases"
)

// MaxValueSize is the largest value a bucket accepts. It matches NATS's
// default max_payload: state is split per resource, never shipped as a blob.
const MaxValueSize = 1 << 20

// The consumer limits of every bucket's stream. Readers may create
// consumers on the buckets they read (a KV watch is an ordered consumer),
// and NATS permissions cannot tell one consumer from another, so the
// stream bounds them for every role alike:
//   - at most MaxConsumers at once (DefaultMaxConsumers: two watches per
//     edge replica for hundreds of replicas, with room for consumers that
//     linger after a reconnect);
//   - none lives on inactive for longer than ConsumerInactiveLimit (a
//     durable consumer left behind by a reader is deleted, and a request
//     for a longer threshold is refused);
//   - none holds more than ConsumerMaxAckPending unacknowledged messages.
const (
	DefaultMaxConsumers   = 2048
	ConsumerInactiveLimit = 5 * time.Minute
	ConsumerMaxAckPending = 1000
)

// BucketOptions tune how buckets are declared.
type BucketOptions struct {
	// Replicas is the stream replication factor (1 for the embedded server,
	// 3 in a NATS cluster).
	Replicas int
	// Memory keeps the bucket in memory instead of on disk. Off by default:
	// nothing is lost on restart.
	Memory bool
	// MaxConsumers bounds the consumers of the bucket's stream; 0 means
	// DefaultMaxConsumers.
	MaxConsumers int
}

// Buckets lists every mesh bucket.
func Buckets() []string { return []string{BucketObserved, BucketCompiled, BucketTrust, BucketLeases} }

func bucketConfig(name string, o BucketOptions) jetstream.KeyValueConfig {
	cfg := jetstream.KeyValueConfig{
		Bucket:       name,
		Description:  "OSM " + name,
		History:      1,
		MaxValueSize: MaxValueSize,
		Storage:      jetstream.FileStorage,
		Replicas:     max(o.Replicas, 1),
	}
	if o.Memory {
		cfg.Storage = jetstream.MemoryStorage
	}
	return cfg
}

// EnsureBucket declares bucket idempotently: it creates it when absent and
// leaves an existing bucket with the same settings untouched.
func EnsureBucket(ctx context.Context, js jetstream.JetStream, name string, o BucketOptions) (jetstream.KeyValue, error) {
	cfg := bucketConfig(name, o)
	kv, err := js.CreateKeyValue(ctx, cfg)
	if errors.Is(err, jetstream.ErrBucketExists) {
		kv, err = js.UpdateKeyValue(ctx, cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("declare bucket %s: %w", name, err)
	}
	if err := limitConsumers(ctx, js, name, o); err != nil {
		return nil, fmt.Errorf("declare bucket %s: consumer limits: %w", name, err)
	}
	if err := awaitReads(ctx, kv); err != nil {
		return nil, fmt.Errorf("declare bucket %s: %w", name, err)
	}
	return kv, nil
}

// BucketReadTimeout bounds how long EnsureBucket waits for a declared
// bucket to answer reads.
const BucketReadTimeout = 30 * time.Second

// readProbeKey is a key no one writes; reading it tells whether any
// replica answers reads.
const readProbeKey = "_osm.read-probe"

// awaitReads waits until a read of the bucket is answered. On a NATS
// cluster a replicated bucket's stream answers reads (direct gets) only
// once its leader's subscription has reached the server the client is
// connected to, and its followers' once they caught up: a read right after
// the declaration can get "no responders", which callers take for a
// bucket that is gone (tests/stack TestDeclaredBucketsAnswerReads).
func awaitReads(ctx context.Context, kv jetstream.KeyValue) error {
	ctx, cancel := context.WithTimeout(ctx, BucketReadTimeout)
	defer cancel()
	wait := 10 * time.Millisecond
	for {
		_, err := kv.Get(ctx, readProbeKey)
		if err == nil || errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil
		}
		if !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, jetstream.ErrNoStreamResponse) {
			return fmt.Errorf("read it: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no replica answered a read within %s of its declaration: %w", BucketReadTimeout, err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}

// limitConsumers sets the consumer limits (see DefaultMaxConsumers) on the
// bucket's stream, which the KV API does not expose.
func limitConsumers(ctx context.Context, js jetstream.JetStream, name string, o BucketOptions) error {
	st, err := js.Stream(ctx, "KV_"+name)
	if err != nil {
		return err
	}
	cfg := st.CachedInfo().Config
	limits := jetstream.StreamConsumerLimits{InactiveThreshold: ConsumerInactiveLimit, MaxAckPending: ConsumerMaxAckPending}
	maxConsumers := o.MaxConsumers
	if maxConsumers <= 0 {
		maxConsumers = DefaultMaxConsumers
	}
	if cfg.MaxConsumers == maxConsumers && cfg.ConsumerLimits == limits {
		return nil
	}
	cfg.MaxConsumers, cfg.ConsumerLimits = maxConsumers, limits
	_, err = js.UpdateStream(ctx, cfg)
	return err
}

// EnsureBuckets declares every mesh bucket.
func EnsureBuckets(ctx context.Context, js jetstream.JetStream, o BucketOptions) error {
	for _, b := range Buckets() {
		if _, err := EnsureBucket(ctx, js, b, o); err != nil {
			return err
		}
	}
	return nil
}
