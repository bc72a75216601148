package bus

import (
	"context"
	"crypto/sha256"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
)

// maxInFlight bounds the unacknowledged publishes of one Flush.
const maxInFlight = 1024

// Batch collects writes to one Store and sends them pipelined: Flush
// publishes every message without waiting for each acknowledgement, then
// waits for all of them. Writing many keys this way costs about one round
// trip per window of maxInFlight keys instead of one per key. Puts and
// deletes that would change nothing are dropped when queued, as with
// PutIfChanged and DeleteIfPresent. A Batch is not safe for concurrent use.
type Batch struct {
	s       *Store
	pending []batchMsg
}

type batchMsg struct {
	msg    *nats.Msg
	key    string
	digest [sha256.Size]byte
	delete bool
}

// Batch starts a batch of writes.
func (s *Store) Batch() *Batch { return &Batch{s: s} }

// Len is the number of queued writes.
func (b *Batch) Len() int { return len(b.pending) }

// Put queues a put of m under key.
func (b *Batch) Put(ctx context.Context, key string, m proto.Message) error {
	data, sum, err := b.encode(key, m)
	if err != nil {
		return err
	}
	return b.queuePut(ctx, key, data, sum)
}

// PutIfChanged queues a put of m under key unless the key already holds the
// same value; it reports whether it queued.
func (b *Batch) PutIfChanged(ctx context.Context, key string, m proto.Message) (bool, error) {
	data, sum, err := b.encode(key, m)
	if err != nil {
		return false, err
	}
	known, present, err := b.s.knownDigest(ctx, key)
	if err != nil {
		return false, err
	}
	if present && known == sum {
		return false, nil
	}
	return true, b.queuePut(ctx, key, data, sum)
}

func (b *Batch) encode(key string, m proto.Message) ([]byte, [sha256.Size]byte, error) {
	if !ValidKey(key) {
		return nil, [sha256.Size]byte{}, fmt.Errorf("put %s/%q: %w (escape each part with Key)", b.s.bucket, key, ErrBadKey)
	}
	data, err := marshal.Marshal(m)
	if err != nil {
		return nil, [sha256.Size]byte{}, fmt.Errorf("put %s/%s: marshal: %w", b.s.bucket, key, err)
	}
	return data, sha256.Sum256(data), nil
}

func (b *Batch) queuePut(ctx context.Context, key string, data []byte, sum [sha256.Size]byte) error {
	msg := &nats.Msg{Subject: b.s.prefix + key, Data: data, Header: nats.Header{}}
	InjectTrace(ctx, msg.Header)
	b.s.fenceHeader(msg.Header) // set again at Flush; here for its size
	if limit := b.s.maxPayload(); len(data)+headerSize(msg.Header) > limit {
		return fmt.Errorf("put %s/%s: %w: %d bytes, the limit is %d", b.s.bucket, key, ErrTooLarge, len(data), limit)
	}
	b.pending = append(b.pending, batchMsg{msg: msg, key: key, digest: sum})
	return nil
}

// Delete queues a delete of key.
func (b *Batch) Delete(ctx context.Context, key string) error {
	if !ValidKey(key) {
		return fmt.Errorf("delete %s/%q: %w (escape each part with Key)", b.s.bucket, key, ErrBadKey)
	}
	msg := &nats.Msg{Subject: b.s.prefix + key, Header: nats.Header{}}
	msg.Header.Set(hdrOperation, opDelete)
	InjectTrace(ctx, msg.Header)
	b.pending = append(b.pending, batchMsg{msg: msg, key: key, delete: true})
	return nil
}

// DeleteIfPresent queues a delete of key if it holds a value; it reports
// whether it queued.
func (b *Batch) DeleteIfPresent(ctx context.Context, key string) (bool, error) {
	if !ValidKey(key) {
		return false, fmt.Errorf("delete %s/%q: %w (escape each part with Key)", b.s.bucket, key, ErrBadKey)
	}
	_, present, err := b.s.knownDigest(ctx, key)
	if err != nil || !present {
		return false, err
	}
	return true, b.Delete(ctx, key)
}

// Flush sends the queued writes, in order, and waits until the server has
// stored every one. On error some writes may have been stored; the Store
// then forgets what it knew of the failed keys, so a retry rewrites them.
func (b *Batch) Flush(ctx context.Context) error {
	queued := b.pending
	b.pending = nil
	if b.s.serialFence() {
		return b.flushInOrder(ctx, queued)
	}
	for start := 0; start < len(queued); start += maxInFlight {
		window := queued[start:min(start+maxInFlight, len(queued))]
		futures := make([]jetstream.PubAckFuture, len(window))
		var firstErr error
		for i, m := range window {
			b.s.fenceHeader(m.msg.Header)
			f, err := b.s.conn.js.PublishMsgAsync(m.msg)
			if err != nil {
				firstErr = fmt.Errorf("put %s/%s: %w", b.s.bucket, m.key, fencedErr(b.s.conn.explain(m.msg.Subject, err)))
				window = window[:i]
				break
			}
			futures[i] = f
		}
		for i, m := range window {
			select {
			case <-futures[i].Ok():
				b.s.mu.Lock()
				if m.delete {
					delete(b.s.digest, m.key)
				} else {
					b.s.digest[m.key] = m.digest
				}
				b.s.mu.Unlock()
			case err := <-futures[i].Err():
				b.s.forgetKey(m.key)
				if firstErr == nil {
					firstErr = fmt.Errorf("put %s/%s: %w", b.s.bucket, m.key, fencedErr(b.s.conn.explain(m.msg.Subject, err)))
				}
			case <-ctx.Done():
				for _, rest := range window[i:] {
					b.s.forgetKey(rest.key)
				}
				return fmt.Errorf("flush %s: %w", b.s.bucket, ctx.Err())
			}
		}
		if firstErr != nil {
			for _, rest := range queued[start+len(window):] {
				b.s.forgetKey(rest.key)
			}
			return firstErr
		}
	}
	return nil
}

// forgetKey drops what the store knows of key, so the next write asks the
// server.
func (s *Store) forgetKey(key string) {
	s.mu.Lock()
	delete(s.digest, key)
	if s.primed {
		// A primed store treats unknown keys as absent; after a failed
		// write that is no longer certain.
		s.primed = false
	}
	s.mu.Unlock()
}

// serialFence reports whether the store's writes are fenced in a
// replicated bucket: its leader takes one fenced write at a time (every
// one expects the fence key's sequence, see Store.publish), so pipelined
// writes would be refused, and retrying them one by one could reorder
// them (a generation record landing before a key it covers).
func (s *Store) serialFence() bool {
	return s.fence.Load() != nil && s.declared != nil && s.declared.Replicas > 1
}

// flushInOrder sends the queued writes one at a time, each once the
// previous one is stored (see serialFence).
func (b *Batch) flushInOrder(ctx context.Context, queued []batchMsg) error {
	for i, m := range queued {
		b.s.fenceHeader(m.msg.Header)
		if _, err := b.s.publish(ctx, m.msg); err != nil {
			for _, rest := range queued[i:] {
				b.s.forgetKey(rest.key)
			}
			return fmt.Errorf("put %s/%s: %w", b.s.bucket, m.key, fencedErr(b.s.conn.explain(m.msg.Subject, err)))
		}
		b.s.mu.Lock()
		if m.delete {
			delete(b.s.digest, m.key)
		} else {
			b.s.digest[m.key] = m.digest
		}
		b.s.mu.Unlock()
	}
	return nil
}
