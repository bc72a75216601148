package service

import (
	"context"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/reconcile"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/secrets"
	"github.com/openservicemesh/osm/services/injector-webhook/internal/webhook"
)

// SecretsConfig configures how bootstrap Secrets are written and repaired.
type SecretsConfig struct {
	Writers      int
	QueueSize    int
	OwnerWait    time.Duration
	MissingGrace time.Duration
	OrphanGrace  time.Duration
}

// Flags registers the bootstrap Secret flags.
func (c *SecretsConfig) Flags(f *app.Flags) {
	f.Int(&c.Writers, "bootstrap-writers", 4, "workers that create bootstrap Secrets after admission has answered")
	f.Int(&c.QueueSize, "bootstrap-queue-size", 1024, "bootstrap Secrets that may wait for a writer; when full, admission writes the Secret itself")
	f.Duration(&c.OwnerWait, "bootstrap-owner-wait", 30*time.Second,
		"how long an admitted pod's bootstrap Secret waits, in memory, for the pod to appear, so that it is created already owned by the pod; "+
			"a Secret whose pod never appears (rejected after admission) is dropped unwritten. 0 writes Secrets at once and sets the owner with a second write")
	f.Duration(&c.MissingGrace, "bootstrap-missing-grace", 30*time.Second,
		"age at which an injected pod still without its bootstrap Secret (a write lost to a restart) gets a freshly issued one")
	f.Duration(&c.OrphanGrace, "bootstrap-orphan-grace", 5*time.Minute,
		"age at which a bootstrap Secret with no pod and no owner (the pod was rejected after admission) is deleted")
}

// Validate checks the bootstrap Secret flags.
func (c *SecretsConfig) Validate() error {
	if c.Writers < 1 {
		return app.FlagError("bootstrap-writers", "must be at least 1, got %d", c.Writers)
	}
	if c.QueueSize < 1 {
		return app.FlagError("bootstrap-queue-size", "must be at least 1, got %d", c.QueueSize)
	}
	if c.OwnerWait < 0 {
		return app.FlagError("bootstrap-owner-wait", "must not be negative, got %s", c.OwnerWait)
	}
	if c.OwnerWait > c.MissingGrace {
		// A pod whose Secret is still held would get a second one.
		return app.FlagError("bootstrap-owner-wait", "must not exceed --bootstrap-missing-grace (%s), got %s", c.MissingGrace, c.OwnerWait)
	}
	if c.MissingGrace < time.Second {
		// Shorter would race the writers and issue a second certificate for
		// most pods.
		return app.FlagError("bootstrap-missing-grace", "must be at least 1s, got %s", c.MissingGrace)
	}
	if c.OrphanGrace < time.Second {
		return app.FlagError("bootstrap-orphan-grace", "must be at least 1s, got %s", c.OrphanGrace)
	}
	return nil
}

var (
	_ webhook.SecretStore = (*secrets.Writer)(nil)
	_ reconcile.Claimer   = (*secrets.Writer)(nil)
)

// newWriter returns the asynchronous bootstrap Secret writer with its
// metrics: queue depth, write latency (from admission to the Secret stored)
// and failures.
func newWriter(meter metric.Meter, cs kubernetes.Interface, c SecretsConfig) (*secrets.Writer, error) {
	latency, err := seconds(meter, "osm_injector_bootstrap_write_seconds",
		"time from admission to the bootstrap Secret stored, retries included, by mode (async or sync fallback) and outcome")
	if err != nil {
		return nil, err
	}
	failures, err := counter(meter, "osm_injector_bootstrap_write_failures",
		"bootstrap Secrets not written after all attempts (the reconciler recreates them), by mode")
	if err != nil {
		return nil, err
	}
	dropped, err := counter(meter, "osm_injector_bootstrap_dropped",
		"bootstrap Secrets never written because their pod did not appear within --bootstrap-owner-wait (the apiserver rejected it after admission)")
	if err != nil {
		return nil, err
	}
	depth, err := meter.Int64ObservableGauge("osm_injector_bootstrap_queue_depth",
		metric.WithDescription("bootstrap Secrets waiting for their pod to appear or for a writer"))
	if err != nil {
		return nil, fmt.Errorf("metric osm_injector_bootstrap_queue_depth: %w", err)
	}
	w := secrets.New(secretCreator{cs}, secrets.Options{
		Workers: c.Writers, QueueSize: c.QueueSize, OwnerWait: c.OwnerWait,
		ObserveDrop: func() { dropped.Add(context.Background(), 1) },
		ObserveWrite: func(d time.Duration, attempts int, sync bool, err error) {
			mode, outcome := "async", "written"
			if sync {
				mode = "sync"
			}
			if err != nil {
				outcome = "failed"
				failures.Add(context.Background(), 1, metric.WithAttributes(attribute.String("mode", mode)))
			}
			latency.Record(context.Background(), d.Seconds(),
				metric.WithAttributes(attribute.String("mode", mode), attribute.String("outcome", outcome)))
		},
	})
	if _, err := meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(depth, int64(w.Len()))
		return nil
	}, depth); err != nil {
		return nil, fmt.Errorf("metric osm_injector_bootstrap_queue_depth callback: %w", err)
	}
	return w, nil
}

// secretCreator creates bootstrap Secrets.
type secretCreator struct{ cs kubernetes.Interface }

func (s secretCreator) Create(ctx context.Context, sec *corev1.Secret) error {
	_, err := s.cs.CoreV1().Secrets(sec.Namespace).Create(ctx, sec, metav1.CreateOptions{})
	return err
}

// newReconciler returns the bootstrap Secret reconciler with its metric.
func newReconciler(meter metric.Meter, log *logrus.Entry, cs kubernetes.Interface, md metadata.Interface,
	maker reconcile.Maker, claimer reconcile.Claimer, c SecretsConfig) (*reconcile.Reconciler, error) {
	actions, err := counter(meter, "osm_injector_bootstrap_reconciled",
		"bootstrap Secret repairs: recreated (write lost), owned (ownerReference to the pod set), orphan-deleted")
	if err != nil {
		return nil, err
	}
	return reconcile.New(reconcile.Options{
		Client: cs, Metadata: md, Maker: maker, Claimer: claimer, Log: log.WithField("component", "bootstrap-reconciler"),
		MissingGrace: c.MissingGrace, OrphanGrace: c.OrphanGrace,
		Observe: func(action string, err error) {
			actions.Add(context.Background(), 1, metric.WithAttributes(attribute.String("action", action), attribute.Bool("error", err != nil)))
		},
	}), nil
}
