// Package app is the runner every OSM service main uses: flags with
// environment twins, logging, telemetry, one admin listener (/healthz,
// /readyz, /metrics, optional pprof), the NATS connection, and a bounded
// graceful shutdown on SIGTERM.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/openservicemesh/osm/libs/buildinfo"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/logging"
	"github.com/openservicemesh/osm/libs/telemetry"
)

// Spec describes one service.
type Spec struct {
	// Name is the binary name, e.g. "xds-edge".
	Name string
	// Summary is the first paragraph of --help.
	Summary string
	// UsesNATS registers the --nats-* flags and enables Runtime.Bus.
	UsesNATS bool
	// Flags registers the service's own flags.
	Flags func(f *Flags)
	// Validate checks the service's flags after parsing; return FlagError so
	// the message names the flag.
	Validate func() error
	// Run does the service's work until ctx is cancelled, then stops taking
	// work (for example gRPC GracefulStop) and returns. Release resources
	// with Runtime.OnShutdown, which runs after Run returns.
	Run func(ctx context.Context, rt *Runtime) error
}

// common are the flags every service has.
type common struct {
	logLevel, logFormat string
	adminAddr           string
	pprof               bool
	shutdownTimeout     time.Duration
	nats                bus.Options
}

// Runtime is what a running service gets from the runner.
type Runtime struct {
	// Name is the service's name, Spec.Name.
	Name string
	// Log is the service's logger, with component set.
	Log *logrus.Entry
	// Telemetry holds the meter and tracer providers and the metrics registry.
	Telemetry *telemetry.Telemetry
	// Health takes the service's readiness checks.
	Health *Health
	// AdminAddr is the address the admin listener is bound to.
	AdminAddr string

	cfg      common
	obs      *observability
	mux      *http.ServeMux
	mu       sync.Mutex
	shutdown []namedHook
}

// Meter is the service's meter, named after the service.
func (rt *Runtime) Meter() metric.Meter { return rt.Telemetry.Meter(rt.Name) }

// Tracer is the service's tracer, named after the service.
func (rt *Runtime) Tracer() trace.Tracer { return rt.Telemetry.Tracer(rt.Name) }

// HandleAdmin serves h under pattern on the admin listener, for a
// service's debug endpoints (for example "GET /debug/issuers"). The admin
// listener is for operators: keep secrets off it.
func (rt *Runtime) HandleAdmin(pattern string, h http.Handler) {
	rt.mux.Handle(pattern, h)
}

type namedHook struct {
	name string
	fn   func(ctx context.Context) error
}

// OnShutdown registers fn to run after Run returns, in reverse order of
// registration, within the shutdown timeout.
func (rt *Runtime) OnShutdown(name string, fn func(ctx context.Context) error) {
	rt.mu.Lock()
	rt.shutdown = append(rt.shutdown, namedHook{name, fn})
	rt.mu.Unlock()
}

// Bus connects to NATS as role, with the --nats-* settings. It registers a
// "nats" readiness check and drains the connection at shutdown.
func (rt *Runtime) Bus(ctx context.Context, role bus.Role) (*bus.Conn, error) {
	if rt.cfg.nats.URL == "" {
		return nil, errors.New("this service was not declared with UsesNATS")
	}
	o := rt.cfg.nats
	o.Role = role
	log := rt.Log.WithField("nats_url", bus.RedactURL(o.URL))
	o.OnEvent = func(ev bus.ConnEvent) {
		e := log.WithField("event", ev.Kind)
		if ev.Err != nil {
			e = e.WithError(ev.Err)
		}
		if ev.Kind == "error" || ev.Kind == "disconnected" {
			e.Warn("nats connection event")
		} else {
			e.Info("nats connection event")
		}
	}
	c, err := bus.Connect(ctx, o)
	if err != nil {
		return nil, err
	}
	rt.Health.AddReadyCheck("nats", c.Check)
	rt.OnShutdown("nats", c.Drain)
	return c, nil
}

