package accesslog

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/egressd/egressd/policy"
)

// gather returns the registry's families by name.
func gather(t *testing.T, reg *prometheus.Registry) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

func labelNames(mf *dto.MetricFamily) []string {
	var names []string
	if len(mf.GetMetric()) > 0 {
		for _, lp := range mf.GetMetric()[0].GetLabel() {
			names = append(names, lp.GetName())
		}
	}
	return names
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return -1
}

// series returns "label=value,..." (labels in name order) -> value for one
// family.
func series(mf *dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	for _, m := range mf.GetMetric() {
		var kv []string
		for _, lp := range m.GetLabel() {
			kv = append(kv, lp.GetName()+"="+lp.GetValue())
		}
		out[strings.Join(kv, ",")] = value(m)
	}
	return out
}

// Families with labels known in advance exist from the start, at zero.
func TestMetricsFromStart(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.SetConfig("abc")
	m.SetRules([]string{"github", "internal"})
	fams := gather(t, reg)

	wantCount := map[string]int{
		"egressd_requests_total":                               len(knownListeners) * len(knownDecisions) * len(knownReasons),
		"egressd_active_tunnels":                               len(knownListeners),
		"egressd_bytes_total":                                  2 * len(knownListeners),
		"egressd_config_reloads_total":                         2,
		"egressd_dns_duration_seconds":                         6,
		"egressd_dns_stale_answers_total":                      1,
		"egressd_draining":                                     1,
		"egressd_limit_rejections_total":                       len(knownListeners) * len(knownLimits),
		"egressd_client_connections":                           len(knownSockets),
		"egressd_rule_matches_total":                           2,
		"egressd_config_info":                                  1,
		"egressd_dial_duration_seconds":                        4,
		"egressd_tunnel_duration_seconds":                      len(knownListeners),
		"egressd_http_request_duration_seconds":                1,
		"egressd_recovered_panics_total":                       1,
		"egressd_auth_checks_total":                            8,
		"go_goroutines":                                        1,
		"process_open_fds":                                     1,
		"egressd_config_last_reload_success_timestamp_seconds": 1,
	}
	for name, n := range wantCount {
		mf, ok := fams[name]
		if !ok {
			t.Errorf("family %s missing", name)
			continue
		}
		if got := len(mf.GetMetric()); got != n {
			t.Errorf("%s: %d series, want %d", name, got, n)
		}
		if !strings.HasPrefix(name, "egressd_") || name == "egressd_config_info" ||
			name == "egressd_config_last_reload_success_timestamp_seconds" {
			continue
		}
		for k, v := range series(mf) {
			if v != 0 {
				t.Errorf("%s{%s} = %v at start", name, k, v)
			}
		}
	}
	if got := series(fams["egressd_config_info"]); !cmp.Equal(got, map[string]float64{"sha256=abc": 1}) {
		t.Errorf("config_info %v", got)
	}
	for _, k := range []string{"decision=deny,listener=http,reason=limit", "decision=allow,listener=socks5,reason=",
		"decision=report,listener=connect,reason=not_allowed"} {
		if _, ok := series(fams["egressd_requests_total"])[k]; !ok {
			t.Errorf("requests_total{%s} missing", k)
		}
	}
}

func TestMetricsSetRulesDropsRemovedRules(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.SetRules([]string{"a", "b"})
	m.RuleMatches.WithLabelValues("a").Inc()
	m.SetRules([]string{"a", "c"})
	got := series(gather(t, reg)["egressd_rule_matches_total"])
	if diff := cmp.Diff(map[string]float64{"rule=a": 1, "rule=c": 0}, got); diff != "" {
		t.Errorf("rule series (-want +got):\n%s", diff)
	}
}

// One finished record moves the counters by exactly its own amounts, and
// no label carries the host or the client.
func TestRecordUpdatesMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	l := NewLogger(nil, m)
	rec := l.NewRecord(policy.ListenerConnect, netip.MustParseAddr("10.1.2.3"))
	rec.Host = "secret-host.test"
	rec.Decision = policy.Decision{Verdict: policy.Allow, Rule: "github", Host: "secret-host.test"}
	rec.Up.Store(517)
	rec.Down.Store(4812)
	rec.Finish()
	rec.Finish() // only the first counts
	deny := l.NewRecord(policy.ListenerHTTP, netip.MustParseAddr("10.1.2.3"))
	deny.Deny(policy.ReasonLimit)
	deny.Finish()
	// A tunnel that was established counts its duration; a forwarded
	// request its own; the tunnel above (never Opened: denied by the guard,
	// say) and the denied request count in neither.
	tun := l.NewRecord(policy.ListenerSOCKS5, netip.MustParseAddr("10.1.2.3"))
	tun.Decision = policy.Decision{Verdict: policy.Allow}
	tun.Opened()
	tun.Finish()
	fwd := l.NewRecord(policy.ListenerHTTP, netip.MustParseAddr("10.1.2.3"))
	fwd.Decision = policy.Decision{Verdict: policy.Report, Reason: policy.ReasonNotAllowed}
	fwd.Finish()
	m.ObserveDial(time.Millisecond, nil)

	fams := gather(t, reg)
	checks := []struct {
		family, series string
		want           float64
	}{
		{"egressd_requests_total", "decision=allow,listener=connect,reason=", 1},
		{"egressd_requests_total", "decision=deny,listener=http,reason=limit", 1},
		{"egressd_bytes_total", "direction=up,listener=connect", 517},
		{"egressd_bytes_total", "direction=down,listener=connect", 4812},
		{"egressd_rule_matches_total", "rule=github", 1},
		{"egressd_tunnel_duration_seconds", "listener=socks5", 1},
		{"egressd_tunnel_duration_seconds", "listener=connect", 0},
		{"egressd_http_request_duration_seconds", "", 1},
		{"egressd_dial_duration_seconds", "result=success", 1},
	}
	for _, c := range checks {
		if got := series(fams[c.family])[c.series]; got != c.want {
			t.Errorf("%s{%s} = %v, want %v", c.family, c.series, got, c.want)
		}
	}
	for _, mf := range fams {
		for _, mt := range mf.GetMetric() {
			for _, lp := range mt.GetLabel() {
				if strings.Contains(lp.GetValue(), "secret-host") || strings.Contains(lp.GetValue(), "10.1.2.3") {
					t.Errorf("%s has label %s=%q", mf.GetName(), lp.GetName(), lp.GetValue())
				}
			}
		}
	}
}

