package app

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/openservicemesh/osm/libs/logging"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// TestApplyObservability: a MeshConfig's osmLogLevel sets the level live and
// enableDebugServer turns pprof on and off (404) on the admin listener; with
// no MeshConfig (or no osmLogLevel) the flags rule again. Each change is
// logged once.
func TestApplyObservability(t *testing.T) {
	var logs logging.Buffer
	ready := make(chan *Runtime, 1)
	spec := Spec{Name: "demo", Run: func(ctx context.Context, rt *Runtime) error {
		ready <- rt
		<-ctx.Done()
		return nil
	}}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, spec, []string{"--admin-addr", "127.0.0.1:0", "--log-level", "info"}, noenv, &logs)
	}()
	rt := <-ready
	pprofCode := func() int { code, _ := get(t, "http://"+rt.AdminAddr+"/debug/pprof/"); return code }
	obs := func(level string, debug bool) *meshv1.MeshConfig {
		return &meshv1.MeshConfig{Observability: &meshv1.ObservabilitySpec{OsmLogLevel: level, EnableDebugServer: debug}}
	}
	if c := pprofCode(); c != http.StatusNotFound {
		t.Errorf("pprof before any MeshConfig, without --enable-pprof = %d, want 404", c)
	}
	steps := []struct {
		name  string
		mc    *meshv1.MeshConfig
		level logrus.Level
		pprof int
	}{
		{"debug, debug server on", obs("debug", true), logrus.DebugLevel, http.StatusOK},
		{"same again", obs("debug", true), logrus.DebugLevel, http.StatusOK},
		{"warn, debug server off", obs("WARN", false), logrus.WarnLevel, http.StatusNotFound},
		{"bad level keeps warn", obs("loud", true), logrus.WarnLevel, http.StatusOK},
		{"no level: --log-level", obs("", true), logrus.InfoLevel, http.StatusOK},
		{"no MeshConfig: flags", nil, logrus.InfoLevel, http.StatusNotFound},
	}
	for _, s := range steps {
		rt.ApplyObservability(s.mc)
		if got := rt.obs.logger.GetLevel(); got != s.level {
			t.Errorf("%s: level %s, want %s", s.name, got, s.level)
		}
		if c := pprofCode(); c != s.pprof {
			t.Errorf("%s: GET /debug/pprof/ = %d, want %d", s.name, c, s.pprof)
		}
	}
	rt.ApplyObservability(obs("debug", false))
	rt.Log.Debug("a debug line")
	cancel()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
	}
	out := logs.String()
	if n := strings.Count(out, `"new":"debug"`); n != 2 {
		t.Errorf("level change to debug logged %d times, want 2 (once per change):\n%s", n, out)
	}
	if !strings.Contains(out, "a debug line") {
		t.Errorf("debug line not logged at osmLogLevel debug")
	}
	if !strings.Contains(out, FieldOSMLogLevel) || !strings.Contains(out, `"value":"loud"`) {
		t.Errorf("bad osmLogLevel not reported with its field and value:\n%s", out)
	}
}
