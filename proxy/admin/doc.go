// Package admin serves egressd's operator endpoints: /healthz (the process is
// alive), /readyz (listeners up and a policy loaded, 503 while draining),
// /metrics (Prometheus, on egressd's own registry) and, only when enabled,
// /debug/pprof/. It owns no state: readiness is a function it is given.
package admin
