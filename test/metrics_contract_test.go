package test

import (
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/egressd/egressd/deployments"
	"github.com/egressd/egressd/proxy"
	"github.com/egressd/egressd/proxy/config"
)

// seriesFromPrometheus are series and labels the scrape adds, not egressd.
var (
	seriesFromPrometheus = []string{"up"}
	labelsFromScrape     = []string{"job", "instance", "le"}
)

// TestShippedQueriesUseExportedMetrics: every series the Grafana dashboard
// and the Prometheus alert rules query is a family egressd's registry
// really exports (histograms by their _bucket, _sum and _count series),
// with the labels they match or group on; so a renamed metric cannot leave
// a dashboard panel or an alert silently empty.
func TestShippedQueriesUseExportedMetrics(t *testing.T) {
	// One rule and one parent proxy, so that the per-rule and per-parent
	// families have series.
	raw := []byte("upstream_proxies:\n  corp:\n    urls: [\"http://127.0.0.1:3128\"]\n" +
		"policy:\n  rules:\n    - name: r\n      hosts: [a.test]\n      ports: [443]\n")
	cfg, pol, err := config.LoadBytes(raw, "contract.yaml")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	srv, err := proxy.New(cfg, pol, raw, proxy.Options{Registry: reg, Version: "v1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]string{}
	labels := map[string][]string{}
	for _, mf := range mfs {
		types[mf.GetName()] = map[string]string{"COUNTER": "counter", "GAUGE": "gauge", "HISTOGRAM": "histogram",
			"SUMMARY": "summary", "UNTYPED": "untyped"}[mf.GetType().String()]
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if !slices.Contains(labels[mf.GetName()], lp.GetName()) {
					labels[mf.GetName()] = append(labels[mf.GetName()], lp.GetName())
				}
			}
		}
	}
	for _, s := range seriesFromPrometheus {
		types[s] = "gauge"
	}
	typeOf := func(name string) (string, bool) { t, ok := types[name]; return t, ok }

	dash, err := deployments.DashboardExpressions()
	if err != nil {
		t.Fatal(err)
	}
	rules, err := deployments.AlertRules()
	if err != nil {
		t.Fatal(err)
	}
	exprs := dash
	for _, r := range rules {
		exprs = append(exprs, r.Expression)
	}
	if len(dash) < 20 || len(rules) < 5 {
		t.Fatalf("%d dashboard expressions and %d alert rules: are they parsed?", len(dash), len(rules))
	}
	for _, e := range exprs {
		allowed := slices.Clone(labelsFromScrape)
		for _, series := range e.Metrics {
			family, ok := deployments.FamilyOf(series, typeOf)
			if !ok {
				t.Errorf("%s: %s is not exported by egressd: %s", e.Where, series, e.PromQL)
				continue
			}
			allowed = append(allowed, labels[family]...)
		}
		for _, l := range e.Labels {
			if !slices.Contains(allowed, l) {
				t.Errorf("%s: label %q is on none of %v: %s", e.Where, l, e.Metrics, e.PromQL)
			}
		}
	}

	// grafana/metrics.txt, the dashboard's list, names real families.
	listed, err := deployments.DashboardMetricFamilies()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range listed {
		if types[f.Name] != f.Type {
			t.Errorf("metrics.txt: %s is a %s, the registry has %q", f.Name, f.Type, types[f.Name])
		}
		for _, l := range f.Labels {
			if !slices.Contains(labels[f.Name], l) {
				t.Errorf("metrics.txt: %s has no label %s (registry: %v)", f.Name, l, labels[f.Name])
			}
		}
	}

	// The families this issue added, with their labels.
	for name, want := range map[string][]string{
		"egressd_build_info":                    {"goversion", "version"},
		"egressd_draining":                      nil,
		"egressd_dns_stale_answers_total":       nil,
		"egressd_dial_duration_seconds":         {"result"},
		"egressd_tunnel_duration_seconds":       {"listener"},
		"egressd_http_request_duration_seconds": nil,
	} {
		got := slices.Clone(labels[name])
		slices.Sort(got)
		if _, ok := types[name]; !ok || !slices.Equal(got, want) {
			t.Errorf("%s: exported %v with labels %v, want labels %v", name, ok, got, want)
		}
	}
}
