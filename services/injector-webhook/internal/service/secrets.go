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
	"github.com/openservicemesh/osm/libs/cpcert"
	"github.com/openservicemesh/osm/libs/elect"
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
	// Election elects the replica that reconciles and renews.
	Election elect.Config
}

// Flags registers the bootstrap Secret flags.
func (c *SecretsConfig) Flags(f *app.Flags) {
	f.Int(&c.Writers, "bootstrap-writers", 4, "workers that create bootstrap Secrets after admission has answered")
	f.Int(&c.QueueSize, "bootstrap-queue-size", 1024,
		"bootstrap Secrets that may wait for their pod to appear, and for a writer; when full, a newly admitted pod's Secret is left to the reconciler (--bootstrap-missing-grace)")
	f.Duration(&c.OwnerWait, "bootstrap-owner-wait", 30*time.Second,
		"how long an admitted pod's bootstrap Secret waits, in memory and without a certificate, for the pod to appear; only then is its certificate issued "+
			"and the Secret created, owned by the pod. A Secret whose pod never appears (rejected after admission, or a forged request) is dropped, unsigned and unwritten")
	f.Duration(&c.MissingGrace, "bootstrap-missing-grace", 30*time.Second,
		"age at which an injected pod still without its bootstrap Secret (a write lost to a restart) gets a freshly issued one")
	f.Duration(&c.OrphanGrace, "bootstrap-orphan-grace", 5*time.Minute,
		"age at which a bootstrap Secret with no pod and no owner (the pod was rejected after admission) is deleted")
	c.Election.Flags(f, "osm-injector-webhook")
}

// Validate checks the bootstrap Secret flags.
func (c *SecretsConfig) Validate() error {
	if c.Writers < 1 {
		return app.FlagError("bootstrap-writers", "must be at least 1, got %d", c.Writers)
	}
	if c.QueueSize < 1 {
		return app.FlagError("bootstrap-queue-size", "must be at least 1, got %d", c.QueueSize)
	}
	if c.OwnerWait <= 0 {
		// Writing before the pod exists would sign for forged requests.
		return app.FlagError("bootstrap-owner-wait", "must be positive (a certificate is issued only once its pod exists), got %s", c.OwnerWait)
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
	return c.Election.Validate()
}

// leader runs the reconciler's workers (and so the renewal) on the one
// replica that holds the Lease, or here when --leader-elect is off. The
// gauge osm_injector_leader says whether this replica leads.
type leader struct {
	c        elect.Config
	cs       kubernetes.Interface
	ns, name string // the Lease's namespace; this replica's identity
	rec      *reconcile.Reconciler
	log      *logrus.Entry
}

func newLeader(meter metric.Meter, c elect.Config, cs kubernetes.Interface, ns, podName string,
	rec *reconcile.Reconciler, log *logrus.Entry) (*leader, error) {
	g, err := meter.Int64ObservableGauge("osm_injector_leader",
		metric.WithDescription("1 on the replica that reconciles and renews bootstrap Secrets (the holder of --lease-name), 0 on a standby"))
	if err != nil {
		return nil, fmt.Errorf("metric osm_injector_leader: %w", err)
	}
	if _, err := meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		v := int64(0)
		if rec.Leading() {
			v = 1
		}
		o.ObserveInt64(g, v)
		return nil
	}, g); err != nil {
		return nil, fmt.Errorf("metric osm_injector_leader callback: %w", err)
	}
	return &leader{c: c, cs: cs, ns: ns, name: podName, rec: rec, log: log.WithField("component", "bootstrap-leader")}, nil
}

// Start campaigns until ctx ends; see the type.
func (l *leader) Start(ctx context.Context) error {
	lead := func(ctx context.Context) {
		if err := l.rec.Lead(ctx); err != nil {
			l.log.WithContext(ctx).WithError(err).Error("bootstrap secret reconciler failed while leading")
		}
	}
	if !l.c.LeaderElect {
		lead(ctx)
		return nil
	}
	return elect.Run(ctx, l.c.Options(l.cs, l.ns, l.name, l.log), lead)
}

