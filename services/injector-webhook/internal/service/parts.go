package service

import (
	"context"
	"fmt"
	"sync"

	"golang.org/x/sync/errgroup"
)

// starter is a long-running part of the service: Start runs it until ctx
// ends and returns nil then, or returns the error that stopped it.
type starter interface {
	Start(ctx context.Context) error
}

// part is a starter with the name its errors carry.
type part struct {
	name string
	p    starter
	// done, when set, is closed once Start has returned.
	done chan struct{}
}

// runParts runs every part under one errgroup until ctx ends or a part
// fails. A failure, or a part that returns before ctx ends, cancels the
// others and is returned with the part's name; runParts returns once every
// part has returned.
func runParts(ctx context.Context, parts ...part) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, pt := range parts {
		g.Go(func() error {
			if pt.done != nil {
				defer close(pt.done)
			}
			err := pt.p.Start(gctx)
			switch {
			case err != nil:
				return fmt.Errorf("%s: %w", pt.name, err)
			case gctx.Err() == nil:
				return fmt.Errorf("%s stopped while the service runs", pt.name)
			}
			return nil
		})
	}
	return g.Wait()
}

// startsAfter starts p once every channel in after has closed; when ctx
// ends first, p never starts.
type startsAfter struct {
	p     starter
	after []<-chan struct{}
}

// Start implements starter.
func (s startsAfter) Start(ctx context.Context) error {
	for _, ch := range s.after {
		select {
		case <-ch:
		case <-ctx.Done():
			return nil
		}
	}
	return s.p.Start(ctx)
}

// stopsAfter runs p with a context that ends once ctx has ended and after
// has closed, so that p outlives the part that closes after.
type stopsAfter struct {
	p     starter
	after <-chan struct{}
}

// Start implements starter.
func (s stopsAfter) Start(ctx context.Context) error {
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-ctx.Done():
			select {
			case <-s.after:
			case <-pctx.Done():
			}
		case <-pctx.Done():
		}
		cancel()
	})
	err := s.p.Start(pctx)
	cancel()
	wg.Wait()
	return err
}
