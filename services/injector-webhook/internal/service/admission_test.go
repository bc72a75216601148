package service

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"
)

func testLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

// post sends a request to the server's admission path with query,
// trusting roots, and returns the status code.
func post(addr net.Addr, roots *x509.CertPool, query string) (int, error) {
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}
	defer c.CloseIdleConnections()
	resp, err := c.Post("https://"+addr.String()+admissionPath+query, "application/json", strings.NewReader("{}"))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

func TestAdmissionServerIsReadyOnlyWhileServing(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	tc, roots := serverTLS(t)
	release := make(chan struct{})
	inFlight := make(chan struct{}, 1)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("hold") != "" {
			inFlight <- struct{}{}
			<-release
		}
		w.WriteHeader(http.StatusOK)
	})
	srv := newAdmissionServer("127.0.0.1:0", map[string]http.Handler{admissionPath: handler}, tc, testLog())
	if err := srv.Check(t.Context()); err == nil {
		t.Fatal("ready before it serves")
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	res := make(chan error, 1)
	go func() { res <- srv.Start(ctx) }()
	within(t, srv.Serving(), "serving")
	if err := srv.Check(t.Context()); err != nil {
		t.Fatalf("not ready while serving: %v", err)
	}
	if code, err := post(srv.Addr(), roots, ""); err != nil || code != http.StatusOK {
		t.Fatalf("admission request: %d %v", code, err)
	}

	// An admission in flight at shutdown is answered: the server stops
	// taking work, not ready, and waits for it.
	held := make(chan error, 1)
	go func() {
		code, err := post(srv.Addr(), roots, "?hold=1")
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("status %d", code)
		}
		held <- err
	}()
	<-inFlight
	cancel()
	select {
	case err := <-res:
		t.Fatalf("Start returned (%v) with an admission in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := srv.Check(t.Context()); err == nil {
		t.Fatal("ready while stopping")
	}
	close(release)
	if err := <-held; err != nil {
		t.Fatalf("the admission in flight at shutdown: %v", err)
	}
	if err := <-res; err != nil {
		t.Fatalf("Start returned %v after its context ended", err)
	}
	if _, err := post(srv.Addr(), roots, ""); err == nil {
		t.Fatal("still serving after Start returned")
	}
}

func TestAdmissionServerThatCannotListenNamesTheFlag(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	tc, _ := serverTLS(t)
	srv := newAdmissionServer(taken.Addr().String(), map[string]http.Handler{admissionPath: http.NotFoundHandler()}, tc, testLog())
	if err := srv.Start(t.Context()); err == nil || !strings.Contains(err.Error(), "--listen-addr") {
		t.Fatalf("Start returned %v, want an error naming --listen-addr", err)
	}
	if err := srv.Check(t.Context()); err == nil {
		t.Fatal("ready without a listener")
	}
}
