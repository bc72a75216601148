package service

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/bus/bustest"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/logging"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

func TestFlagsAreValidated(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--mesh-config", "osm-system/osm-mesh-config"}, "--mesh-config"},
		{[]string{"--namespace", "Not_A_Namespace"}, "--namespace"},
		{[]string{"--trust-domain", "Cluster Local"}, "--trust-domain"},
		{[]string{"--debounce", "200ms"}, "--debounce"},
		{[]string{"--max-delay", "2s"}, "--max-delay"},
		{[]string{"--mesh-name", ""}, "--mesh-name"},
		{[]string{"--kv-replicas", "0"}, "--kv-replicas"},
	}
	for _, c := range cases {
		err := app.Run(t.Context(), Spec(Options{}), c.args, func(string) string { return "" }, io.Discard)
		var ce *app.ConfigError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err = %v, want a configuration error naming %s", c.args, err, c.want)
		}
	}
}

func TestHelpListsTheControlPlaneFlags(t *testing.T) {
	var out bytes.Buffer
	if err := app.Run(t.Context(), Spec(Options{}), []string{"--help"}, func(string) string { return "" }, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"--namespace", "--mesh-config", "name of the mesh's MeshConfig, in --namespace", "default osm-mesh-config",
		"--pod-name", "env OSM_POD_NAME", "--mesh-name", "--trust-domain", "when that MeshConfig sets no spec.certificate.trustDomain",
		"--holder, env OSM_HOLDER: use --pod-name",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q:\n%s", want, out.String())
		}
	}
}

func TestServiceCompilesAndBecomesReady(t *testing.T) {
	pw := map[bus.Role]string{bus.RoleWatcher: "w", bus.RoleCompiler: "c", bus.RoleEdge: "e"}
	srv, err := bustest.Start(bustest.Options{Passwords: pw})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	w, err := bus.Connect(t.Context(), bus.Options{URL: srv.URL(), Role: bus.RoleWatcher, User: "watcher", Password: "w"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	observed, err := w.EnsureBucket(t.Context(), bus.BucketObserved, bus.BucketOptions{Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range synth.Bookstore(false) {
		if _, err := observed.Put(t.Context(), o.Key(), o.Msg); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := observed.Put(t.Context(), layout.SyncKey, synth.SyncMarker(1)); err != nil {
		t.Fatal(err)
	}

	// The pod's name through its deprecated environment name.
	env := map[string]string{"OSM_NATS_URL": srv.URL(), "OSM_NATS_USER": "compiler", "OSM_NATS_PASSWORD": "c", "OSM_HOLDER": "compiler-0"}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	var logs logging.Buffer
	go func() {
		done <- app.Run(ctx, Spec(Options{}), []string{"--admin-addr", "127.0.0.1:0", "--log-format", "json"}, func(k string) string { return env[k] }, &logs)
	}()
	edge, err := bus.Connect(t.Context(), bus.Options{URL: srv.URL(), Role: bus.RoleEdge, User: "edge", Password: "e"})
	if err != nil {
		t.Fatal(err)
	}
	defer edge.Close()
	var gen meshv1.Generation
	deadline := time.Now().Add(20 * time.Second)
	for {
		compiled, err := edge.Bucket(t.Context(), bus.BucketCompiled)
		if err == nil {
			if _, err := compiled.Get(t.Context(), layout.GenerationKey, &gen); err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no generation; logs:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if gen.GetNumber() != 1 || gen.GetChangedKeys() != 35 {
		t.Errorf("generation = %v", &gen)
	}
	addr := ""
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, `"admin listener up"`) {
			_, rest, _ := strings.Cut(line, `"admin_addr":"`)
			addr, _, _ = strings.Cut(rest, `"`)
		}
	}
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("readyz = %d %s", resp.StatusCode, body)
	}
	resp, err = http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`osm_compiler_generation\{[^}]*\} 1\n`, `osm_compiler_compile_duration_seconds_bucket\{[^}]*trigger="mixed"`, `osm_compiler_keys_written_total\{op="put"[^}]*\} 35\n`, `osm_compiler_rejected_policies\{[^}]*\} 0\n`} {
		if !regexp.MustCompile(want).Match(body) {
			t.Errorf("metrics lack %s:\n%s", want, body)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the service did not stop")
	}
	if !strings.Contains(logs.String(), `"msg":"generation committed"`) {
		t.Errorf("logs lack the commit:\n%s", logs.String())
	}
	for _, want := range []string{`"flag":"--holder"`, `"holder":"compiler-0"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %s:\n%s", want, logs.String())
		}
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
