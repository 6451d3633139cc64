package admin

import (
	"io"
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/egressd/egressd/policy"
)

// Options configure the admin handler.
type Options struct {
	// Gatherer is the registry /metrics serves. Nil: /metrics is 404.
	Gatherer prometheus.Gatherer
	// Ready reports readiness and, when not ready, why. Nil: always ready.
	Ready func() (ok bool, why string)
	// Pprof reports whether /debug/pprof/ is served (admin.pprof in the
	// config). It is asked on every request, so a config reload turns
	// profiling on or off. Nil: never served.
	Pprof func() bool
	// UI reports whether the status page (/) and its API (/api/check,
	// /api/denials) are served (admin.ui in the config). It is asked on
	// every request, so a reload turns them on or off. Nil: never served.
	UI func() bool
	// UIHosts lists the names, besides IP literals and localhost, that the
	// status page, its API and /debug/pprof/ answer to in the Host header
	// (admin.ui_hosts, normalized as policy.NormalizeHost does); any other
	// Host gets 403. It is asked on every such request, so a reload
	// changes it. Nil: none.
	UIHosts func() []string
	// Stats feeds the page's recent denials, top hosts and request counts.
	// Nil: the page shows none.
	Stats *Stats
	// Decider answers /api/check: the running engine, the one every front
	// end and `egressd check` ask. Nil: /api/check answers 503.
	Decider policy.Decider
	// Status reports the server's version, config and listeners for the
	// page. Nil: the page shows none.
	Status func() Status
}

// Handler returns the admin mux.
func Handler(o Options) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if o.Ready != nil {
			if ok, why := o.Ready(); !ok {
				w.WriteHeader(http.StatusServiceUnavailable)
				io.WriteString(w, why+"\n")
				return
			}
		}
		io.WriteString(w, "ready\n")
	})
	if o.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{}))
	}
	if o.Pprof != nil {
		// Registered on our mux only: importing net/http/pprof also
		// registers on http.DefaultServeMux, which egressd never serves.
		for path, h := range map[string]http.HandlerFunc{
			"/debug/pprof/":        pprof.Index,
			"/debug/pprof/cmdline": pprof.Cmdline,
			"/debug/pprof/profile": pprof.Profile,
			"/debug/pprof/symbol":  pprof.Symbol,
			"/debug/pprof/trace":   pprof.Trace,
		} {
			mux.Handle(path, enabled(o.Pprof, hostGuard(o.UIHosts, h)))
		}
	}
	if o.UI != nil {
		(&ui{o: o, checks: newTokenBucket(checkRate, checkBurst)}).register(mux)
	}
	return mux
}

// enabled serves h while on() is true, and 404 otherwise.
func enabled(on func() bool, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !on() {
			http.NotFound(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}
