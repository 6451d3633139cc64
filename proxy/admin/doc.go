// Package admin serves egressd's operator endpoints: /healthz (the process is
// alive), /readyz (listeners up and a policy loaded, 503 while draining),
// /metrics (Prometheus, on egressd's own registry), only when enabled
// /debug/pprof/, and the status page (admin.ui): / in HTML, /api/check (the
// running engine's decision for a client and a target, as `egressd check`)
// and /api/denials (the recent denials).
//
// The page's own data is Stats, the access log's Observer: a fixed ring of
// recent denials and two top-k sketches (a count-min sketch with a small
// candidate set), fed by the one terminal event of every request, bounded in
// memory whatever the number of distinct hosts. Everything else on the page
// comes from the metrics registry and the server's Status. Everything that
// came off the wire is rendered as text: html/template on the server,
// textContent in the page's script, and a Content-Security-Policy that
// allows only the page's own embedded script and style. The page, its API
// and pprof answer only a Host that is an IP literal, localhost or a name in
// admin.ui_hosts (hostGuard: DNS rebinding), and /api/check is rate-limited
// (tokenBucket), since it can make egressd query its DNS servers.
package admin
