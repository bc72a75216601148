// Package apptest is what the services' tests, the test stack and the
// scale harnesses share for running a service built on package app and
// reading its admin listener: loopback addresses, polling until a
// condition holds, /readyz, /metrics, and a service's --help and
// configuration errors. No service binary links it (tests/stack checks).
package apptest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/libs/logging"
)

// Listen opens a listener on a free loopback port; the test closes it or
// hands it to a server.
func Listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// FreeAddr is PickAddr for a test: it fails the test when no address is
// found.
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := PickAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// handedOut are the addresses PickAddr has returned in this process.
var handedOut = struct {
	sync.Mutex
	addrs map[string]struct{}
}{addrs: map[string]struct{}{}}

// PickAddr returns a loopback address that was free a moment ago and that
// it never returned before in this process: the kernel may hand a
// just-closed ephemeral port out again, and two servers of one test (say a
// service's serving and admin listeners) must not be given the same one.
func PickAddr() (string, error) {
	handedOut.Lock()
	defer handedOut.Unlock()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		addr := ln.Addr().String()
		ln.Close()
		if _, dup := handedOut.addrs[addr]; !dup {
			handedOut.addrs[addr] = struct{}{}
			return addr, nil
		}
	}
	return "", errors.New("no loopback port that was not handed out already")
}

// PollInterval is how often Poll and Eventually try again.
const PollInterval = 10 * time.Millisecond

// Poll calls f every PollInterval until it returns nil, ctx ends or within
// passes; it returns f's last error, wrapped.
func Poll(ctx context.Context, within time.Duration, f func() error) error {
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s: %w", within, err)
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		case <-time.After(PollInterval):
		}
	}
}

// Eventually polls f (see Poll) until it returns nil and fails the test,
// naming what it waited for and f's last error, when within passes first.
func Eventually(t testing.TB, what string, within time.Duration, f func() error) {
	t.Helper()
	if err := Poll(t.Context(), within, f); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// EventuallyTrue is Eventually for a condition without an error to report.
func EventuallyTrue(t testing.TB, what string, within time.Duration, cond func() bool) {
	t.Helper()
	Eventually(t, what, within, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
}

var errNotYet = errors.New("not yet")

// Get fetches http://addr/path and returns the body; a status other than
// 200 is an error that carries the body.
func Get(ctx context.Context, addr, path string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(body), fmt.Errorf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
	}
	return string(body), nil
}

// Ready asks the admin listener at addr whether the service is ready
// (/readyz); the error carries the failing checks.
func Ready(addr string) error {
	_, err := Get(context.Background(), addr, "/readyz")
	return err
}

// Metrics fetches the exposition text of the admin listener's /metrics.
func Metrics(addr string) (string, error) { return Get(context.Background(), addr, "/metrics") }

// MetricValue reads one sample from the admin listener's /metrics: the
// first sample of the metric name whose labels contain match ("" matches
// any).
func MetricValue(addr, name, match string) (float64, error) {
	text, err := Metrics(addr)
	if err != nil {
		return 0, err
	}
	return SampleValue(text, name, match)
}

// SampleValue finds in exposition text the first sample of the metric name
// whose labels contain match ("" matches any).
func SampleValue(text, name, match string) (float64, error) {
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		if !strings.Contains(line, match) {
			continue
		}
		return strconv.ParseFloat(line[strings.LastIndex(line, " ")+1:], 64)
	}
	return 0, fmt.Errorf("no %s{%s} in /metrics", name, match)
}

// Env is an environment for Run: the value of each variable set, "" for
// the rest.
type Env map[string]string

// Get looks up a variable.
func (e Env) Get(k string) string { return e[k] }

// Start runs spec in this process with args and env until ctx ends, as
// app.Main would; it returns the channel that receives the run's result
// and the buffer that receives its log.
func Start(ctx context.Context, spec app.Spec, args []string, env Env) (<-chan error, *logging.Buffer) {
	logs := &logging.Buffer{}
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx, spec, args, env.Get, logs) }()
	return done, logs
}

// WaitReady waits until the service started by Start answers /readyz at
// admin, and fails the test, with the service's log, when it exits first
// or within passes.
func WaitReady(t testing.TB, admin string, within time.Duration, done <-chan error, logs fmt.Stringer) {
	t.Helper()
	var exited error
	err := Poll(t.Context(), within, func() error {
		select {
		case err := <-done:
			exited = fmt.Errorf("the service stopped: %v", err)
			return nil
		default:
		}
		return Ready(admin)
	})
	if err == nil {
		err = exited
	}
	if err != nil {
		t.Fatalf("%v\n%s", err, logs)
	}
}

// Stopped waits for the result of a run whose context ended (a service
// started by Start, or any part's Start in a goroutine) and fails the test
// when it is an error or takes longer than 30 s; logs, when not nil, are
// the run's log.
func Stopped(t testing.TB, done <-chan error, logs fmt.Stringer) {
	t.Helper()
	if logs == nil {
		logs = noLogs{}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("returned %v after its context ended\n%s", err, logs)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("did not return within 30s of its context's end\n%s", logs)
	}
}

type noLogs struct{}

func (noLogs) String() string { return "" }

// Help returns the --help text of the service that spec builds with the
// zero options (a service's Spec(Options) function).
func Help[O any](t testing.TB, spec func(O) app.Spec) string {
	t.Helper()
	var out strings.Builder
	var zero O
	if err := app.Run(t.Context(), spec(zero), []string{"--help"}, Env{}.Get, &out); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// HelpContains fails the test for each of wants that the service's --help
// lacks.
func HelpContains[O any](t testing.TB, spec func(O) app.Spec, wants ...string) {
	t.Helper()
	help := Help(t, spec)
	for _, want := range wants {
		if !strings.Contains(help, want) {
			t.Errorf("--help lacks %q:\n%s", want, help)
		}
	}
}

// BadConfig is a command line the service must refuse, and the flag its
// error must name.
type BadConfig struct {
	Args []string
	Flag string
	// Env is the environment; nil is empty.
	Env Env
}

// RefusesConfig runs the service that spec builds with the zero options,
// anew for each case, with the case's arguments, and fails the test unless
// the run ends with an app.ConfigError naming the case's flag.
func RefusesConfig[O any](t testing.TB, spec func(O) app.Spec, cases ...BadConfig) {
	t.Helper()
	var zero O
	for _, c := range cases {
		err := app.Run(t.Context(), spec(zero), c.Args, c.Env.Get, io.Discard)
		var ce *app.ConfigError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), c.Flag) {
			t.Errorf("args %q: err = %v, want a configuration error naming %s", c.Args, err, c.Flag)
		}
	}
}
