package service

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/openservicemesh/osm/libs/app"
)

// Where the apiserver sends AdmissionReviews: pods to inject, policy
// objects to validate.
const (
	admissionPath = "/mutate-pod"
	validatePath  = "/validate-policy"
)

// admissionServer serves the admission handlers, by path, over HTTPS on
// --listen-addr.
type admissionServer struct {
	addr     string
	handlers map[string]http.Handler
	tls      *tls.Config
	// stopTimeout bounds the wait for admissions in flight at shutdown.
	stopTimeout time.Duration
	log         *logrus.Entry

	up      atomic.Bool
	bound   net.Addr      // set before serving closes
	serving chan struct{} // closed once the listener is bound
}

func newAdmissionServer(addr string, handlers map[string]http.Handler, tc *tls.Config, log *logrus.Entry) *admissionServer {
	return &admissionServer{addr: addr, handlers: handlers, tls: tc, stopTimeout: 10 * time.Second, log: log,
		serving: make(chan struct{})}
}

// Start listens and serves until ctx ends, then stops taking connections
// and waits up to stopTimeout for the admissions in flight.
func (s *admissionServer) Start(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return app.FlagError("listen-addr", "cannot listen: %v", err)
	}
	mux := http.NewServeMux()
	for path, h := range s.handlers {
		mux.Handle(path, h)
	}
	srv := &http.Server{Handler: mux, TLSConfig: s.tls, ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout: 10 * time.Second, WriteTimeout: 15 * time.Second, MaxHeaderBytes: 64 << 10}
	served := make(chan error, 1)
	go func() { served <- srv.ServeTLS(ln, "", "") }()
	s.bound = ln.Addr()
	s.up.Store(true)
	close(s.serving)
	s.log.WithContext(ctx).WithField("listen_addr", ln.Addr().String()).Info("admission webhook serving")
	defer s.up.Store(false)
	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	s.up.Store(false)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.stopTimeout)
	defer cancel()
	err = srv.Shutdown(sctx)
	if err != nil {
		srv.Close() // the deadline passed: drop the admissions still in flight
	}
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	return nil
}

// Serving is closed once the server listens.
func (s *admissionServer) Serving() <-chan struct{} { return s.serving }

// Addr is the address the server listens on, once Serving has closed.
func (s *admissionServer) Addr() net.Addr { return s.bound }

// Check is a readiness check: the server is listening and serving.
func (s *admissionServer) Check(context.Context) error {
	if !s.up.Load() {
		return errors.New("admission server not serving")
	}
	return nil
}
