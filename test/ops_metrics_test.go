package test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
)

var (
	opsListeners = []string{"http", "connect", "socks5", "transparent"}
	opsDecisions = []string{"allow", "deny", "report"}
	opsReasons   = []string{"", "not_allowed", "port_not_allowed", "denied_by_rule", "private_range", "sni_mismatch", "sni_missing",
		"tls_hello_invalid", "ech_refused", "protocol_mismatch", "auth_required", "dlp", "bad_request", "dns_error", "dial_error", "limit", "timeout"}
)

// TestMetrics scrapes /metrics with the Prometheus text parser: every
// family is there from the start with its known label values at zero;
// after a known set of requests the counters moved by exactly their
// amounts; bytes match what was carried; the tunnel gauge goes up and back
// down; no label carries a host or a client. /debug/pprof/ follows
// admin.pprof, across a reload.
func TestMetrics(t *testing.T) {
	f := newOpsFarm(t)
	o := opsOpts{}
	p := f.start(t, o)
	cfg := f.config(o)

	start := f.scrape(t)
	wantTypes := map[string]dto.MetricType{
		"egressd_requests_total":                               dto.MetricType_COUNTER,
		"egressd_active_tunnels":                               dto.MetricType_GAUGE,
		"egressd_bytes_total":                                  dto.MetricType_COUNTER,
		"egressd_dial_duration_seconds":                        dto.MetricType_HISTOGRAM,
		"egressd_tunnel_duration_seconds":                      dto.MetricType_HISTOGRAM,
		"egressd_http_request_duration_seconds":                dto.MetricType_HISTOGRAM,
		"egressd_dns_duration_seconds":                         dto.MetricType_HISTOGRAM,
		"egressd_dns_stale_answers_total":                      dto.MetricType_COUNTER,
		"egressd_build_info":                                   dto.MetricType_GAUGE,
		"egressd_draining":                                     dto.MetricType_GAUGE,
		"egressd_config_reloads_total":                         dto.MetricType_COUNTER,
		"egressd_config_info":                                  dto.MetricType_GAUGE,
		"egressd_config_last_reload_success_timestamp_seconds": dto.MetricType_GAUGE,
		"egressd_rule_matches_total":                           dto.MetricType_COUNTER,
		"egressd_limit_rejections_total":                       dto.MetricType_COUNTER,
		"egressd_client_connections":                           dto.MetricType_GAUGE,
		"egressd_auth_checks_total":                            dto.MetricType_COUNTER,
		"egressd_cache_requests_total":                         dto.MetricType_COUNTER,
		"egressd_cache_served_bytes_total":                     dto.MetricType_COUNTER,
		"egressd_cache_collapsed_total":                        dto.MetricType_COUNTER,
		"egressd_cache_stored_bytes":                           dto.MetricType_GAUGE,
		"egressd_cache_stored_objects":                         dto.MetricType_GAUGE,
		"egressd_cache_evictions_total":                        dto.MetricType_COUNTER,
		"go_goroutines":                                        dto.MetricType_GAUGE,
		"go_memstats_heap_alloc_bytes":                         dto.MetricType_GAUGE,
		"process_open_fds":                                     dto.MetricType_GAUGE,
		"process_cpu_seconds_total":                            dto.MetricType_COUNTER,
		"process_resident_memory_bytes":                        dto.MetricType_GAUGE,
	}
	for name, typ := range wantTypes {
		mf, ok := start[name]
		if !ok {
			t.Errorf("family %s missing at start", name)
			continue
		}
		if mf.GetType() != typ {
			t.Errorf("%s is %v, want %v", name, mf.GetType(), typ)
		}
	}
	zero := func(name string, labels map[string]string) {
		t.Helper()
		if v, ok := start.get(name, labels); !ok || v != 0 {
			t.Errorf("%s%v at start: %v (exists: %v), want 0", name, labels, v, ok)
		}
	}
	for _, l := range opsListeners {
		zero("egressd_active_tunnels", map[string]string{"listener": l})
		zero("egressd_tunnel_duration_seconds", map[string]string{"listener": l})
		for _, d := range []string{"up", "down"} {
			zero("egressd_bytes_total", map[string]string{"listener": l, "direction": d})
		}
		for _, lim := range []string{"max_connections", "max_connections_per_client"} {
			zero("egressd_limit_rejections_total", map[string]string{"listener": l, "limit": lim})
		}
		for _, d := range opsDecisions {
			for _, r := range opsReasons {
				zero("egressd_requests_total", map[string]string{"listener": l, "decision": d, "reason": r})
			}
		}
	}
	for _, r := range []string{"success", "error"} {
		zero("egressd_config_reloads_total", map[string]string{"result": r})
	}
	for _, r := range []string{"hit", "negative_hit", "miss", "not_found", "stale", "error"} {
		zero("egressd_dns_duration_seconds", map[string]string{"result": r})
	}
	for _, l := range []string{"http", "socks5", "transparent"} {
		zero("egressd_client_connections", map[string]string{"listener": l})
	}
	for _, s := range []string{"cache", "bcrypt", "shared"} {
		for _, r := range []string{"ok", "fail"} {
			zero("egressd_auth_checks_total", map[string]string{"source": s, "result": r})
		}
	}
	for _, s := range []string{"bcrypt", "shared"} {
		zero("egressd_auth_checks_total", map[string]string{"source": s, "result": "overload"})
	}
	for _, r := range []string{"hit", "miss", "revalidated"} {
		zero("egressd_cache_requests_total", map[string]string{"result": r})
	}
	for _, name := range []string{"egressd_cache_served_bytes_total", "egressd_cache_collapsed_total",
		"egressd_cache_stored_bytes", "egressd_cache_stored_objects", "egressd_cache_evictions_total"} {
		zero(name, map[string]string{})
	}
	zero("egressd_rule_matches_total", map[string]string{"rule": "origin"})
	for _, r := range []string{"success", "refused", "timeout", "error"} {
		zero("egressd_dial_duration_seconds", map[string]string{"result": r})
	}
	zero("egressd_http_request_duration_seconds", map[string]string{})
	zero("egressd_dns_stale_answers_total", map[string]string{})
	zero("egressd_draining", map[string]string{})
	// The test binary is built without -ldflags: main.version is "dev".
	if got := start.series("egressd_build_info"); !cmp.Equal(got, map[string]float64{"goversion=" + runtime.Version() + ",version=dev": 1}) {
		t.Errorf("egressd_build_info = %v", got)
	}
	if got := start.series("egressd_config_info"); !cmp.Equal(got, map[string]float64{"sha256=" + sha256Hex(cfg): 1}) {
		t.Errorf("egressd_config_info = %v, want the sha256 of the config file", got)
	}
	if code := adminStatus(t, f, "/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ with admin.pprof false: %d", code)
	}

	// Known traffic.
	const bodyUp = 100
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: f.httpAddr}), DisableKeepAlives: true}}
	for i := 0; i < 2; i++ {
		resp, err := client.Post(fmt.Sprintf("http://fixed.test:%d/post", f.ports.fixed), "text/plain", strings.NewReader(strings.Repeat("u", bodyUp)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != fixedBody {
			t.Fatalf("POST: %s %d bytes", resp.Status, len(b))
		}
	}
	resp, err := client.Get(fmt.Sprintf("http://other.test:%d/", f.ports.fixed))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("denied GET: %s", resp.Status)
	}

	raw := fmt.Sprintf("raw.test:%d", f.ports.raw)
	bulk := func(c net.Conn, n int) {
		t.Helper()
		msg := strings.Repeat("b", n)
		if err := echo(c, msg); err != nil {
			t.Fatal(err)
		}
		c.(interface{ CloseWrite() error }).CloseWrite()
		if b, _ := io.ReadAll(c); len(b) != 0 {
			t.Fatalf("%d extra bytes", len(b))
		}
		c.Close()
	}
	c, err := connectTunnel(f.httpAddr, raw)
	if err != nil {
		t.Fatal(err)
	}
	bulk(c, 5000)
	c, err = socksTunnel(f.socksAddr, raw)
	if err != nil {
		t.Fatal(err)
	}
	bulk(c, 3000)
	if _, err := connectTunnel(f.httpAddr, fmt.Sprintf("other.test:%d", f.ports.tls)); err == nil {
		t.Fatal("CONNECT other.test allowed")
	}
	if _, err := socksTunnel(f.socksAddr, fmt.Sprintf("other.test:%d", f.ports.tls)); err == nil {
		t.Fatal("SOCKS5 other.test allowed")
	}

	// Open tunnels are in the gauge while they last.
	held1, err := connectTunnel(f.httpAddr, raw)
	if err != nil {
		t.Fatal(err)
	}
	held2, err := socksTunnel(f.socksAddr, raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []net.Conn{held1, held2} {
		if err := echo(h, "ping"); err != nil {
			t.Fatal(err)
		}
	}
	f.waitMetric(t, "egressd_active_tunnels", map[string]string{"listener": "connect"}, 1)
	f.waitMetric(t, "egressd_active_tunnels", map[string]string{"listener": "socks5"}, 1)
	held1.Close()
	held2.Close()
	f.waitMetric(t, "egressd_active_tunnels", map[string]string{"listener": "connect"}, 0)
	f.waitMetric(t, "egressd_active_tunnels", map[string]string{"listener": "socks5"}, 0)

	// Every exchange has finished: three on each front end (http: two
	// allowed, one denied; connect and socks5: one bulk, one held, one
	// denied).
	const exchanges = 9
	total := func(m metrics) float64 {
		var n float64
		for _, v := range m.series("egressd_requests_total") {
			n += v
		}
		return n
	}
	waitUntil(t, 10*time.Second, func() bool { return total(f.scrape(t)) == total(start)+exchanges },
		func() string {
			return fmt.Sprintf("requests_total moved by %v, want %d", total(f.scrape(t))-total(start), exchanges)
		})
	waitUntil(t, 10*time.Second, func() bool { return len(p.AccessLines()) == exchanges },
		func() string { return fmt.Sprintf("%d access lines, want %d", len(p.AccessLines()), exchanges) })
	end := f.scrape(t)

	delta := func(name string) map[string]float64 {
		d := map[string]float64{}
		before := start.series(name)
		for k, v := range end.series(name) {
			if dv := v - before[k]; dv != 0 {
				d[k] = dv
			}
		}
		return d
	}
	wantRequests := map[string]float64{
		"decision=allow,listener=http,reason=":              2,
		"decision=deny,listener=http,reason=not_allowed":    1,
		"decision=allow,listener=connect,reason=":           2,
		"decision=deny,listener=connect,reason=not_allowed": 1,
		"decision=allow,listener=socks5,reason=":            2,
		"decision=deny,listener=socks5,reason=not_allowed":  1,
	}
	if diff := cmp.Diff(wantRequests, delta("egressd_requests_total")); diff != "" {
		t.Errorf("egressd_requests_total moved (-want +got):\n%s", diff)
	}
	// Bytes: the HTTP ones are what each access line says (the denial's
	// body counts as bytes down), and the allowed ones are exact.
	var httpDown float64
	for _, l := range p.AccessLines() {
		if l["listener"] == "http" {
			httpDown += l["bytes_down"].(float64)
		}
	}
	if n := accessCount(p, map[string]any{"listener": "http", "host": "fixed.test", "bytes_up": bodyUp, "bytes_down": len(fixedBody)}); n != 2 {
		t.Errorf("%d exact access lines for the POSTs, want 2", n)
	}
	wantBytes := map[string]float64{
		"direction=up,listener=http":      2 * bodyUp,
		"direction=down,listener=http":    httpDown,
		"direction=up,listener=connect":   5000 + 4,
		"direction=down,listener=connect": 5000 + 4,
		"direction=up,listener=socks5":    3000 + 4,
		"direction=down,listener=socks5":  3000 + 4,
	}
	if diff := cmp.Diff(wantBytes, delta("egressd_bytes_total")); diff != "" {
		t.Errorf("egressd_bytes_total moved (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]float64{"rule=origin": 6}, delta("egressd_rule_matches_total")); diff != "" {
		t.Errorf("egressd_rule_matches_total moved (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]float64{"result=success": 6}, delta("egressd_dial_duration_seconds")); diff != "" {
		t.Errorf("dials observed (-want +got):\n%s", diff)
	}
	// Durations: each tunnel at its close, each allowed forwarded request
	// (not the denied one).
	if diff := cmp.Diff(map[string]float64{"listener=connect": 2, "listener=socks5": 2}, delta("egressd_tunnel_duration_seconds")); diff != "" {
		t.Errorf("tunnel durations observed (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]float64{"": 2}, delta("egressd_http_request_duration_seconds")); diff != "" {
		t.Errorf("forwarded request durations observed (-want +got):\n%s", diff)
	}
	if d := delta("egressd_dns_duration_seconds"); len(d) == 0 {
		t.Error("no DNS resolution observed")
	}
	for _, name := range []string{"egressd_limit_rejections_total", "egressd_config_reloads_total", "egressd_active_tunnels", "egressd_recovered_panics_total"} {
		if d := delta(name); len(d) != 0 {
			t.Errorf("%s moved: %v", name, d)
		}
	}

	// No label value is a host, a client or an address.
	for name, mf := range end {
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				v := lp.GetValue()
				if strings.Contains(v, ".test") || strings.Contains(v, "127.0.0.") {
					t.Errorf("%s has label %s=%q", name, lp.GetName(), v)
				}
			}
		}
	}

	// admin.pprof reloads.
	o.Pprof = true
	cfg2 := f.config(o)
	replaceFile(t, f.configPath, cfg2)
	f.waitMetric(t, "egressd_config_reloads_total", map[string]string{"result": "success"}, 1)
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/goroutine?debug=1"} {
		if code := adminStatus(t, f, path); code != http.StatusOK {
			t.Errorf("%s with admin.pprof true: %d", path, code)
		}
	}
	if got := f.scrape(t).series("egressd_config_info"); !cmp.Equal(got, map[string]float64{"sha256=" + sha256Hex(cfg2): 1}) {
		t.Errorf("egressd_config_info after the reload = %v", got)
	}
	if v := f.scrape(t).value(t, "process_open_fds", map[string]string{}); v <= 0 || v > float64(fdCount(t, p.PID()))+16 {
		t.Errorf("process_open_fds = %v", v)
	}
}

func adminStatus(t *testing.T, f *opsFarm, path string) int {
	t.Helper()
	resp, err := adminGet(f.adminAddr, path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode
}
