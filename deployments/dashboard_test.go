package deployments

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// labelsFromPrometheus are added by the scrape (job, instance) or by the
// histogram exposition (le), not by egressd.
var labelsFromPrometheus = []string{"instance", "job", "le"}

// TestDashboardNamesOnlyListedMetrics: every PromQL expression of the
// dashboard names only families in grafana/metrics.txt, with their labels,
// and every listed family is used. egressd's metrics test compares
// metrics.txt (DashboardMetricFamilies) with the real registry.
func TestDashboardNamesOnlyListedMetrics(t *testing.T) {
	families, err := DashboardMetricFamilies()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]MetricFamily{}
	for _, f := range families {
		if _, dup := byName[f.Name]; dup {
			t.Errorf("metrics.txt lists %s twice", f.Name)
		}
		byName[f.Name] = f
	}
	typeOf := func(name string) (string, bool) {
		f, ok := byName[name]
		return f.Type, ok
	}

	exprs, err := DashboardExpressions()
	if err != nil {
		t.Fatal(err)
	}
	if len(exprs) < 20 {
		t.Fatalf("only %d expressions found: is the dashboard parsed?", len(exprs))
	}
	used := map[string]bool{}
	for _, e := range exprs {
		allowed := slices.Clone(labelsFromPrometheus)
		for _, series := range e.Metrics {
			family, ok := FamilyOf(series, typeOf)
			if !ok {
				t.Errorf("%s: %s is not in grafana/metrics.txt: %s", e.Where, series, e.PromQL)
				continue
			}
			used[family] = true
			allowed = append(allowed, byName[family].Labels...)
		}
		for _, l := range e.Labels {
			if !slices.Contains(allowed, l) {
				t.Errorf("%s: label %q is not a label of %q: %s", e.Where, l, e.Metrics, e.PromQL)
			}
		}
	}
	for _, f := range families {
		if !used[f.Name] {
			t.Errorf("metrics.txt lists %s, which the dashboard does not use", f.Name)
		}
	}
}

// TestDashboardCoversTheOperationsMetrics: the panels the farm issue asks
// for are there, over the metric families of the operations issue.
func TestDashboardCoversTheOperationsMetrics(t *testing.T) {
	exprs, err := DashboardExpressions()
	if err != nil {
		t.Fatal(err)
	}
	find := func(title string) []Expression {
		var out []Expression
		for _, e := range exprs {
			if strings.Contains(strings.ToLower(e.Where), strings.ToLower(title)) {
				out = append(out, e)
			}
		}
		return out
	}
	tests := []struct {
		panel string
		want  string // substring of one of its expressions
	}{
		{"by reason", "sum by (decision, reason) (rate(egressd_requests_total"},
		{"top rules", "topk(10, sum by (rule) (rate(egressd_rule_matches_total"},
		{"active tunnels", "sum by (listener) (egressd_active_tunnels"},
		{"throughput", "sum by (listener, direction) (rate(egressd_bytes_total"},
		{"dial latency", "histogram_quantile(0.99, sum by (le) (rate(egressd_dial_duration_seconds_bucket"},
		{"dns latency", "histogram_quantile(0.99, sum by (le) (rate(egressd_dns_duration_seconds_bucket"},
		{"tunnel duration", "histogram_quantile(0.99, sum by (le, listener) (rate(egressd_tunnel_duration_seconds_bucket"},
		{"forwarded request latency", "histogram_quantile(0.99, sum by (le) (rate(egressd_http_request_duration_seconds_bucket"},
		{"config reloads", "sum by (result) (increase(egressd_config_reloads_total"},
		{"instances per config", "count by (sha256) (egressd_config_info"},
		{"would be denied", `decision="report"`},
	}
	for _, tt := range tests {
		t.Run(tt.panel, func(t *testing.T) {
			es := find(tt.panel)
			if len(es) == 0 {
				t.Fatalf("no panel titled like %q", tt.panel)
			}
			for _, e := range es {
				if strings.Contains(e.PromQL, tt.want) {
					return
				}
			}
			t.Errorf("panel %q: no expression contains %q", tt.panel, tt.want)
		})
	}
}

