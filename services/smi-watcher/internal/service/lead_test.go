package service

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// TestLeadBackoffStartsOverAfterALongTerm: after failed takeovers have
// grown the wait between terms, a term that lasted (a watcher that led for
// hours and then lost NATS) is followed by the shortest wait again, not by
// the longest one the earlier failures reached.
func TestLeadBackoffStartsOverAfterALongTerm(t *testing.T) {
	p := leadPacing{base: 50 * time.Millisecond, max: 3200 * time.Millisecond, settled: 300 * time.Millisecond}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var calls int
	var longEnded, nextStarted time.Time
	done := make(chan struct{})
	lead := func(ctx context.Context) error {
		calls++
		switch {
		case calls <= 6: // failed takeovers: the wait grows to 1.6 s and more
			return errors.New("no bucket")
		case calls == 7: // a term that lasted
			time.Sleep(p.settled + 50*time.Millisecond)
			longEnded = time.Now()
			return errors.New("term ended")
		default:
			nextStarted = time.Now()
			close(done)
			<-ctx.Done()
			return ctx.Err()
		}
	}
	log := logrus.New()
	log.SetLevel(logrus.PanicLevel)
	go leadLoop(ctx, lead, func(context.Context) {}, p, logrus.NewEntry(log))
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("the loop did not reach the term after the long one (%d calls)", calls)
	}
	if gap := nextStarted.Sub(longEnded); gap > 4*p.base {
		t.Errorf("the next term started %s after a term that lasted, want at most %s (the backoff did not start over)", gap, 4*p.base)
	}
}