// Main runs spec as the process's main: it cancels on SIGTERM or SIGINT and
// exits 1 on error (2 for bad configuration).
func Main(spec Spec) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := Run(ctx, spec, os.Args[1:], os.Getenv, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", spec.Name, err)
		var ce *ConfigError
		if errors.As(err, &ce) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// ConfigError is returned by Run for bad flags or environment.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return "configuration: " + e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// Run parses args and the environment, sets up logging, telemetry and the
// admin listener, runs spec.Run until ctx is cancelled, then shuts down in
// order: not-ready, Run returns, shutdown hooks (NATS drain), telemetry flush,
// admin listener. Help goes to out.
func Run(ctx context.Context, spec Spec, args []string, getenv func(string) string, out io.Writer) error {
	var cfg common
	f := newFlags(spec.Name)
	f.String(&cfg.logLevel, "log-level", "info", "log level: error, warn, info, debug or trace; the MeshConfig's (--mesh-config in --namespace) spec.observability.osmLogLevel, when set, overrides it live: this level rules until the service has read the MeshConfig, and while it sets none or is absent")
	f.String(&cfg.logFormat, "log-format", logging.FormatJSON, "log format: json (for the cluster) or text (for a terminal)")
	f.String(&cfg.adminAddr, "admin-addr", ":9091", "address of the admin listener serving /healthz, /readyz and /metrics")
	f.Bool(&cfg.pprof, "enable-pprof", false, "serve Go profiles under /debug/pprof/ on the admin listener until the service has read the MeshConfig (--mesh-config in --namespace), and while there is none; while there is one its spec.observability.enableDebugServer decides, live (false or unset: 404, whatever this flag says)")
	f.Duration(&cfg.shutdownTimeout, "shutdown-timeout", 15*time.Second, "how long a graceful shutdown may take after SIGTERM")
	if spec.UsesNATS {
		f.Redacted(&cfg.nats.URL, "nats-url", "nats://127.0.0.1:4222",
			"comma-separated NATS server URLs; a password or token goes only over tls:// (or with --nats-ca) unless the server is on this host", bus.RedactURL)
		f.String(&cfg.nats.CredsFile, "nats-creds", "", "NATS credentials file (JWT and NKey seed)")
		f.String(&cfg.nats.User, "nats-user", "", "NATS user name")
		f.Secret(&cfg.nats.Password, "nats-password", "NATS password (prefer the environment variable over the flag)")
		f.Secret(&cfg.nats.Token, "nats-token", "NATS authentication token")
		f.String(&cfg.nats.CAFile, "nats-ca", "", "CA certificate file that verifies the NATS server")
		f.String(&cfg.nats.TLSServerName, "nats-tls-server-name", "", "name the NATS servers' certificates are verified against; empty verifies each --nats-url host (set it when the URLs are addresses and the certificates name a Service)")
		f.String(&cfg.nats.CertFile, "nats-cert", "", "client certificate file for NATS mutual TLS")
		f.String(&cfg.nats.KeyFile, "nats-key", "", "client key file for NATS mutual TLS")
	}
	if spec.Flags != nil {
		spec.Flags(f)
	}
	if err := f.parse(args, getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(out, "Usage: %s [flags]\n\n%s\n\nEvery flag can also be set with the environment variable shown; a flag on the command line wins.\n\nFlags:\n", spec.Name, spec.Summary)
			f.usage(out)
			return nil
		}
		return &ConfigError{err}
	}
	if err := validateCommon(cfg, spec.UsesNATS); err != nil {
		return &ConfigError{err}
	}
	if spec.Validate != nil {
		if err := spec.Validate(); err != nil {
			return &ConfigError{err}
		}
	}
	logger, err := logging.New(out, cfg.logLevel, cfg.logFormat)
	if err != nil {
		return &ConfigError{err}
	}
	log := logger.WithField("component", spec.Name)
	for _, d := range f.Deprecations() {
		log.WithFields(logrus.Fields{"flag": "--" + d.Old, "use": "--" + d.Current}).Warn("deprecated flag name used")
	}
	version := buildinfo.Version()
	log.WithFields(logrus.Fields{"version": version, "config": f.Effective()}).Info("starting")

	tel, err := telemetry.Setup(ctx, telemetry.Options{Service: spec.Name, Version: version, Getenv: getenv})
	if err != nil {
		return &ConfigError{err}
	}
	rt := &Runtime{Name: spec.Name, Log: log, Telemetry: tel, Health: newHealth(), cfg: cfg,
		obs: &observability{logger: logger, flagLevel: logger.GetLevel(), flagDebug: cfg.pprof}}
	rt.obs.debug.Store(cfg.pprof)

	ln, err := net.Listen("tcp", cfg.adminAddr)
	if err != nil {
		_ = tel.Shutdown(context.Background())
		return &ConfigError{FlagError("admin-addr", "cannot listen: %v", err)}
	}
	rt.AdminAddr = ln.Addr().String()
	rt.mux = adminMux(rt.Health, tel.Registry, rt.obs)
	admin := &http.Server{Handler: rt.mux, ReadHeaderTimeout: 5 * time.Second}
	log.WithField("admin_addr", rt.AdminAddr).Info("admin listener up")

	// The service's context ends only after /readyz has turned false
	// (below), never with ctx itself: a service that sees its context end
	// is already out of rotation.
	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRun()
	g := new(errgroup.Group)
	g.Go(func() error {
		if err := admin.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("admin listener: %w", err)
		}
		return nil
	})
	runDone := make(chan error, 1)
	go func() { runDone <- spec.Run(runCtx, rt) }()

	var runErr error
	select {
	case runErr = <-runDone:
		// Run ended on its own: an error, or a service that finished.
	case <-ctx.Done():
		log.Info("shutting down")
	}
	rt.Health.stopping.Store(true)
	cancelRun()
	deadline, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer cancel()
	var errs []error
	if runErr == nil && ctx.Err() != nil {
		select {
		case runErr = <-runDone:
		case <-deadline.Done():
			errs = append(errs, fmt.Errorf("service did not stop within --shutdown-timeout %s", cfg.shutdownTimeout))
		}
	}
	if runErr != nil && !errors.Is(runErr, context.Canceled) {
		errs = append(errs, runErr)
	}
	rt.mu.Lock()
	hooks := rt.shutdown
	rt.mu.Unlock()
	for i := len(hooks) - 1; i >= 0; i-- {
		if err := hooks[i].fn(deadline); err != nil {
			log.WithError(err).WithField("hook", hooks[i].name).Warn("shutdown step failed")
		}
	}
	if err := tel.Shutdown(deadline); err != nil {
		log.WithError(err).Warn("telemetry flush failed")
	}
	if err := admin.Shutdown(deadline); err != nil {
		admin.Close()
	}
	if err := g.Wait(); err != nil {
		errs = append(errs, err)
	}
	err = errors.Join(errs...)
	if err != nil {
		log.WithError(err).Error("stopped with an error")
	} else {
		log.Info("stopped")
	}
	return err
}

