package ca

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/cert-authority/internal/builtin"
	"github.com/openservicemesh/osm/services/cert-authority/internal/pki"
	"github.com/openservicemesh/osm/services/cert-authority/internal/server"
	"github.com/openservicemesh/osm/services/cert-authority/internal/trust"
	"github.com/openservicemesh/osm/services/cert-authority/internal/vault"
)

// Name is the binary name.
const Name = "cert-authority"

// Deps are what tests inject in place of what Run would build from flags.
type Deps struct {
	// Kube replaces the client built from --kubeconfig.
	Kube kubernetes.Interface
	// Listener replaces the --grpc-addr listener.
	Listener net.Listener
}

// Spec is the service for app.Main.
func Spec(deps Deps) app.Spec {
	c := &Config{}
	return app.Spec{
		Name:     Name,
		Summary:  Summary,
		UsesNATS: true,
		Flags:    c.Register,
		Validate: c.Validate,
		Run:      func(ctx context.Context, rt *app.Runtime) error { return Run(ctx, rt, c, deps) },
	}
}

// provider is what Run needs of the built-in or Vault provider.
type provider interface {
	server.Signer
	TrustBundle(ctx context.Context) (*meshv1.TrustBundle, error)
}

// Run serves the CA until ctx ends.
func Run(ctx context.Context, rt *app.Runtime, c *Config, deps Deps) error {
	log := rt.Log
	ctx, cancel := context.WithCancel(ctx)
	g, gctx := errgroup.WithContext(ctx)
	// On an early error return, stop and wait for what was started.
	defer func() { cancel(); _ = g.Wait() }()

	kube, kubeErr := deps.Kube, error(nil)
	if kube == nil {
		kube, kubeErr = kubeClient(c.Kubeconfig)
	}
	var prov provider
	switch c.Provider {
	case ProviderBuiltin:
		if kubeErr != nil {
			return fmt.Errorf("the builtin provider keeps its root in a Secret and needs the apiserver: %w", kubeErr)
		}
		p, err := builtin.Load(ctx, builtin.Options{Client: kube, Namespace: c.Namespace, SigningSecret: c.RootSecret,
			TrustedSecrets: c.TrustedRoots(), TrustDomain: c.TrustDomain, RootValidity: c.RootValidity, Log: log.WithField("provider", "builtin")})
		if err != nil {
			return err
		}
		prov = p
	case ProviderVault:
		vp, err := vault.New(vault.Options{
			Address: c.VaultAddr, CACertFile: c.VaultCACert, PKIMount: c.VaultPKIMount, Role: c.VaultRole,
			Auth: vault.AuthOptions{KubernetesMount: c.VaultAuthMount, KubernetesRole: c.VaultAuthRole,
				ServiceAccountToken: vault.TokenFile(c.VaultSATokenFile), Token: c.VaultToken},
			RequestTimeout: c.VaultRequestTimeout, Backoff: vault.Backoff{Budget: c.VaultRetryBudget},
			Log: log.WithField("provider", "vault"),
		})
		if err != nil {
			return err
		}
		if err := retryUntil(ctx, log, "vault login", vp.Login); err != nil {
			return err
		}
		rt.Health.AddReadyCheck("vault", vp.Check)
		g.Go(func() error { return vp.Start(gctx) })
		prov = vp
	}

	var reviewer server.TokenReviewer
	if kubeErr == nil {
		reviewer = server.NewKubeReviewer(kube, splitList(c.TokenAudiences))
	} else {
		log.WithError(kubeErr).Warn("no apiserver access: Bootstrap with ServiceAccount tokens is disabled")
	}
	accounts, err := c.RoleAccounts()
	if err != nil {
		return err
	}

	hub := trust.NewHub()
	if err := retryUntil(ctx, log, "load trust bundle", func(ctx context.Context) error {
		b, err := prov.TrustBundle(ctx)
		if err == nil {
			hub.Set(b)
		}
		return err
	}); err != nil {
		return err
	}
	g.Go(func() error { refreshBundle(gctx, log, prov, hub, c.BundleRefresh); return nil })

	conn, err := rt.Bus(ctx, bus.RoleCA)
	if err != nil {
		return err
	}
	store, err := conn.EnsureBucket(ctx, bus.BucketTrust, bus.BucketOptions{Replicas: c.KVReplicas})
	if err != nil {
		return err
	}
	pub := trust.NewPublisher(hub, store, trust.PublisherOptions{Key: layout.BundleKey, NotFound: bus.ErrNotFound,
		OnError: func(err error) { log.WithError(err).Warn("trust bundle publish failed; retrying") }})
	rt.Health.AddReadyCheck("trust-bundle-published", func(context.Context) error {
		b, _ := hub.Current()
		if b == nil || pub.Published() != b.Version {
			return errors.New("the current trust bundle is not in " + bus.BucketTrust + " yet")
		}
		return nil
	})
	g.Go(func() error { return pub.Start(gctx) })

	srv, err := server.New(server.Options{
		Signer:       prov,
		Hub:          hub,
		Workload:     pki.Policy{TrustDomain: c.TrustDomain, DefaultTTL: c.DefaultTTL, MaxTTL: c.MaxTTL},
		ControlPlane: pki.Policy{TrustDomain: c.TrustDomain, DefaultTTL: c.ControlPlaneTTL, MaxTTL: c.ControlPlaneTTL},
		Bootstrap: server.BootstrapOptions{Reviewer: reviewer, Accounts: accounts, DevToken: c.DevBootstrapToken,
			DNS: server.DNSPolicy{Namespace: c.Namespace, ClusterDomain: c.ClusterDomain}},
		Log:   log,
		Meter: rt.Telemetry.Meter(Name),
	})
	if err != nil {
		return err
	}
	if c.DevBootstrapToken != "" {
		log.Warn("dev mode: Bootstrap accepts the pre-shared token for any role; never use this in a cluster")
	}
	cert := server.NewServingCert(server.ServingCertOptions{Signer: prov, TrustDomain: c.TrustDomain, DNSNames: c.ServerDNSNames(), TTL: c.ServingTTL, Log: log})
	if err := retryUntil(ctx, log, "issue serving certificate", cert.Renew); err != nil {
		return err
	}
	rt.Health.AddReadyCheck("serving-certificate", cert.Check)
	g.Go(func() error { return cert.Start(gctx) })

	lis := deps.Listener
	if lis == nil {
		if lis, err = net.Listen("tcp", c.GRPCAddr); err != nil {
			return app.FlagError("grpc-addr", "cannot listen: %v", err)
		}
	}
	gs := server.NewGRPCServer(server.TLSConfig(cert, hub), server.NewAuthorizer(c.TrustDomain))
	srv.Register(gs)
	log.WithField("grpc_addr", lis.Addr().String()).Info("serving osm.ca.v1")
	g.Go(func() error { return gs.Serve(lis) })
	g.Go(func() error {
		<-gctx.Done()
		srv.EndWatches() // else GracefulStop waits for the bundle watchers until its deadline
		stopped := make(chan struct{})
		go func() { gs.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(10 * time.Second):
			gs.Stop()
		}
		return nil
	})

	rt.HandleAdmin("GET /debug/issuers", server.DebugHandler(hub, cert))
	return g.Wait()
}

// refreshBundle re-reads the provider's roots every interval.
func refreshBundle(ctx context.Context, log *logrus.Entry, p provider, hub *trust.Hub, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b, err := p.TrustBundle(ctx)
		if err != nil {
			log.WithError(err).Warn("trust bundle refresh failed")
			continue
		}
		if hub.Set(b) {
			log.WithFields(logrus.Fields{"bundle_version": b.Version, "roots": len(b.Roots)}).Info("trust bundle changed")
		}
	}
}

// retryUntil runs op until it succeeds or ctx ends, logging each failure.
func retryUntil(ctx context.Context, log *logrus.Entry, what string, op func(context.Context) error) error {
	wait := 500 * time.Millisecond
	for {
		err := op(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		log.WithError(err).WithField("operation", what).Warn("startup step failed; retrying")
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, err)
		case <-time.After(wait):
		}
		wait = min(wait*2, 10*time.Second)
	}
}

func kubeClient(kubeconfig string) (kubernetes.Interface, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client configuration: %w", err)
	}
	return kubernetes.NewForConfig(cfg)
}
