package app

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is a readiness check: nil means ready.
type Check func(ctx context.Context) error

// Health holds the readiness checks a service registers. /readyz answers 200
// only when the service has said it registered every check (Started), every
// check passes, and the service is not shutting down; it has no check of its
// own that always passes.
type Health struct {
	mu       sync.Mutex
	checks   map[string]Check
	started  atomic.Bool
	stopping atomic.Bool
}

func newHealth() *Health { return &Health{checks: map[string]Check{}} }

// AddReadyCheck registers (or replaces) a named readiness check.
func (h *Health) AddReadyCheck(name string, c Check) {
	h.mu.Lock()
	h.checks[name] = c
	h.mu.Unlock()
}

// Started tells the runner that the service has registered every readiness
// check it will have. Until then /readyz fails with "starting", so that a
// check registered early that already passes (the NATS connection, say)
// cannot make the service look ready before the checks registered after it
// exist. Call it once, from Run, after the last AddReadyCheck.
func (h *Health) Started() { h.started.Store(true) }

// Ready runs every check and returns the failures by name.
func (h *Health) Ready(ctx context.Context) map[string]error {
	failed := map[string]error{}
	if h.stopping.Load() {
		failed["shutdown"] = fmt.Errorf("shutting down")
	}
	if !h.started.Load() {
		failed["starting"] = fmt.Errorf("the service has not registered all its readiness checks yet")
	}
	h.mu.Lock()
	checks := make(map[string]Check, len(h.checks))
	for k, v := range h.checks {
		checks[k] = v
	}
	h.mu.Unlock()
	if len(checks) == 0 {
		failed["checks"] = fmt.Errorf("no readiness check registered yet")
	}
	for name, c := range checks {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if err := c(cctx); err != nil {
			failed[name] = err
		}
		cancel()
	}
	return failed
}

func (h *Health) serveReady(w http.ResponseWriter, r *http.Request) {
	failed := h.Ready(r.Context())
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if len(failed) == 0 {
		fmt.Fprintln(w, "ok")
		return
	}
	names := make([]string, 0, len(failed))
	for n := range failed {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "%s: %v\n", n, failed[n])
	}
	http.Error(w, b.String(), http.StatusServiceUnavailable)
}

// adminMux serves /healthz, /readyz, /metrics and, while o turns them on,
// pprof's.
func adminMux(h *Health, reg *prometheus.Registry, o *observability) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", h.serveReady)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	o.handlePprof(mux)
	return mux
}