var (
	_ webhook.SecretStore = (*secrets.Writer)(nil)
	_ reconcile.Claimer   = (*secrets.Writer)(nil)
	_ secrets.Certifier   = (*webhook.Certifier)(nil)
)

// newWriter returns the asynchronous bootstrap Secret writer with its
// metrics: queue depth, write latency (from admission to the Secret stored)
// and failures. It issues each Secret's certificate through cert once the
// pod exists.
func newWriter(meter metric.Meter, cs kubernetes.Interface, cert secrets.Certifier, c SecretsConfig) (*secrets.Writer, error) {
	latency, err := seconds(meter, "osm_injector_bootstrap_write_seconds",
		"time from admission to the bootstrap Secret stored, the wait for the pod, the certificate and retries included, by outcome")
	if err != nil {
		return nil, err
	}
	failures, err := counter(meter, "osm_injector_bootstrap_write_failures",
		"bootstrap Secrets not written after all attempts (the reconciler recreates them)")
	if err != nil {
		return nil, err
	}
	dropped, err := counter(meter, "osm_injector_bootstrap_dropped",
		"bootstrap Secrets dropped unsigned and unwritten, by reason: unclaimed (the pod did not appear within --bootstrap-owner-wait: "+
			"rejected after admission, or a forged request), full (--bootstrap-queue-size Secrets waiting), stopped (shutdown)")
	if err != nil {
		return nil, err
	}
	depth, err := meter.Int64ObservableGauge("osm_injector_bootstrap_queue_depth",
		metric.WithDescription("bootstrap Secrets waiting for their pod to appear or for a writer"))
	if err != nil {
		return nil, fmt.Errorf("metric osm_injector_bootstrap_queue_depth: %w", err)
	}
	w := secrets.New(secretCreator{cs}, secrets.Options{
		Workers: c.Writers, QueueSize: c.QueueSize, OwnerWait: c.OwnerWait, Certifier: cert,
		ObserveDrop: func(reason string) {
			dropped.Add(context.Background(), 1, metric.WithAttributes(attribute.String("reason", reason)))
		},
		ObserveWrite: func(d time.Duration, _ int, err error) {
			outcome := "written"
			if err != nil {
				outcome = "failed"
				failures.Add(context.Background(), 1)
			}
			latency.Record(context.Background(), d.Seconds(), metric.WithAttributes(attribute.String("outcome", outcome)))
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

// newReconciler returns the bootstrap Secret reconciler with its metric:
// it repairs the Secrets and renews their certificates through iss, and
// their ca.crt from bundle.
func newReconciler(meter metric.Meter, log *logrus.Entry, cs kubernetes.Interface, md metadata.Interface,
	maker reconcile.Maker, claimer reconcile.Claimer, iss reconcile.Issuer, bundle *cpcert.Bundle, c SecretsConfig) (*reconcile.Reconciler, error) {
	actions, err := counter(meter, "osm_injector_bootstrap_reconciled",
		"bootstrap Secret repairs: recreated (write lost), owned (ownerReference to the pod set), orphan-deleted, "+
			"renewed (certificate reissued: half its lifetime passed, or its issuer left the trust bundle), trust-updated (ca.crt rewritten)")
	if err != nil {
		return nil, err
	}
	return reconcile.New(reconcile.Options{
		Client: cs, Metadata: md, Maker: maker, Claimer: claimer, Log: log.WithField("component", "bootstrap-reconciler"),
		Issuer: iss, Roots: bundle.RootsPEM, RootsChanged: bundle.Subscribe(),
		MissingGrace: c.MissingGrace, OrphanGrace: c.OrphanGrace,
		Observe: func(action string, err error) {
			actions.Add(context.Background(), 1, metric.WithAttributes(attribute.String("action", action), attribute.Bool("error", err != nil)))
		},
	}), nil
}