func TestDashboardModel(t *testing.T) {
	var d struct {
		UID           string `json:"uid"`
		Title         string `json:"title"`
		SchemaVersion int    `json:"schemaVersion"`
		Panels        []struct {
			ID         int                       `json:"id"`
			Type       string                    `json:"type"`
			Title      string                    `json:"title"`
			GridPos    *struct{ H, W, X, Y int } `json:"gridPos"`
			Datasource *struct {
				UID string `json:"uid"`
			} `json:"datasource"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name string `json:"name"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(dashboardJSON, &d); err != nil {
		t.Fatal(err)
	}
	if d.UID != "egressd" || d.Title != "egressd" || d.SchemaVersion < 36 {
		t.Errorf("uid %q, title %q, schemaVersion %d", d.UID, d.Title, d.SchemaVersion)
	}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: bad gridPos %+v", p.Title, p.GridPos)
		}
		if p.Type != "row" && (p.Datasource == nil || p.Datasource.UID != "${datasource}") {
			t.Errorf("panel %q must use the ${datasource} variable", p.Title)
		}
	}
	var vars []string
	for _, v := range d.Templating.List {
		vars = append(vars, v.Name)
	}
	if diff := cmp.Diff([]string{"datasource", "job", "instance", "listener"}, vars); diff != "" {
		t.Errorf("template variables (-want +got):\n%s", diff)
	}
}

func TestScanPromQL(t *testing.T) {
	tests := []struct {
		name    string
		expr    string
		metrics []string
		labels  []string
		wantErr bool
	}{
		{
			name:    "aggregation with by and rate",
			expr:    `sum by (decision, reason) (rate(egressd_requests_total{job=~"$job",decision=~"deny|report"}[$__rate_interval]))`,
			metrics: []string{"egressd_requests_total"},
			labels:  []string{"decision", "job", "reason"},
		},
		{
			name:    "histogram quantile",
			expr:    `histogram_quantile(0.99, sum by (le) (rate(egressd_dial_duration_seconds_bucket[5m])))`,
			metrics: []string{"egressd_dial_duration_seconds_bucket"},
			labels:  []string{"le"},
		},
		{
			name:    "binary operation, offset and numbers",
			expr:    `process_open_fds / process_max_fds offset 5m > bool 0.9 * 1e3`,
			metrics: []string{"process_max_fds", "process_open_fds"},
		},
		{
			name:    "aggregation clause after the argument, topk parameter",
			expr:    `topk(10, sum(rate(egressd_rule_matches_total[1h])) without (instance))`,
			metrics: []string{"egressd_rule_matches_total"},
			labels:  []string{"instance"},
		},
		{
			name:    "vector matching",
			expr:    `a_total * on (job) group_left (version) b_info`,
			metrics: []string{"a_total", "b_info"},
			labels:  []string{"job", "version"},
		},
		{
			name:    "strings with braces and Grafana ${var}",
			expr:    `count(x{l="a}b", m='${v:regex}'})`,
			metrics: []string{"x"},
			labels:  []string{"l", "m"},
		},
		{
			name:    "quoted metric name",
			expr:    `{"my.metric", job="x"}`,
			metrics: []string{"my.metric"},
			labels:  []string{"job"},
		},
		{name: "unbalanced paren", expr: `sum(rate(x[5m])`, wantErr: true},
		{name: "unterminated matcher", expr: `x{job="a"`, wantErr: true},
		{name: "unterminated string", expr: `x{job="a}`, wantErr: true},
		{name: "matcher without value", expr: `x{job=}`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			metrics, labels, err := scanPromQL(tt.expr)
			if (err != nil) != tt.wantErr {
				t.Fatalf("scanPromQL(%q) error = %v, want error %v", tt.expr, err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if diff := cmp.Diff(tt.metrics, metrics); diff != "" {
				t.Errorf("metrics (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.labels, labels); diff != "" {
				t.Errorf("labels (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFamilyOf(t *testing.T) {
	types := map[string]string{
		"h_seconds":  "histogram",
		"s_seconds":  "summary",
		"c_total":    "counter",
		"g_count":    "gauge", // a gauge whose name ends in _count is its own family
		"x_requests": "counter",
	}
	typeOf := func(n string) (string, bool) { typ, ok := types[n]; return typ, ok }
	tests := []struct {
		series, family string
		ok             bool
	}{
		{"h_seconds_bucket", "h_seconds", true},
		{"h_seconds_sum", "h_seconds", true},
		{"h_seconds_count", "h_seconds", true},
		{"s_seconds_count", "s_seconds", true},
		{"s_seconds_bucket", "", false},
		{"c_total", "c_total", true},
		{"c_total_count", "", false},
		{"g_count", "g_count", true},
		{"x_requests_bucket", "", false},
		{"unknown", "", false},
	}
	for _, tt := range tests {
		family, ok := FamilyOf(tt.series, typeOf)
		if family != tt.family || ok != tt.ok {
			t.Errorf("FamilyOf(%q) = %q, %v; want %q, %v", tt.series, family, ok, tt.family, tt.ok)
		}
	}
}
