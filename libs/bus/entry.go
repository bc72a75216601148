package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// headersKey is the context key of the extra headers WithHeader adds.
type headersKey struct{}

// WithHeader returns ctx carrying the message header name=value, which the
// Store writes made with it (Put, PutIfChanged, Delete, DeleteIfPresent)
// add to the message beside the trace context. Headers are not part of a
// value: readers that do not know a header ignore it, and PutIfChanged
// compares values only, so a header never causes a write.
func WithHeader(ctx context.Context, name, value string) context.Context {
	prev, _ := ctx.Value(headersKey{}).(nats.Header)
	h := make(nats.Header, len(prev)+1)
	for k, v := range prev {
		h[k] = v
	}
	h[name] = []string{value}
	return context.WithValue(ctx, headersKey{}, h)
}

// injectHeaders adds the headers of ctx (WithHeader) to h.
func injectHeaders(ctx context.Context, h nats.Header) {
	extra, _ := ctx.Value(headersKey{}).(nats.Header)
	for k, v := range extra {
		h[k] = v
	}
}

// Entry is the latest message of one key, as Last reads it.
type Entry struct {
	Key string
	// Revision is the stream sequence of the write.
	Revision uint64
	// Time is when the server stored it.
	Time time.Time
	// Deleted says the latest message is a delete (or purge) marker.
	Deleted bool
	// Value is the serialised protobuf; nil when Deleted.
	Value []byte
	// Header holds the writer's headers (trace context, WithHeader's).
	Header nats.Header
}

// Last reads the latest message of key, a delete marker included, with its
// headers and stored time. It returns an error wrapping ErrNotFound when
// the bucket holds no message of key. A reader needs only the bucket's
// stream info and direct gets (see readSubjects).
func (s *Store) Last(ctx context.Context, key string) (Entry, error) {
	if !ValidKey(key) {
		return Entry{}, fmt.Errorf("get %s/%q: %w (escape each part with Key)", s.bucket, key, ErrBadKey)
	}
	st, err := s.conn.js.Stream(ctx, "KV_"+s.bucket)
	if err != nil {
		return Entry{}, fmt.Errorf("get %s/%s: %w", s.bucket, key, err)
	}
	msg, err := st.GetLastMsgForSubject(ctx, s.prefix+key)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Entry{}, fmt.Errorf("get %s/%s: %w", s.bucket, key, ErrNotFound)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("get %s/%s: %w", s.bucket, key, err)
	}
	e := Entry{Key: key, Revision: msg.Sequence, Time: msg.Time, Value: msg.Data, Header: msg.Header}
	switch msg.Header.Get(hdrOperation) {
	case opDelete, opPurge:
		e.Deleted, e.Value = true, nil
	}
	return e, nil
}
