package deployments

import (
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestAlertRulesPromtool: the rules load in Prometheus (promtool check
// rules) and their unit tests pass (promtool test rules): each alert fires
// on the series of an instance in trouble and not on a healthy one.
func TestAlertRulesPromtool(t *testing.T) {
	promtool := lookTool(t, "promtool") // Debian's prometheus package
	for _, args := range [][]string{
		{"check", "rules", "egressd.rules.yaml"},
		{"test", "rules", "egressd.rules.test.yaml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "prometheus"
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestAlertRulesCoverTheIssue: the alerts the operations issue asks for are
// there, and every expression names a metric. egressd's contract test
// (test/metrics_contract_test.go) checks the names against the registry.
func TestAlertRulesCoverTheIssue(t *testing.T) {
	rules, err := AlertRules()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]AlertRule{}
	for _, r := range rules {
		byName[r.Name] = r
	}
	want := map[string]string{ // alert -> a metric it must use
		"EgressdDown":                     "up",
		"EgressdNotReady":                 "egressd_draining",
		"EgressdConfigReloadFailing":      "egressd_config_reloads_total",
		"EgressdConfigDrift":              "egressd_config_info",
		"EgressdDenialSpike":              "egressd_requests_total",
		"EgressdDNSErrors":                "egressd_dns_duration_seconds_count",
		"EgressdConnectionLimitReached":   "egressd_limit_rejections_total",
		"EgressdUpstreamProxyUnavailable": "egressd_upstream_proxy_requests_total",
	}
	var names []string
	for n := range byName {
		names = append(names, n)
	}
	slices.Sort(names)
	var wantNames []string
	for n := range want {
		wantNames = append(wantNames, n)
	}
	slices.Sort(wantNames)
	if d := cmp.Diff(wantNames, names); d != "" {
		t.Errorf("alerts (-want +got):\n%s", d)
	}
	for n, metric := range want {
		if r, ok := byName[n]; ok && !slices.Contains(r.Metrics, metric) {
			t.Errorf("%s uses %v, not %s: %s", n, r.Metrics, metric, r.PromQL)
		}
	}
}
