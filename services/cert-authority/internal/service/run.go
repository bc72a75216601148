package service

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/libs/backoff"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/kube"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/meshcfg"
	"github.com/openservicemesh/osm/services/cert-authority/internal/builtin"
	"github.com/openservicemesh/osm/services/cert-authority/internal/pki"
	"github.com/openservicemesh/osm/services/cert-authority/internal/server"
	"github.com/openservicemesh/osm/services/cert-authority/internal/trust"
	"github.com/openservicemesh/osm/services/cert-authority/internal/vault"
)

// grpcGrace is how long the gRPC server's graceful stop may take before
// open calls are cut.
const grpcGrace = 10 * time.Second

// connectionAgeGrace is how long a connection past --max-connection-age may
// finish its calls.
const connectionAgeGrace = 30 * time.Second

// The waits between attempts of a startup step (libs/backoff).
const (
	startRetryBase = 500 * time.Millisecond
	startRetryMax  = 10 * time.Second
)

// provider is what the service needs of the built-in or Vault provider.
type provider interface {
	server.Signer
	trust.Source
}

// part is a long-running piece of the service, run under its errgroup.
type part interface {
	Start(ctx context.Context) error
}

// run serves the CA until ctx ends. The steps that must succeed before it
// can serve (the Vault login, the first bundle, the serving certificate)
// are retried until they do; the parts started before a step fails are
// stopped and waited for.
func (c *config) run(ctx context.Context, rt *app.Runtime, o Options) error {
	log := rt.Log
	kube.BridgeKlog(log)
	ctx, cancel := context.WithCancel(ctx)
	g, gctx := errgroup.WithContext(ctx)
	defer func() { cancel(); _ = g.Wait() }()
	start := func(p part) { g.Go(func() error { return p.Start(gctx) }) }
	// Registered first, so that /readyz cannot pass on the checks added so
	// far while later steps (and their checks) are still to come.
	var serving atomic.Bool
	rt.Health.AddReadyCheck("grpc", func(context.Context) error {
		if !serving.Load() {
			return errors.New("starting: the gRPC listener is not serving yet")
		}
		return nil
	})

	client, kubeErr := c.kubeClient()
	prov, err := c.openProvider(ctx, log, rt.Health, client, kubeErr)
	if err != nil {
		return err
	}
	if vp, ok := prov.(*vault.Provider); ok {
		// Ready while Vault answers; the token keeper renews the login.
		rt.Health.AddReadyCheck("vault", vp.Check)
		start(vp)
	}
	var reviewer server.TokenReviewer
	if kubeErr == nil {
		reviewer = server.NewKubeReviewer(client, app.SplitList(c.tokenAudiences))
	} else {
		log.WithError(kubeErr).Warn("no apiserver access: Bootstrap with ServiceAccount tokens is disabled")
	}
	accounts, err := c.roleAccounts()
	if err != nil {
		return err
	}

	hub := trust.NewHub()
	refresher := trust.NewRefresher(prov, hub, c.bundleRefresh, log)
	if err := retryUntil(ctx, log, "load trust bundle", refresher.Load); err != nil {
		return err
	}
	start(refresher)
	conn, err := rt.Bus(ctx, bus.RoleCA)
	if err != nil {
		return err
	}
	pub, err := c.publisher(ctx, rt, conn, hub)
	if err != nil {
		return err
	}
	// The MeshConfig's spec.observability (log level, pprof), live, from
	// the smi-watcher's copy in mesh-observed; until that bucket exists
	// (no watcher yet) --log-level and --enable-pprof rule.
	follower, err := meshcfg.New(meshcfg.Options{Conn: conn, Namespace: c.cp.Namespace, Name: c.cp.MeshConfig,
		Log: log.WithField("part", "meshconfig"), Apply: rt.ApplyObservability})
	if err != nil {
		return err
	}
	start(follower)
	rt.Health.AddReadyCheck("trust-bundle-published", func(context.Context) error {
		b, _ := hub.Current()
		if b == nil || pub.Published() != b.Version {
			return errors.New("the current trust bundle is not in " + bus.BucketTrust + " yet")
		}
		return nil
	})
	start(pub)

	srv, err := server.New(server.Options{
		Signer:       prov,
		Hub:          hub,
		Workload:     pki.Policy{TrustDomain: c.cp.TrustDomain, DefaultTTL: c.defaultTTL, MaxTTL: c.maxTTL},
		ControlPlane: pki.Policy{TrustDomain: c.cp.TrustDomain, DefaultTTL: c.controlPlaneTTL, MaxTTL: c.controlPlaneTTL},
		Bootstrap: server.BootstrapOptions{Reviewer: reviewer, Accounts: accounts, DevToken: c.devBootstrapToken,
			DNS: server.DNSPolicy{Namespace: c.cp.Namespace, ClusterDomain: c.cp.ClusterDomain}},
		Log:   log,
		Meter: rt.Meter(),
		Limits: server.Limits{
			Bootstrap: server.Limit{Rate: float64(c.bootstrapRate), Burst: c.bootstrapBurst},
			Sign:      server.Limit{Rate: float64(c.signRate), Burst: c.signBurst},
		},
	})
	if err != nil {
		return fmt.Errorf("grpc service: %w", err)
	}
	if c.devBootstrapToken != "" {
		log.Warn("dev mode: Bootstrap accepts the pre-shared token for any role; never use this in a cluster")
	}
	cert := server.NewServingCert(server.ServingCertOptions{Signer: prov, TrustDomain: c.cp.TrustDomain, DNSNames: c.serverDNSNames(), TTL: c.servingTTL, Log: log})
	if err := retryUntil(ctx, log, "issue serving certificate", cert.Renew); err != nil {
		return err
	}
	rt.Health.AddReadyCheck("serving-certificate", cert.Check)
	start(cert)

	lis := o.Listener
	if lis == nil {
		if lis, err = net.Listen("tcp", c.grpcAddr); err != nil {
			return app.FlagError("grpc-addr", "cannot listen: %v", err)
		}
	}
	gs := server.NewGRPCServer(server.TLSConfig(cert, hub), server.NewAuthorizer(c.cp.TrustDomain),
		server.ConnectionAge(c.maxConnectionAge, connectionAgeGrace))
	srv.Register(gs)
	log.WithField("grpc_addr", lis.Addr().String()).Info("serving osm.ca.v1")
	// The bundle watches never end by themselves; ending them first lets
	// the graceful stop return without waiting out its grace.
	g.Go(func() error { return app.ServeGRPC(gctx, gs, lis, grpcGrace, srv.EndWatches) })
	rt.HandleAdmin("GET /debug/issuers", server.DebugHandler(hub, cert))
	serving.Store(true)
	rt.Health.Started()
	return g.Wait()
}

