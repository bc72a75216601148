package webhookconfig

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/client-go/kubernetes"
)

// KeeperOptions configure a Keeper.
type KeeperOptions struct {
	// Client writes the configuration.
	Client kubernetes.Interface
	// Config describes the configuration; its CABundle is ignored, and
	// CABundle is asked instead at each write.
	Config Options
	// CABundle returns the current caBundle: an error until there is one.
	CABundle func() ([]byte, error)
	// Changed, when set, receives a value whenever CABundle has a new
	// answer (a new trust bundle); the Keeper then writes at once.
	Changed <-chan struct{}
	// Interval is how often the configuration is compared with the desired
	// one between changes (someone edited it, or the caBundle is a file
	// that changed); default 30 s.
	Interval time.Duration
	// Log receives a line per write and per failed attempt.
	Log *logrus.Entry
}

// Keeper writes the configuration when it starts and keeps it as desired
// while it runs; see KeeperOptions.
type Keeper struct {
	o       KeeperOptions
	written atomic.Bool
}

// NewKeeper returns a Keeper; call Start to run it.
func NewKeeper(o KeeperOptions) *Keeper {
	if o.Interval <= 0 {
		o.Interval = 30 * time.Second
	}
	if o.Log == nil {
		o.Log = logrus.NewEntry(logrus.New())
	}
	return &Keeper{o: o}
}

// Start brings the configuration to the desired one at once, then again on
// every Changed and every Interval, until ctx ends. A failed attempt is
// logged and tried again at the next of these; Start returns nil when ctx
// ends.
func (k *Keeper) Start(ctx context.Context) error {
	t := time.NewTicker(k.o.Interval)
	defer t.Stop()
	log := k.o.Log.WithContext(ctx).WithField("name", k.o.Config.Name)
	for {
		wrote, err := k.ensure(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			log.WithError(err).Warn("webhook configuration not updated")
		case wrote:
			log.Info("webhook configuration written")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-k.o.Changed:
		}
	}
}

// ensure writes the configuration unless it is already as desired, and
// reports whether it wrote.
func (k *Keeper) ensure(ctx context.Context) (bool, error) {
	ca, err := k.o.CABundle()
	if err != nil {
		return false, fmt.Errorf("caBundle: %w", err)
	}
	o := k.o.Config
	o.CABundle = ca
	desired, err := Desired(o)
	if err != nil {
		return false, err
	}
	wrote, err := Ensure(ctx, k.o.Client, desired)
	if err != nil {
		return false, err
	}
	k.written.Store(true)
	return wrote, nil
}

// Check is a readiness check: since Start, the configuration has been
// written, or found as desired, at least once.
func (k *Keeper) Check(context.Context) error {
	if !k.written.Load() {
		return errors.New("webhook configuration not written yet")
	}
	return nil
}
