package service

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// blocking runs until its context ends and reports when it did.
type blocking struct{ ended chan struct{} }

func newBlocking() *blocking { return &blocking{ended: make(chan struct{})} }

func (b *blocking) Start(ctx context.Context) error {
	<-ctx.Done()
	close(b.ended)
	return nil
}

// starterFunc adapts a function to starter.
type starterFunc func(ctx context.Context) error

func (f starterFunc) Start(ctx context.Context) error { return f(ctx) }

// within fails the test unless ch closes within 10 s.
func within(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not within 10s", what)
	}
}

// runAsync runs runParts on its own goroutine; the channel gets its result.
func runAsync(ctx context.Context, parts ...part) <-chan error {
	res := make(chan error, 1)
	go func() { res <- runParts(ctx, parts...) }()
	return res
}

func TestAFailingPartEndsTheServiceNamingIt(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	other := newBlocking()
	failing := make(chan struct{})
	res := runAsync(t.Context(),
		part{name: "other part", p: other},
		part{name: "failing part", p: starterFunc(func(context.Context) error {
			<-failing
			return errors.New("boom")
		})})
	close(failing)
	var err error
	select {
	case err = <-res:
	case <-time.After(10 * time.Second):
		t.Fatal("runParts did not return after a part failed")
	}
	if err == nil || err.Error() != "failing part: boom" {
		t.Fatalf("runParts returned %v, want the failing part's error with its name", err)
	}
	within(t, other.ended, "the other part's context ended")
}

func TestAPartThatStopsEarlyEndsTheService(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	other := newBlocking()
	err := runParts(t.Context(), part{name: "other part", p: other},
		part{name: "quitter", p: starterFunc(func(context.Context) error { return nil })})
	if err == nil || !strings.Contains(err.Error(), "quitter stopped while the service runs") {
		t.Fatalf("runParts returned %v, want the early stop named", err)
	}
	within(t, other.ended, "the other part's context ended")
}

func TestPartsStopCleanlyWhenTheContextEnds(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx, cancel := context.WithCancel(t.Context())
	a, b, done := newBlocking(), newBlocking(), make(chan struct{})
	res := runAsync(ctx, part{name: "a", p: a}, part{name: "b", p: b, done: done})
	select {
	case <-done:
		t.Fatal("done closed while the part runs")
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	if err := <-res; err != nil {
		t.Fatalf("runParts returned %v after its context ended", err)
	}
	within(t, done, "done closed once the part returned")
}

func TestStartsAfterWaitsForItsGates(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	gate1, gate2 := make(chan struct{}), make(chan struct{})
	started := make(chan struct{})
	p := startsAfter{after: []<-chan struct{}{gate1, gate2}, p: starterFunc(func(ctx context.Context) error {
		close(started)
		<-ctx.Done()
		return nil
	})}
	res := make(chan error, 1)
	go func() { res <- p.Start(ctx) }()
	close(gate1)
	select {
	case <-started:
		t.Fatal("started with a gate still shut")
	case <-time.After(50 * time.Millisecond):
	}
	close(gate2)
	within(t, started, "started once every gate opened")
	cancel()
	if err := <-res; err != nil {
		t.Fatal(err)
	}

	// The context ends first: the part never starts.
	ctx2, cancel2 := context.WithCancel(t.Context())
	cancel2()
	never := startsAfter{after: []<-chan struct{}{make(chan struct{})}, p: starterFunc(func(context.Context) error {
		t.Error("started although its context had ended")
		return nil
	})}
	if err := never.Start(ctx2); err != nil {
		t.Fatal(err)
	}
}

func TestStopsAfterOutlivesThePartItFollows(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx, cancel := context.WithCancel(t.Context())
	after := make(chan struct{})
	inner := newBlocking()
	res := make(chan error, 1)
	go func() { res <- stopsAfter{p: inner, after: after}.Start(ctx) }()
	cancel()
	select {
	case <-inner.ended:
		t.Fatal("stopped before the part it follows")
	case <-time.After(50 * time.Millisecond):
	}
	close(after)
	within(t, inner.ended, "stopped once the part it follows had")
	if err := <-res; err != nil {
		t.Fatal(err)
	}

	// A failure of its own returns at once.
	failed := stopsAfter{p: starterFunc(func(context.Context) error { return errors.New("boom") }), after: make(chan struct{})}
	if err := failed.Start(t.Context()); err == nil || err.Error() != "boom" {
		t.Fatalf("Start returned %v, want boom", err)
	}
}