func validateCommon(c common, nats bool) error {
	if c.shutdownTimeout <= 0 {
		return FlagError("shutdown-timeout", "must be positive, got %s", c.shutdownTimeout)
	}
	if _, _, err := net.SplitHostPort(c.adminAddr); err != nil {
		return FlagError("admin-addr", "%v", err)
	}
	if nats {
		if c.nats.URL == "" {
			return FlagError("nats-url", "is required")
		}
		if (c.nats.CertFile == "") != (c.nats.KeyFile == "") {
			return FlagError("nats-cert", "--nats-cert and --nats-key must be given together")
		}
		if err := c.nats.CheckTransport(); err != nil {
			return FlagError("nats-url", "%v", err)
		}
		n := 0
		for _, s := range []string{c.nats.CredsFile, c.nats.User, c.nats.Token} {
			if s != "" {
				n++
			}
		}
		if n > 1 {
			return FlagError("nats-creds", "give only one of --nats-creds, --nats-user or --nats-token")
		}
		if c.nats.Password != "" && c.nats.User == "" {
			return FlagError("nats-user", "is required with --nats-password")
		}
		for name, path := range map[string]string{"nats-creds": c.nats.CredsFile, "nats-ca": c.nats.CAFile, "nats-cert": c.nats.CertFile, "nats-key": c.nats.KeyFile} {
			if path == "" {
				continue
			}
			if _, err := os.Stat(path); err != nil {
				return FlagError(name, "%v", err)
			}
		}
	}
	return nil
}
