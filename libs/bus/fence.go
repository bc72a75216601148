package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// FenceKey is the key in which a bucket's writer claims its term (see
// Store.Claim). Readers skip it: it is no part of the bucket's content.
const FenceKey = "writer-term"

// ErrFenced is returned for a write the server refused because another
// writer claimed a newer term of the bucket since: this writer is deposed
// and must stop writing.
var ErrFenced = errors.New("fenced: another writer claimed a newer term of the bucket")

// The JetStream headers of the fence: a write lands only while the last
// message on the fence key is the one this writer's claim wrote.
const (
	hdrExpectedLastSubjSeq     = "Nats-Expected-Last-Subject-Sequence"
	hdrExpectedLastSubjSeqSubj = "Nats-Expected-Last-Subject-Sequence-Subject"
)

// fence is a claimed term: every write carries the sequence of the claim.
type fence struct {
	term    uint64
	seq     uint64
	subject string
}

// Claim makes this store the bucket's writer for term, a number that grows
// with every new leader (a lease term, or the watcher's sync epoch). It
// writes FenceKey, and from then on every write of the store (Put, Delete,
// and a Batch's) carries the claim's sequence as the expected last
// sequence of FenceKey, so the server refuses it, with ErrFenced, once a
// newer term is claimed: a deposed leader's late writes never land,
// however long it stalled, without readers having to tell them apart.
//
// A claim fails with ErrFenced when the bucket's term is already term or
// newer, or when another writer claims at the same time (compare and set).
func (s *Store) Claim(ctx context.Context, term uint64, holder string) error {
	var expected uint64
	e, err := s.kv.Get(ctx, FenceKey)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return fmt.Errorf("claim term %d of %s: %w", term, s.bucket, err)
	default:
		if cur, _ := parseTerm(e.Value()); cur >= term {
			return fmt.Errorf("claim term %d of %s: %w (the bucket is at term %d)", term, s.bucket, ErrFenced, cur)
		}
		expected = e.Revision()
	}
	msg := &nats.Msg{Subject: s.prefix + FenceKey, Data: []byte(strconv.FormatUint(term, 10) + " " + holder), Header: nats.Header{}}
	msg.Header.Set(hdrExpectedLastSubjSeq, strconv.FormatUint(expected, 10))
	ack, err := s.publish(ctx, msg)
	if err != nil {
		return fmt.Errorf("claim term %d of %s: %w", term, s.bucket, fencedErr(s.conn.explain(msg.Subject, err)))
	}
	s.fence.Store(&fence{term: term, seq: ack.Sequence, subject: msg.Subject})
	return nil
}

// Superseded reports whether the bucket's fence holds a newer term than
// the one this store claimed: after ErrFenced, true means another writer
// leads, false that the claim itself is gone (the bucket was deleted and
// recreated, or JetStream lost its store), and the writer may claim again.
func (s *Store) Superseded(ctx context.Context) (bool, error) {
	e, err := s.kv.Get(ctx, FenceKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read the fence of %s: %w", s.bucket, err)
	}
	cur, _ := parseTerm(e.Value())
	f := s.fence.Load()
	return f == nil || cur > f.term || (cur == f.term && e.Revision() != f.seq), nil
}

// Gone reports whether the bucket's stream no longer exists (deleted, or
// JetStream lost its store). A call that got no responders may mean that,
// or only that the stream is electing a leader after a NATS node died;
// this tells them apart, and errs when it cannot tell.
func (s *Store) Gone(ctx context.Context) (bool, error) {
	_, err := s.conn.js.Stream(ctx, "KV_"+s.bucket)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up the bucket %s: %w", s.bucket, err)
	}
	return false, nil
}

// ClaimLost reports whether this store's claim is gone from the bucket
// without a newer writer having claimed it: the key or the whole bucket
// was deleted (and maybe recreated), or JetStream lost its store. A writer
// that polls it notices the loss even when it has nothing to write.
func (s *Store) ClaimLost(ctx context.Context) (bool, error) {
	f := s.fence.Load()
	if f == nil {
		return false, nil
	}
	e, err := s.kv.Get(ctx, FenceKey)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrStreamNotFound):
		return true, nil
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		// Gone, or only electing a leader after a NATS node died.
		return s.Gone(ctx)
	case err != nil:
		return false, fmt.Errorf("read the fence of %s: %w", s.bucket, err)
	}
	cur, _ := parseTerm(e.Value())
	return cur < f.term || (cur == f.term && e.Revision() != f.seq), nil
}

// Unclaim stops fencing this store's writes (the term ended).
func (s *Store) Unclaim() { s.fence.Store(nil) }

// Term is the term this store claimed, 0 for none.
func (s *Store) Term() uint64 {
	if f := s.fence.Load(); f != nil {
		return f.term
	}
	return 0
}

// fenceHeader adds the claim's headers to a write.
func (s *Store) fenceHeader(h nats.Header) {
	if f := s.fence.Load(); f != nil {
		h.Set(hdrExpectedLastSubjSeq, strconv.FormatUint(f.seq, 10))
		h.Set(hdrExpectedLastSubjSeqSubj, f.subject)
	}
}

// fencedErr wraps ErrFenced around the server's refusal of a fenced write.
func fencedErr(err error) error {
	var api *jetstream.APIError
	if errors.As(err, &api) && (api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return fmt.Errorf("%w: %w", ErrFenced, err)
	}
	return err
}

// parseTerm reads a FenceKey value, "<term> <holder>".
func parseTerm(v []byte) (uint64, string) {
	t, holder, _ := strings.Cut(string(v), " ")
	n, _ := strconv.ParseUint(t, 10, 64)
	return n, holder
}

// inFlightRetry bounds how long a fenced write is retried while another
// one of the bucket is in flight.
const inFlightRetry = 10 * time.Second

// inFlight reports a refusal of a replicated stream's leader that only
// says another write expecting the same subject's sequence (the fence key)
// is still being replicated: it answers JSErrCodeStreamWrongLastSequenceConstant
// without looking at the sequence (a real mismatch is
// JSErrCodeStreamWrongLastSequence, with the sequence). A single server
// applies writes one by one and never answers it.
func inFlight(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) && api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}

// publish publishes a write of the store. A fenced write that the leader
// of a replicated bucket refuses because another fenced write is in flight
// (every fenced write names the fence key: on a NATS cluster they go one
// at a time) is sent again until it is decided, for up to inFlightRetry.
// Before, the writer took the refusal for ErrFenced: on a 3-server
// cluster the smi-watcher, writing with 16 workers, found its claim intact
// after each such refusal, took it for lost, and started a new epoch again
// and again without ever syncing mesh-observed (issue 15, F2).
func (s *Store) publish(ctx context.Context, msg *nats.Msg) (*jetstream.PubAck, error) {
	delay, deadline := time.Millisecond, time.Now().Add(inFlightRetry)
	for {
		ack, err := s.conn.js.PublishMsg(ctx, msg)
		if err == nil || !inFlight(err) || time.Now().After(deadline) {
			return ack, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(delay):
		}
		delay = min(2*delay, 50*time.Millisecond)
	}
}
