// Package bustest runs an in-process NATS server with JetStream, for tests
// and the local dev stack, as net/http/httptest runs an HTTP server. It
// applies the role permissions of package bus, so a test sees what a
// production NATS server enforces. Only tests and the dev stack import it,
// which keeps nats-server out of the services' binaries.
package bustest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/openservicemesh/osm/libs/bus"
)

// Options configure an in-process NATS server with JetStream.
type Options struct {
	// Host to listen on; default 127.0.0.1.
	Host string
	// Port to listen on; 0 picks a free port, which Restart then keeps.
	Port int
	// StoreDir keeps JetStream data in this directory, across restarts. Empty
	// uses a fresh temporary directory that Shutdown removes: an ephemeral
	// server, for tests.
	StoreDir string
	// Passwords, when set, turns on authentication: one user per role, named
	// after the role, with the role's permissions. Roles left out cannot log in.
	Passwords map[bus.Role]string
	// ReadyTimeout bounds the start; default 10s.
	ReadyTimeout time.Duration
	// TLS, when set, makes the server speak TLS only; set ClientAuth in it
	// to require client certificates.
	TLS *tls.Config
	// Monitor turns on NATS's HTTP monitoring endpoint (/healthz, /jsz) on
	// a free port of Host; MonitorAddr gives it.
	Monitor bool
}

// Server is a running in-process NATS server.
type Server struct {
	opts    Options
	srv     *server.Server
	tempDir string
}

// Start starts an in-process nats-server with JetStream.
func Start(o Options) (*Server, error) {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 10 * time.Second
	}
	e := &Server{opts: o}
	if o.StoreDir == "" {
		dir, err := os.MkdirTemp("", "osm-nats-")
		if err != nil {
			return nil, fmt.Errorf("embedded nats: %w", err)
		}
		e.tempDir, e.opts.StoreDir = dir, dir
	}
	if err := e.start(); err != nil {
		e.removeTemp()
		return nil, err
	}
	// Keep the port the OS chose so that a restart comes back at the same URL.
	e.opts.Port = e.srv.Addr().(*net.TCPAddr).Port
	return e, nil
}

func (e *Server) start() error {
	so := &server.Options{
		ServerName: "osm-embedded",
		Host:       e.opts.Host,
		Port:       e.opts.Port,
		JetStream:  true,
		StoreDir:   e.opts.StoreDir,
		NoSigs:     true,
		NoLog:      true,
		MaxPayload: bus.MaxValueSize,
	}
	if e.opts.TLS != nil {
		so.TLSConfig = e.opts.TLS
		so.TLS = true
		so.TLSVerify = e.opts.TLS.ClientAuth == tls.RequireAndVerifyClientCert
		so.TLSTimeout = 2
	}
	if e.opts.Port == 0 {
		so.Port = server.RANDOM_PORT
	}
	if e.opts.Monitor {
		so.HTTPHost, so.HTTPPort = e.opts.Host, server.RANDOM_PORT
	}
	for _, r := range bus.Roles() {
		pw, ok := e.opts.Passwords[r]
		if !ok {
			continue
		}
		if pw == "" {
			return fmt.Errorf("embedded nats: empty password for role %s", r)
		}
		perms, err := bus.PermissionsFor(r)
		if err != nil {
			return err
		}
		u := &server.User{Username: string(r), Password: pw}
		if perms != nil {
			u.Permissions = &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: perms.Publish},
				Subscribe: &server.SubjectPermission{Allow: perms.Subscribe},
			}
		}
		so.Users = append(so.Users, u)
	}
	srv, err := server.NewServer(so)
	if err != nil {
		return fmt.Errorf("embedded nats: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(e.opts.ReadyTimeout) {
		srv.Shutdown()
		return errors.New("embedded nats: not ready for connections in time")
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		return errors.New("embedded nats: jetstream did not start")
	}
	e.srv = srv
	return nil
}

// MonitorAddr is the monitoring endpoint's host:port with
// Options.Monitor, else empty.
func (e *Server) MonitorAddr() string {
	if a := e.srv.MonitorAddr(); a != nil {
		return a.String()
	}
	return ""
}

// URL is the client URL of the server.
func (e *Server) URL() string {
	scheme := "nats://"
	if e.opts.TLS != nil {
		scheme = "tls://"
	}
	return scheme + net.JoinHostPort(e.opts.Host, strconv.Itoa(e.opts.Port))
}

// Shutdown stops the server, waits until it is gone and removes its store
// directory when it was a temporary one.
func (e *Server) Shutdown() {
	e.stop()
	e.removeTemp()
}

// Stop stops the server but keeps its store, so that Restart can bring it back.
func (e *Server) Stop() { e.stop() }

func (e *Server) stop() {
	if e.srv == nil {
		return
	}
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
	e.srv = nil
}

func (e *Server) removeTemp() {
	if e.tempDir != "" {
		_ = os.RemoveAll(e.tempDir)
		e.tempDir = ""
	}
}

// Restart starts the server again (stopping it first if it runs) on the same
// port and store directory, as an operator restarting NATS would.
func (e *Server) Restart(ctx context.Context) error {
	e.stop()
	var err error
	for ctx.Err() == nil {
		if err = e.start(); err == nil {
			return nil
		}
		// The port can take a moment to be released.
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("restart embedded nats: %w (last error: %v)", ctx.Err(), err)
}