// The Grafana dashboard queries the families listed in
// deployments/grafana/metrics.txt ("name type labels"); each must exist in
// the registry, with that type and every label listed ("-": none needed).
func TestGrafanaMetricsExist(t *testing.T) {
	path := filepath.Join("..", "..", "deployments", "grafana", "metrics.txt")
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.SetConfig("abc")
	m.SetRules([]string{"r"})
	fams := gather(t, reg)
	types := map[dto.MetricType]string{
		dto.MetricType_COUNTER: "counter", dto.MetricType_GAUGE: "gauge",
		dto.MetricType_HISTOGRAM: "histogram", dto.MetricType_SUMMARY: "summary", dto.MetricType_UNTYPED: "untyped",
	}
	sc := bufio.NewScanner(f)
	n := 0
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		if len(fields) != 3 {
			t.Errorf("%s:%d: want \"name type labels\": %q", path, line, text)
			continue
		}
		n++
		name, typ := fields[0], fields[1]
		var want []string
		if fields[2] != "-" {
			want = strings.Split(fields[2], ",")
		}
		mf, ok := fams[name]
		if !ok {
			t.Errorf("%s:%d: the registry has no family %s", path, line, name)
			continue
		}
		if got := types[mf.GetType()]; got != typ {
			t.Errorf("%s:%d: %s is a %s, the dashboard expects a %s", path, line, name, got, typ)
		}
		got := labelNames(mf)
		for _, l := range want {
			if !slices.Contains(got, l) {
				t.Errorf("%s:%d: %s has no label %q (it has %v)", path, line, name, l, got)
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Errorf("%s lists no family", path)
	}
}

// A stale DNS answer is counted in egressd_dns_stale_answers_total as well
// as observed under result="stale".
func TestObserveDNSStale(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.ObserveDNS("hit", time.Millisecond)
	m.ObserveDNS("stale", time.Millisecond)
	m.ObserveDNS("stale", time.Millisecond)
	fams := gather(t, reg)
	if got := series(fams["egressd_dns_stale_answers_total"]); !cmp.Equal(got, map[string]float64{"": 2}) {
		t.Errorf("egressd_dns_stale_answers_total = %v, want 2", got)
	}
	if got := series(fams["egressd_dns_duration_seconds"])["result=stale"]; got != 2 {
		t.Errorf(`egressd_dns_duration_seconds{result="stale"} count = %v, want 2`, got)
	}
}

// egressd_build_info carries the version it is given and the Go version;
// egressd_draining follows SetDraining.
func TestBuildInfoAndDraining(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.SetBuild("v1.2.3")
	m.SetDraining(true)
	fams := gather(t, reg)
	want := map[string]float64{"goversion=" + runtime.Version() + ",version=v1.2.3": 1}
	if got := series(fams["egressd_build_info"]); !cmp.Equal(got, want) {
		t.Errorf("egressd_build_info = %v, want %v", got, want)
	}
	if got := series(fams["egressd_draining"]); !cmp.Equal(got, map[string]float64{"": 1}) {
		t.Errorf("egressd_draining = %v, want 1", got)
	}
	m.SetDraining(false)
	if got := series(gather(t, reg)["egressd_draining"]); !cmp.Equal(got, map[string]float64{"": 0}) {
		t.Errorf("egressd_draining = %v, want 0", got)
	}
}

// A dial's error picks its result label; a real refused connect and a real
// connect timeout are told apart.
func TestDialResult(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	_, refused := net.Dial("tcp", closed)
	// A deadline already past: the dial times out before it connects.
	_, timedOut := (&net.Dialer{Deadline: time.Now().Add(-time.Second)}).Dial("tcp", closed)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, canceled := (&net.Dialer{}).DialContext(ctx, "tcp", closed)
	for _, c := range []struct {
		name string
		err  error
		want string
	}{
		{"success", nil, DialSuccess},
		{"refused", refused, DialRefused},
		{"refused among attempts", fmt.Errorf("dial a.test: %w", errors.Join(errors.New("no route"), refused)), DialRefused},
		{"timeout", timedOut, DialTimeout},
		{"timeout wins", errors.Join(refused, timedOut), DialTimeout},
		{"deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), DialTimeout},
		{"client gone", canceled, DialError},
		{"other", errors.New("network is unreachable"), DialError},
	} {
		if c.err == nil && c.name != "success" {
			t.Fatalf("%s: the dial did not fail", c.name)
		}
		if got := DialResult(c.err); got != c.want {
			t.Errorf("%s (%v): %q, want %q", c.name, c.err, got, c.want)
		}
	}
}

// A successful dial is counted without an allocation (it happens once per
// tunnel and per new upstream connection).
func TestObserveDialSuccessAllocatesNothing(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	if n := testing.AllocsPerRun(100, func() { m.ObserveDial(time.Millisecond, nil) }); n != 0 {
		t.Errorf("ObserveDial(success) allocated %v times", n)
	}
}