// kubeClient builds the Kubernetes client from the --kubeconfig group.
func (c *config) kubeClient() (kubernetes.Interface, error) {
	cfg, err := c.kube.RESTConfig(Name)
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return client, nil
}

// openProvider opens the configured provider: the built-in one loads (or
// creates) its root Secrets and needs the apiserver; the Vault one logs in.
func (c *config) openProvider(ctx context.Context, log *logrus.Entry, health *app.Health, client kubernetes.Interface, kubeErr error) (provider, error) {
	if c.provider == providerBuiltin {
		if kubeErr != nil {
			return nil, fmt.Errorf("the builtin provider keeps its root in a Secret and needs the apiserver: %w", kubeErr)
		}
		p, err := builtin.Load(ctx, builtin.Options{Client: client, Namespace: c.cp.Namespace, SigningSecret: c.rootSecret,
			TrustedSecrets: c.trustedRoots(), TrustDomain: c.cp.TrustDomain, RootValidity: c.rootValidity, Log: log.WithField("provider", providerBuiltin)})
		if err != nil {
			return nil, fmt.Errorf("builtin provider: %w", err)
		}
		return p, nil
	}
	vp, err := vault.New(vault.Options{
		Address: c.vaultAddr, CACertFile: c.vaultCACert, PKIMount: c.vaultPKIMount, Role: c.vaultRole,
		Auth: vault.AuthOptions{KubernetesMount: c.vaultAuthMount, KubernetesRole: c.vaultAuthRole,
			ServiceAccountToken: vault.TokenFile(c.vaultSATokenFile), Token: c.vaultToken},
		RequestTimeout: c.vaultRequestTimeout, Backoff: vault.Backoff{Budget: c.vaultRetryBudget},
		Log: log.WithField("provider", providerVault),
	})
	if err != nil {
		return nil, fmt.Errorf("vault provider: %w", err)
	}
	// Until the login succeeds, /readyz says why it fails (the check is
	// replaced by Vault's own once logged in).
	var last atomic.Pointer[error]
	health.AddReadyCheck("vault", func(context.Context) error {
		if e := last.Load(); e != nil {
			return *e
		}
		return errors.New("logging in to vault")
	})
	login := func(ctx context.Context) error {
		err := c.explainLogin(vp.Login(ctx))
		if err != nil {
			last.Store(&err)
		}
		return err
	}
	if err := retryUntil(ctx, log, "vault login", login); err != nil {
		return nil, err
	}
	return vp, nil
}

