package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
)

// EventKind says what a watch event is.
type EventKind int

// The kinds of watch events.
const (
	// EventPut is a new or changed value.
	EventPut EventKind = iota + 1
	// EventDelete is a deleted (or purged) key.
	EventDelete
	// EventInitialized comes exactly once, after the values present when the
	// watch started; every event after it is a live update.
	EventInitialized
)

func (k EventKind) String() string {
	switch k {
	case EventPut:
		return "put"
	case EventDelete:
		return "delete"
	case EventInitialized:
		return "initialized"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one watch delivery.
type Event struct {
	Kind EventKind
	// Key is the escaped key (split it with SplitKey).
	Key string
	// Value is the serialised protobuf (EventPut only).
	Value []byte
	// Revision is the stream sequence of the write.
	Revision uint64
	// Time is when the server stored the write.
	Time time.Time
	// Context carries the writer's trace context, extracted from the headers.
	Context context.Context
}

// Decode unmarshals the event's value into m.
func (e Event) Decode(m proto.Message) error {
	if err := proto.Unmarshal(e.Value, m); err != nil {
		return fmt.Errorf("decode %s: %w", e.Key, err)
	}
	return nil
}

// Watcher delivers the current values of the keys matching a pattern, then
// EventInitialized, then every later change. It keeps going across NATS
// disconnects and server restarts: when its consumer is lost it recreates one
// that resumes after the last revision it delivered.
type Watcher struct {
	bucket string
	events chan Event
	cancel context.CancelFunc
	done   chan struct{}

	mu  sync.Mutex
	err error
}

// Events is the channel of deliveries. It is closed when the watch stops.
func (w *Watcher) Events() <-chan Event { return w.events }

// Stop ends the watch and waits for its goroutine.
func (w *Watcher) Stop() {
	w.cancel()
	<-w.done
}

// Err is the reason the watch ended: an error of its own, or the context's
// error when it was stopped.
func (w *Watcher) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Ended is what a loop reading Events returns once the channel is closed:
// nil when ctx has ended (the caller is stopping, which closed the watch),
// otherwise the watch's own error, naming the bucket.
func (w *Watcher) Ended(ctx context.Context) error {
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("watch %s ended: %w", w.bucket, w.Err())
}

// Watch starts a watch on the keys matching pattern (NATS wildcards: "*"
// for one token, ">" for the rest; ">" or "" for every key). Cancelling ctx
// stops it.
func (s *Store) Watch(ctx context.Context, pattern string) (*Watcher, error) {
	if pattern == "" {
		pattern = ">"
	}
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{s.prefix + pattern},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
		// Recover without limit: a watcher must outlive a server restart.
		MaxResetAttempts: -1,
	}
	stream := "KV_" + s.bucket
	cons, err := s.conn.js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("watch %s/%s: %w", s.bucket, pattern, err)
	}
	pending := cons.CachedInfo().NumPending
	created := s.created(ctx)
	it, err := cons.Messages(jetstream.PullHeartbeat(time.Second), jetstream.PullExpiry(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("watch %s/%s: %w", s.bucket, pattern, err)
	}
	wctx, cancel := context.WithCancel(ctx)
	w := &Watcher{bucket: s.bucket, events: make(chan Event, 256), cancel: cancel, done: make(chan struct{})}
	go w.run(wctx, s, it, pending, created)
	return w, nil
}

// ErrBucketRecreated ends a watch whose bucket was deleted and declared
// again (or whose JetStream lost its store): its revisions started over, so
// the watch cannot resume where it was. Watch again to get the bucket's
// whole content.
var ErrBucketRecreated = errors.New("the bucket was recreated; watch it again")

// recreatedCheck is how often an idle watch checks that its bucket is the
// one it started on.
const recreatedCheck = 2 * time.Second

// created is when the bucket's stream was created, zero if unknown.
func (s *Store) created(ctx context.Context) time.Time {
	st, err := s.conn.js.Stream(ctx, "KV_"+s.bucket)
	if err != nil {
		return time.Time{}
	}
	return st.CachedInfo().Created
}

func (w *Watcher) run(ctx context.Context, s *Store, it jetstream.MessagesContext, pending uint64, created time.Time) {
	defer close(w.done)
	defer close(w.events)
	defer it.Stop()
	defer func() {
		w.mu.Lock()
		if w.err == nil && ctx.Err() != nil {
			w.err = ctx.Err()
		}
		w.mu.Unlock()
	}()
	initialized := false
	send := func(ev Event) bool {
		select {
		case w.events <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	if pending == 0 {
		initialized = true
		if !send(Event{Kind: EventInitialized, Context: ctx}) {
			return
		}
	}
	lastCheck := time.Now()
	for {
		nctx, cancel := context.WithTimeout(ctx, recreatedCheck)
		msg, err := it.Next(jetstream.NextContext(nctx))
		cancel()
		if time.Since(lastCheck) >= recreatedCheck && !created.IsZero() {
			// A recreated bucket starts its revisions over; the ordered
			// consumer would wait past the old ones and miss everything.
			lastCheck = time.Now()
			if now := s.created(ctx); !now.IsZero() && !now.Equal(created) {
				w.mu.Lock()
				w.err = fmt.Errorf("watch %s: %w", s.bucket, ErrBucketRecreated)
				w.mu.Unlock()
				return
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, context.DeadlineExceeded) {
				continue // the check above ran
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				w.mu.Lock()
				w.err = fmt.Errorf("watch %s: %w", s.bucket, err)
				w.mu.Unlock()
				return
			}
			// Timeouts and transient errors: the ordered consumer resets
			// itself; wait a little and ask again.
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		meta, err := msg.Metadata()
		if err != nil {
			continue
		}
		ev := Event{
			Key:      msg.Subject()[len(s.prefix):],
			Revision: meta.Sequence.Stream,
			Time:     meta.Timestamp,
			Context:  ExtractTrace(ctx, msg.Headers()),
			Kind:     EventPut,
			Value:    msg.Data(),
		}
		switch msg.Headers().Get(hdrOperation) {
		case opDelete, opPurge:
			ev.Kind, ev.Value = EventDelete, nil
		}
		// A delete among the initial values is a key that is simply absent.
		if initialized || ev.Kind == EventPut {
			if !send(ev) {
				return
			}
		}
		if !initialized && meta.NumPending == 0 {
			initialized = true
			if !send(Event{Kind: EventInitialized, Context: ctx}) {
				return
			}
		}
	}
}
