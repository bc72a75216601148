package bus

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
)

// ErrConflict is returned by Create when the key already holds a value and
// by Update when the key's revision is no longer the one given: another
// writer got there first.
var ErrConflict = errors.New("revision conflict")

// Create writes m under key only if the key holds no value (it may have been
// deleted), and returns the new revision.
func (s *Store) Create(ctx context.Context, key string, m proto.Message) (uint64, error) {
	data, err := marshal.Marshal(m)
	if err != nil {
		return 0, fmt.Errorf("create %s/%s: marshal: %w", s.bucket, key, err)
	}
	rev, err := s.kv.Create(ctx, key, data)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("create %s/%s: %w", s.bucket, key, ErrConflict)
	}
	if err != nil {
		return 0, fmt.Errorf("create %s/%s: %w", s.bucket, key, err)
	}
	s.remember(key, data)
	return rev, nil
}

// Update writes m under key only if the key's current revision is rev, and
// returns the new revision.
func (s *Store) Update(ctx context.Context, key string, m proto.Message, rev uint64) (uint64, error) {
	data, err := marshal.Marshal(m)
	if err != nil {
		return 0, fmt.Errorf("update %s/%s: marshal: %w", s.bucket, key, err)
	}
	next, err := s.kv.Update(ctx, key, data, rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("update %s/%s at revision %d: %w", s.bucket, key, rev, ErrConflict)
	}
	if err != nil {
		return 0, fmt.Errorf("update %s/%s: %w", s.bucket, key, err)
	}
	s.remember(key, data)
	return next, nil
}
