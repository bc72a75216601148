package app

import (
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/sirupsen/logrus"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// MeshConfig fields ApplyObservability follows.
const (
	FieldOSMLogLevel       = "spec.observability.osmLogLevel"
	FieldEnableDebugServer = "spec.observability.enableDebugServer"
)

// observability holds what a MeshConfig's spec.observability changes live:
// the logger's level and whether the debug endpoints are served.
type observability struct {
	logger    *logrus.Logger
	flagLevel logrus.Level // --log-level
	flagDebug bool         // --enable-pprof
	debug     atomic.Bool

	mu sync.Mutex // serializes ApplyObservability
}

// meshLogLevels are OSM's osmLogLevel values this mesh follows.
var meshLogLevels = map[string]logrus.Level{
	"trace": logrus.TraceLevel, "debug": logrus.DebugLevel, "info": logrus.InfoLevel,
	"warn": logrus.WarnLevel, "error": logrus.ErrorLevel,
}

// ApplyObservability makes the service follow mc's spec.observability (nil:
// no MeshConfig), live:
//   - osmLogLevel (trace, debug, info, warn or error) is the log level; when
//     it is empty, or there is no MeshConfig, --log-level is. Another value
//     is logged and the level stays.
//   - enableDebugServer serves Go's profiles (/debug/pprof/ on the admin
//     listener) when true and answers 404 there when false; with no
//     MeshConfig, --enable-pprof decides.
//
// Each change is logged once. Services that follow a MeshConfig call it from
// their follower (libs/meshcfg).
func (rt *Runtime) ApplyObservability(mc *meshv1.MeshConfig) {
	o := rt.obs
	o.mu.Lock()
	defer o.mu.Unlock()
	log := rt.Log
	level, levelFrom := o.flagLevel, "--log-level"
	if s := mc.GetObservability().GetOsmLogLevel(); s != "" {
		if l, ok := meshLogLevels[strings.ToLower(s)]; ok {
			level, levelFrom = l, FieldOSMLogLevel
		} else {
			log.WithFields(logrus.Fields{"field": FieldOSMLogLevel, "value": s}).
				Warn("meshconfig log level is not one of trace, debug, info, warn, error; keeping the current level")
			level, levelFrom = o.logger.GetLevel(), ""
		}
	}
	if old := o.logger.GetLevel(); old != level {
		o.logger.SetLevel(level)
		log.WithFields(logrus.Fields{"old": old.String(), "new": level.String(), "from": levelFrom}).Info("log level changed")
	}
	debug, debugFrom := o.flagDebug, "--enable-pprof"
	if mc != nil {
		debug, debugFrom = mc.GetObservability().GetEnableDebugServer(), FieldEnableDebugServer
	}
	if old := o.debug.Swap(debug); old != debug {
		log.WithFields(logrus.Fields{"old": old, "new": debug, "from": debugFrom}).Info("pprof on the admin listener turned " + map[bool]string{true: "on", false: "off"}[debug])
	}
}

// DebugEnabled reports whether the debug endpoints are served now.
func (rt *Runtime) DebugEnabled() bool { return rt.obs.debug.Load() }

// gate serves h while the debug endpoints are on, 404 otherwise.
func (o *observability) gate(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !o.debug.Load() {
			http.NotFound(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// handlePprof serves Go's profiles under /debug/pprof/ behind the gate.
func (o *observability) handlePprof(mux *http.ServeMux) {
	mux.Handle("/debug/pprof/", o.gate(http.HandlerFunc(pprof.Index)))
	mux.Handle("/debug/pprof/cmdline", o.gate(http.HandlerFunc(pprof.Cmdline)))
	mux.Handle("/debug/pprof/profile", o.gate(http.HandlerFunc(pprof.Profile)))
	mux.Handle("/debug/pprof/symbol", o.gate(http.HandlerFunc(pprof.Symbol)))
	mux.Handle("/debug/pprof/trace", o.gate(http.HandlerFunc(pprof.Trace)))
}
