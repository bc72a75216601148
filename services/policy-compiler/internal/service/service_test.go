package service

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/openservicemesh/osm/libs/app"
	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/bus/bustest"
	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

func TestFlagsAreValidated(t *testing.T) {
	apptest.RefusesConfig(t, Spec,
		apptest.BadConfig{Args: []string{"--mesh-config", "osm-system/osm-mesh-config"}, Flag: "--mesh-config"},
		apptest.BadConfig{Args: []string{"--namespace", "Not_A_Namespace"}, Flag: "--namespace"},
		apptest.BadConfig{Args: []string{"--trust-domain", "Cluster Local"}, Flag: "--trust-domain"},
		apptest.BadConfig{Args: []string{"--debounce", "200ms"}, Flag: "--debounce"},
		apptest.BadConfig{Args: []string{"--max-delay", "2s"}, Flag: "--max-delay"},
		apptest.BadConfig{Args: []string{"--mesh-name", ""}, Flag: "--mesh-name"},
		apptest.BadConfig{Args: []string{"--kv-replicas", "0"}, Flag: "--kv-replicas"},
	)
}

func TestHelpListsTheControlPlaneFlags(t *testing.T) {
	apptest.HelpContains(t, Spec,
		"--namespace", "--mesh-config", "name of the mesh's MeshConfig, in --namespace", "default osm-mesh-config",
		"--pod-name", "env OSM_POD_NAME", "--mesh-name", "--trust-domain", "the same as the cert-authority's and the injector's",
		"--holder, env OSM_HOLDER: use --pod-name",
		"--proxyless-grpc", "env OSM_PROXYLESS_GRPC",
	)
}

// TestProxylessGRPCWritesGRPCGroups: with OSM_PROXYLESS_GRPC (the env twin
// of --proxyless-grpc) the compiler writes, beside each Envoy group, the
// identity's gRPC group, which lists the API listener of the bookstore
// apex; without it, no gRPC group is written.
func TestProxylessGRPCWritesGRPCGroups(t *testing.T) {
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprint("proxyless-grpc=", on), func(t *testing.T) {
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
			env := apptest.Env{"OSM_NATS_URL": srv.URL(), "OSM_NATS_USER": "compiler", "OSM_NATS_PASSWORD": "c", "OSM_POD_NAME": "compiler-0", "OSM_PROXYLESS_GRPC": fmt.Sprint(on)}
			ctx, cancel := context.WithCancel(t.Context())
			done, logs := apptest.Start(ctx, Spec(Options{}), []string{"--admin-addr", apptest.FreeAddr(t)}, env)
			edge, err := bus.Connect(t.Context(), bus.Options{URL: srv.URL(), Role: bus.RoleEdge, User: "edge", Password: "e"})
			if err != nil {
				t.Fatal(err)
			}
			defer edge.Close()
			var compiled *bus.Store
			apptest.Eventually(t, "the first generation", 20*time.Second, func() error {
				var err error
				if compiled, err = edge.Bucket(t.Context(), bus.BucketCompiled); err == nil {
					_, err = compiled.Get(t.Context(), layout.GenerationKey, &meshv1.Generation{})
				}
				return err
			})
			var g meshv1.ProxyGroup
			_, err = compiled.Get(t.Context(), layout.GRPCGroupKey("bookbuyer", "bookbuyer"), &g)
			switch {
			case on && err != nil:
				t.Errorf("gRPC group of bookbuyer: %v", err)
			case on && !slices.Contains(g.GetResources()["type.googleapis.com/envoy.config.listener.v3.Listener"].GetNames(), "bookstore.bookstore.svc.cluster.local:14001"):
				t.Errorf("bookbuyer's gRPC group lacks the apex's API listener: %v", &g)
			case !on && err == nil:
				t.Errorf("a gRPC group was written without --proxyless-grpc: %v", &g)
			}
			if _, err := compiled.Get(t.Context(), layout.GroupKey("bookbuyer", "bookbuyer"), &meshv1.ProxyGroup{}); err != nil {
				t.Errorf("Envoy group of bookbuyer: %v", err)
			}
			cancel()
			apptest.Stopped(t, done, logs)
		})
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
	env := apptest.Env{"OSM_NATS_URL": srv.URL(), "OSM_NATS_USER": "compiler", "OSM_NATS_PASSWORD": "c", "OSM_HOLDER": "compiler-0"}
	ctx, cancel := context.WithCancel(t.Context())
	admin := apptest.FreeAddr(t)
	done, logs := apptest.Start(ctx, Spec(Options{}), []string{"--admin-addr", admin, "--log-format", "json"}, env)
	edge, err := bus.Connect(t.Context(), bus.Options{URL: srv.URL(), Role: bus.RoleEdge, User: "edge", Password: "e"})
	if err != nil {
		t.Fatal(err)
	}
	defer edge.Close()
	var gen meshv1.Generation
	apptest.Eventually(t, "the first generation", 20*time.Second, func() error {
		compiled, err := edge.Bucket(t.Context(), bus.BucketCompiled)
		if err == nil {
			_, err = compiled.Get(t.Context(), layout.GenerationKey, &gen)
		}
		return err
	})
	if gen.GetNumber() != 1 || gen.GetChangedKeys() != 35 {
		t.Errorf("generation = %v", &gen)
	}
	// Readiness follows the commit, which the edge can see a moment
	// before the compiler has recorded it.
	apptest.WaitReady(t, admin, 5*time.Second, done, logs)
	body, err := apptest.Metrics(admin)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`osm_compiler_generation\{[^}]*\} 1\n`, `osm_compiler_compile_duration_seconds_bucket\{[^}]*trigger="mixed"`, `osm_compiler_keys_written_total\{op="put"[^}]*\} 35\n`, `osm_compiler_rejected_policies\{[^}]*\} 0\n`} {
		if !regexp.MustCompile(want).MatchString(body) {
			t.Errorf("metrics lack %s:\n%s", want, body)
		}
	}
	// MeshConfig spec.observability is followed live: pprof on the admin
	// listener with enableDebugServer, 404 without.
	mcKey := layout.ObservedKey(layout.KindMeshConfig, app.DefaultNamespace, app.DefaultMeshConfig)
	for _, on := range []bool{true, false} {
		mc := &meshv1.MeshConfig{Observability: &meshv1.ObservabilitySpec{EnableDebugServer: on, OsmLogLevel: "debug"}}
		if _, err := observed.Put(t.Context(), mcKey, mc); err != nil {
			t.Fatal(err)
		}
		want := map[bool]int{true: http.StatusOK, false: http.StatusNotFound}[on]
		apptest.Eventually(t, fmt.Sprintf("GET /debug/pprof/ = %d with enableDebugServer %v", want, on), 10*time.Second, func() error {
			resp, err := http.Get("http://" + admin + "/debug/pprof/")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				return fmt.Errorf("status %d", resp.StatusCode)
			}
			return nil
		})
	}
	cancel()
	apptest.Stopped(t, done, logs)
	if !strings.Contains(logs.String(), `"new":"debug"`) {
		t.Errorf("logs lack the MeshConfig's log level:\n%s", logs.String())
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
