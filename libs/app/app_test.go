package app

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/bus/bustest"
	"github.com/openservicemesh/osm/libs/logging"
)

func noenv(string) string { return "" }

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestHelpNamesEnvironmentTwins(t *testing.T) {
	var out bytes.Buffer
	spec := Spec{Name: "demo", Summary: "Demo serves nothing.", UsesNATS: true,
		Flags: func(f *Flags) { var s string; f.String(&s, "trust-domain", "cluster.local", "SPIFFE trust domain") },
		Run:   func(context.Context, *Runtime) error { t.Fatal("Run called for --help"); return nil }}
	if err := Run(t.Context(), spec, []string{"--help"}, noenv, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Demo serves nothing.", "--nats-url", "env OSM_NATS_URL", "--trust-domain", "env OSM_TRUST_DOMAIN", "default cluster.local"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q:\n%s", want, out.String())
		}
	}
}

func TestConfigErrorsNameTheFlag(t *testing.T) {
	spec := Spec{Name: "demo", UsesNATS: true, Run: func(context.Context, *Runtime) error { return nil },
		Flags: func(f *Flags) { var n int; f.Int(&n, "replicas", 1, "replicas") }}
	cases := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--log-level", "loud"}, nil, "log level"},
		{[]string{"--replicas", "x"}, nil, "-replicas"},
		{nil, map[string]string{"OSM_REPLICAS": "many"}, "OSM_REPLICAS (flag --replicas)"},
		{nil, map[string]string{"OSM_NATS_PASSWORD": "hunter2"}, "--nats-user"},
		{[]string{"--nats-ca", "/does/not/exist"}, nil, "--nats-ca"},
		{[]string{"--shutdown-timeout", "0s"}, nil, "--shutdown-timeout"},
		{[]string{"stray"}, nil, `unexpected argument "stray"`},
		{[]string{"--admin-addr", "nonsense"}, nil, "--admin-addr"},
		{[]string{"--nats-url", "nats://nats.osm-system:4222", "--nats-user", "edge"}, map[string]string{"OSM_NATS_PASSWORD": "hunter2"}, "--nats-url"},
		{[]string{"--nats-url", "nats://edge:hunter2@nats.osm-system:4222"}, nil, "--nats-url"},
		{[]string{"--nats-url", "nats://edge:hunter2@nats.osm-system:4222", "--replicas", "x"}, nil, "-replicas"},
	}
	for _, c := range cases {
		err := Run(t.Context(), spec, c.args, envOf(c.env), io.Discard)
		var ce *ConfigError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("args %v env %v: err = %v, want a configuration error naming %q", c.args, c.env, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error leaks a secret: %v", err)
		}
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestLifecycle(t *testing.T) {
	srv, err := bustest.Start(bustest.Options{Passwords: map[bus.Role]string{bus.RoleEdge: "s3cret-pw"}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()

	var logs logging.Buffer
	ready := make(chan string)
	var mu sync.Mutex
	var order []string
	var readyDuringShutdown int
	spec := Spec{
		Name: "demo", UsesNATS: true,
		Run: func(ctx context.Context, rt *Runtime) error {
			if _, err := rt.Bus(ctx, bus.RoleEdge); err != nil {
				return err
			}
			// The NATS check passes already, but the service has more to
			// register: not ready yet.
			if code, body := get(t, "http://"+rt.AdminAddr+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "starting:") {
				t.Errorf("readyz before Started = %d %q", code, body)
			}
			warm := false
			rt.Health.AddReadyCheck("warm", func(context.Context) error {
				if !warm {
					return errors.New("initial sync not done")
				}
				return nil
			})
			rt.Health.Started()
			code, body := get(t, "http://"+rt.AdminAddr+"/readyz")
			if code != http.StatusServiceUnavailable || !strings.Contains(body, "warm: initial sync not done") {
				t.Errorf("readyz before warm-up = %d %q", code, body)
			}
			warm = true
			rt.HandleAdmin("GET /debug/demo", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				_, _ = io.WriteString(w, "demo debug")
			}))
			rt.OnShutdown("first", func(context.Context) error { mu.Lock(); order = append(order, "first"); mu.Unlock(); return nil })
			rt.OnShutdown("second", func(context.Context) error { mu.Lock(); order = append(order, "second"); mu.Unlock(); return nil })
			ready <- rt.AdminAddr
			<-ctx.Done()
			readyDuringShutdown, _ = get(t, "http://"+rt.AdminAddr+"/readyz")
			return nil
		},
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	env := envOf(map[string]string{"OSM_NATS_URL": srv.URL(), "OSM_NATS_USER": "edge", "OSM_NATS_PASSWORD": "s3cret-pw"})
	go func() { done <- Run(ctx, spec, []string{"--admin-addr", "127.0.0.1:0"}, env, &logs) }()
	addr := <-ready
	if code, _ := get(t, "http://"+addr+"/healthz"); code != http.StatusOK {
		t.Errorf("healthz = %d", code)
	}
	if code, body := get(t, "http://"+addr+"/readyz"); code != http.StatusOK {
		t.Errorf("readyz = %d %q", code, body)
	}
	if code, body := get(t, "http://"+addr+"/metrics"); code != http.StatusOK || !strings.Contains(body, "go_goroutines") {
		t.Errorf("metrics = %d, %d bytes", code, len(body))
	}
	if code, body := get(t, "http://"+addr+"/debug/demo"); code != http.StatusOK || body != "demo debug" {
		t.Errorf("service admin route = %d %q", code, body)
	}
	if code, _ := get(t, "http://"+addr+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("pprof served without --enable-pprof: %d", code)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if readyDuringShutdown != http.StatusServiceUnavailable {
		t.Errorf("readyz while shutting down = %d, want 503", readyDuringShutdown)
	}
	if strings.Join(order, ",") != "second,first" {
		t.Errorf("shutdown hooks ran %v, want reverse order", order)
	}
	out := logs.String()
	if strings.Contains(out, "s3cret-pw") {
		t.Error("the NATS password appears in the logs")
	}
	for _, want := range []string{`"msg":"starting"`, `"nats-password":"\u003credacted\u003e"`, `"msg":"stopped"`} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %s:\n%s", want, out)
		}
	}
}

func TestShutdownIsBounded(t *testing.T) {
	spec := Spec{Name: "stuck", Run: func(ctx context.Context, rt *Runtime) error {
		rt.Health.AddReadyCheck("x", func(context.Context) error { return nil })
		select {} // ignores cancellation
	}}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, spec, []string{"--admin-addr", "127.0.0.1:0", "--shutdown-timeout", "200ms"}, noenv, io.Discard)
	}()
	time.Sleep(200 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "--shutdown-timeout") {
			t.Fatalf("err = %v, want a shutdown timeout", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("shutdown not bounded")
	}
}

// TestNATSURLIsLoggedRedacted: a password inside --nats-url never reaches
// the start log, which shows the URL with its user information replaced.
func TestNATSURLIsLoggedRedacted(t *testing.T) {
	srv, err := bustest.Start(bustest.Options{Passwords: map[bus.Role]string{bus.RoleEdge: "s3cret-pw"}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	url := strings.Replace(srv.URL(), "nats://", "nats://edge:s3cret-pw@", 1)
	var logs strings.Builder
	spec := Spec{Name: "demo", UsesNATS: true, Run: func(ctx context.Context, rt *Runtime) error {
		_, err := rt.Bus(ctx, bus.RoleEdge)
		return err
	}}
	if err := Run(t.Context(), spec, []string{"--nats-url", url, "--admin-addr", "127.0.0.1:0"}, envOf(nil), &logs); err != nil {
		t.Fatalf("run: %v\n%s", err, logs.String())
	}
	out := logs.String()
	if strings.Contains(out, "s3cret-pw") {
		t.Errorf("the password in --nats-url reached the log:\n%s", out)
	}
	if !strings.Contains(out, "nats://redacted@127.0.0.1:") {
		t.Errorf("the log does not show the redacted URL:\n%s", out)
	}
}