// explainLogin adds to a login Vault refused the flags that decide it.
func (c *config) explainLogin(err error) error {
	if err == nil || pki.ReasonOf(err) != pki.ReasonProvider {
		return err
	}
	if c.vaultAuthRole != "" {
		return fmt.Errorf("%w (check --vault-auth-role %q and --vault-auth-mount %q against Vault's role, "+
			"and that the token in --vault-sa-token-file %s is of a ServiceAccount the role is bound to, with the audience the role expects)",
			err, c.vaultAuthRole, c.vaultAuthMount, c.vaultSATokenFile)
	}
	return fmt.Errorf("%w (check --vault-token: a valid token with the policy to sign at --vault-pki-mount %q role --vault-role %q)",
		err, c.vaultPKIMount, c.vaultRole)
}

// publisher returns the publisher of hub's bundle to KV mesh-trust over
// conn (NATS as the CA), creating the bucket when absent.
func (c *config) publisher(ctx context.Context, rt *app.Runtime, conn *bus.Conn, hub *trust.Hub) (*trust.Publisher, error) {
	store, err := conn.EnsureBucket(ctx, bus.BucketTrust, bus.BucketOptions{Replicas: c.kvReplicas})
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", bus.BucketTrust, err)
	}
	return trust.NewPublisher(hub, store, trust.PublisherOptions{Key: layout.BundleKey, NotFound: bus.ErrNotFound, Gone: bus.IsBucketGone,
		OnError: func(err error) { rt.Log.WithError(err).Warn("trust bundle publish failed; retrying") },
		OnRestore: func(v string) {
			rt.Log.WithField("version", v).Warn("the trust bundle was lost from " + bus.BucketTrust + " (key or bucket deleted); written again")
		}}), nil
}

// retryUntil runs op until it succeeds or ctx ends, logging each failure
// and waiting a jittered, growing time between attempts.
func retryUntil(ctx context.Context, log *logrus.Entry, what string, op func(context.Context) error) error {
	for attempt := 1; ; attempt++ {
		err := op(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			// Stopped while starting: a clean stop, not a failure.
			return fmt.Errorf("%s stopped: %w (last error: %v)", what, ctx.Err(), err)
		}
		log.WithError(err).WithField("operation", what).Warn("startup step failed; retrying")
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s stopped: %w (last error: %v)", what, ctx.Err(), err)
		case <-time.After(backoff.Wait(startRetryBase, startRetryMax, attempt)):
		}
	}
}
