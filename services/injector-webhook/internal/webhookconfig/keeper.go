package webhookconfig

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/client-go/kubernetes"
)

// KeeperOptions configure a Keeper.
type KeeperOptions struct {
	// Client writes the configuration.
	Client kubernetes.Interface
	// Config describes the MutatingWebhookConfiguration (none when its
	// Name is empty); its CABundle is ignored, and CABundle is asked
	// instead at each write.
	Config Options
	// Validating describes the ValidatingWebhookConfiguration of the
	// policy kinds (none when its Name is empty); CABundle likewise.
	Validating ValidatingOptions
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

// Keeper writes the webhook configurations when it starts and keeps them
// as desired while it runs, both with the same caBundle; see KeeperOptions.
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
	log := k.o.Log.WithContext(ctx)
	for {
		wrote, err := k.ensure(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			log.WithError(err).Warn("webhook configuration not updated")
		case len(wrote) > 0:
			log.WithField("name", strings.Join(wrote, ",")).Info("webhook configuration written")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-k.o.Changed:
		}
	}
}

// ensure writes each configuration that is not already as desired, and
// returns the names of those it wrote.
func (k *Keeper) ensure(ctx context.Context) ([]string, error) {
	ca, err := k.o.CABundle()
	if err != nil {
		return nil, fmt.Errorf("caBundle: %w", err)
	}
	var wrote []string
	if k.o.Config.Name != "" {
		o := k.o.Config
		o.CABundle = ca
		desired, err := Desired(o)
		if err != nil {
			return nil, err
		}
		w, err := Ensure(ctx, k.o.Client, desired)
		if err != nil {
			return nil, err
		}
		if w {
			wrote = append(wrote, o.Name)
		}
	}
	if k.o.Validating.Name != "" {
		o := k.o.Validating
		o.CABundle = ca
		desired, err := DesiredValidating(o)
		if err != nil {
			return wrote, err
		}
		w, err := EnsureValidating(ctx, k.o.Client, desired)
		if err != nil {
			return wrote, err
		}
		if w {
			wrote = append(wrote, o.Name)
		}
	}
	k.written.Store(true)
	return wrote, nil
}

// Check is a readiness check: since Start, every configuration has been
// written, or found as desired, at least once.
func (k *Keeper) Check(context.Context) error {
	if !k.written.Load() {
		return errors.New("webhook configuration not written yet")
	}
	return nil
}
