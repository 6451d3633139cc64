package policy

import (
	"context"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// rolloutConfig has a global deny list at the top, a group-scoped deny rule,
// and allow rules below them that would otherwise match the same names.
func rolloutConfig(mode string, groups map[string]Group) Config {
	return Config{
		Mode:       mode,
		DenyRanges: []string{DefaultRanges},
		RequireSNI: true,
		TLSPorts:   []int{443},
		Groups:     groups,
		Rules: []Rule{
			{Name: "allow-first", Hosts: []string{"ok.paste.example"}, Ports: []int{443}},
			{Name: "no-paste", Action: ActionDeny, Hosts: []string{"paste.example", "*.paste.example"}},
			{Name: "no-plain-http", Action: ActionDeny, Hosts: []string{"*.example"}, Ports: []int{80}},
			{Name: "batch-no-uploads", Action: ActionDeny, Groups: []string{"batch"}, Hosts: []string{"upload.example"}, Ports: []int{443}},
			{Name: "no-net", Action: ActionDeny, CIDRs: []string{"93.184.216.0/24"}},
			{Name: "everything-example", Hosts: []string{"*.example"}, Ports: []int{80, 443, 8080}},
			{Name: "public-ips", CIDRs: []string{"93.184.0.0/16"}, Ports: []int{443}},
			{Name: "web-ssh", Groups: []string{"web"}, Hosts: []string{"git.example"}, Ports: []int{22}},
		},
	}
}

var rolloutDNS = fakeResolver{
	"paste.example":     addrs("198.51.100.10"),
	"www.paste.example": addrs("198.51.100.10"),
	"ok.paste.example":  addrs("93.184.215.10"),
	"upload.example":    addrs("93.184.215.11"),
	"news.example":      addrs("93.184.215.12"),
	"meta.example":      addrs("169.254.169.254"),
	"git.example":       addrs("93.184.215.13"),
}

var (
	webClient   = Client{Addr: netip.MustParseAddr("10.0.1.5")}
	batchClient = Client{Addr: netip.MustParseAddr("10.0.2.5")}
	bothClient  = Client{Addr: netip.MustParseAddr("10.0.3.5")} // in web and batch
	loneClient  = Client{Addr: netip.MustParseAddr("10.9.9.9")} // in no group
)

func rolloutGroups(webMode, batchMode string) map[string]Group {
	return map[string]Group{
		"web":   {CIDRs: []string{"10.0.1.0/24", "10.0.3.0/24"}, Mode: webMode},
		"batch": {CIDRs: []string{"10.0.2.0/24", "10.0.3.0/24"}, Mode: batchMode},
	}
}

type rolloutWant struct {
	Verdict Verdict
	Reason  Reason
	Rule    string
	Group   string
	Mode    string
	Lookups []string
}

func decideRollout(t *testing.T, cfg Config, c Client, host string, port uint16) rolloutWant {
	t.Helper()
	p, err := Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	res := &countingResolver{fakeResolver: rolloutDNS}
	d, err := NewEngine(p, res).Decide(context.Background(), Request{Client: c, Host: host, Port: port})
	if err != nil {
		t.Fatalf("Decide(%s:%d): %v", host, port, err)
	}
	if d.Verdict == Deny && len(d.Addrs) != 0 {
		t.Errorf("Decide(%s:%d) denied with addresses %v", host, port, d.Addrs)
	}
	return rolloutWant{Verdict: d.Verdict, Reason: d.Reason, Rule: d.Rule, Group: d.Group, Mode: d.Mode, Lookups: res.calls}
}

// TestDenyRules: a deny rule is evaluated in order with the allow rules, the
// first match wins, it denies with denied_by_rule naming the rule in every
// mode, and a denied name is never resolved.
func TestDenyRules(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{ModeEnforce, ModeReport} {
		cfg := rolloutConfig(mode, rolloutGroups("", ""))
		tests := []struct {
			name   string
			client Client
			host   string
			port   uint16
			want   rolloutWant
		}{
			{"global deny beats later wildcard", loneClient, "paste.example", 443,
				rolloutWant{Verdict: Deny, Reason: ReasonDeniedByRule, Rule: "no-paste", Mode: mode}},
			{"deny rule without ports covers every port", loneClient, "www.paste.example", 8080,
				rolloutWant{Verdict: Deny, Reason: ReasonDeniedByRule, Rule: "no-paste", Mode: mode}},
			{"deny rule for an unusual port", webClient, "a.b.paste.example", 5432,
				rolloutWant{Verdict: Deny, Reason: ReasonDeniedByRule, Rule: "no-paste", Group: "web", Mode: mode}},
			{"earlier allow beats later deny", loneClient, "ok.paste.example", 443,
				rolloutWant{Verdict: Allow, Rule: "allow-first", Mode: mode, Lookups: []string{"ok.paste.example"}}},
			{"earlier allow only on its port", loneClient, "ok.paste.example", 8080,
				rolloutWant{Verdict: Deny, Reason: ReasonDeniedByRule, Rule: "no-paste", Mode: mode}},
			{"deny rule with ports", loneClient, "news.example", 80,
				rolloutWant{Verdict: Deny, Reason: ReasonDeniedByRule, Rule: "no-plain-http", Mode: mode}},
			{"deny rule port mismatch falls through", loneClient, "news.example", 443,
				rolloutWant{Verdict: Allow, Rule: "everything-example", Mode: mode, Lookups: []string{"news.example"}}},
			{"deny rule for a group", batchClient, "upload.example", 443,
				rolloutWant{Verdict: Deny, Reason: ReasonDeniedByRule, Rule: "batch-no-uploads", Group: "batch", Mode: mode}},
			{"deny rule for a group spares others", webClient, "upload.example", 443,
				rolloutWant{Verdict: Allow, Rule: "everything-example", Group: "web", Mode: mode, Lookups: []string{"upload.example"}}},
			{"deny cidrs for ip literals", loneClient, "93.184.216.34", 443,
				rolloutWant{Verdict: Deny, Reason: ReasonDeniedByRule, Rule: "no-net", Mode: mode}},
			{"deny cidrs in an odd spelling", loneClient, "[::ffff:93.184.216.34]", 443,
				rolloutWant{Verdict: Deny, Reason: ReasonDeniedByRule, Rule: "no-net", Mode: mode}},
			{"ip outside the deny cidrs", loneClient, "93.184.215.34", 443,
				rolloutWant{Verdict: Allow, Rule: "public-ips", Mode: mode}},
		}
		for _, tt := range tests {
			t.Run(mode+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				got := decideRollout(t, cfg, tt.client, tt.host, tt.port)
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("Decide(%s:%d) (-want +got):\n%s", tt.host, tt.port, diff)
				}
			})
		}
	}
}

// TestDenyRuleIsNotPortNotAllowed: a deny rule matching the host on other
// ports says nothing about allowed ports; with no allow rule the reason is
// not_allowed.
func TestDenyRuleIsNotPortNotAllowed(t *testing.T) {
	t.Parallel()
	cfg := Config{Rules: []Rule{{Name: "no-80", Action: ActionDeny, Hosts: []string{"x.example"}, Ports: []int{80}}}}
	got := decideRollout(t, cfg, loneClient, "x.example", 443)
	want := rolloutWant{Verdict: Deny, Reason: ReasonNotAllowed, Mode: ModeEnforce}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Error(diff)
	}
}

// TestGroupModes: a group's mode replaces the policy's for its clients; a
// client in several groups is in report mode only when all of them are;
// private ranges and deny rules stay denied in every mode.
func TestGroupModes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name               string
		policyMode         string
		webMode, batchMode string
		client             Client
		host               string
		port               uint16
		want               rolloutWant
	}{
		{"report policy, enforcing group denies", ModeReport, ModeEnforce, "", webClient, "unknown.test", 443,
			rolloutWant{Verdict: Deny, Reason: ReasonNotAllowed, Group: "web", Mode: ModeEnforce}},
		{"report policy, other group reports", ModeReport, ModeEnforce, "", batchClient, "news.example", 9999,
			rolloutWant{Verdict: Report, Reason: ReasonPortNotAllowed, Group: "batch", Mode: ModeReport, Lookups: []string{"news.example"}}},
		{"report policy, client in no group reports", ModeReport, ModeEnforce, "", loneClient, "news.example", 9999,
			rolloutWant{Verdict: Report, Reason: ReasonPortNotAllowed, Mode: ModeReport, Lookups: []string{"news.example"}}},
		{"in an enforcing and a reporting group: enforce", ModeReport, ModeEnforce, "", bothClient, "news.example", 9999,
			rolloutWant{Verdict: Deny, Reason: ReasonPortNotAllowed, Group: "web", Mode: ModeEnforce}},
		{"enforce policy, reporting group reports", ModeEnforce, ModeReport, "", webClient, "news.example", 9999,
			rolloutWant{Verdict: Report, Reason: ReasonPortNotAllowed, Group: "web", Mode: ModeReport, Lookups: []string{"news.example"}}},
		{"enforce policy, group inheriting enforce wins", ModeEnforce, ModeReport, "", bothClient, "news.example", 9999,
			rolloutWant{Verdict: Deny, Reason: ReasonPortNotAllowed, Group: "batch", Mode: ModeEnforce}},
		{"both groups report", ModeEnforce, ModeReport, ModeReport, bothClient, "news.example", 9999,
			rolloutWant{Verdict: Report, Reason: ReasonPortNotAllowed, Group: "batch", Mode: ModeReport, Lookups: []string{"news.example"}}},
		{"enforce policy, client in no group", ModeEnforce, ModeReport, ModeReport, loneClient, "news.example", 9999,
			rolloutWant{Verdict: Deny, Reason: ReasonPortNotAllowed, Mode: ModeEnforce}},
		{"allowed by a rule through its group", ModeReport, ModeEnforce, "", webClient, "git.example", 22,
			rolloutWant{Verdict: Allow, Rule: "web-ssh", Group: "web", Mode: ModeEnforce, Lookups: []string{"git.example"}}},
		{"report group never relaxes private ranges", ModeEnforce, ModeReport, ModeReport, webClient, "meta.example", 443,
			rolloutWant{Verdict: Deny, Reason: ReasonPrivateRange, Rule: "everything-example", Group: "web", Mode: ModeReport, Lookups: []string{"meta.example"}}},
		{"report group never relaxes deny rules", ModeReport, ModeReport, ModeReport, webClient, "paste.example", 443,
			rolloutWant{Verdict: Deny, Reason: ReasonDeniedByRule, Rule: "no-paste", Group: "web", Mode: ModeReport}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := decideRollout(t, rolloutConfig(tt.policyMode, rolloutGroups(tt.webMode, tt.batchMode)), tt.client, tt.host, tt.port)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Decide(%s:%d) (-want +got):\n%s", tt.host, tt.port, diff)
			}
		})
	}
}

// TestGroupModeSNI: the SNI and protocol checks after an allowed decision
// follow the client's mode, not the policy's.
func TestGroupModeSNI(t *testing.T) {
	t.Parallel()
	p, err := Compile(rolloutConfig(ModeReport, rolloutGroups(ModeEnforce, "")))
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(p, rolloutDNS)
	for _, tc := range []struct {
		client Client
		want   Verdict
	}{{webClient, Deny}, {batchClient, Report}, {loneClient, Report}} {
		d, err := e.Decide(context.Background(), Request{Client: tc.client, Host: "news.example", Port: 443})
		if err != nil || !d.Verdict.Passes() {
			t.Fatalf("Decide: %+v %v", d, err)
		}
		if v, r := p.CheckSNI(d, "evil.test", true, false); v != tc.want || r != ReasonSNIMismatch {
			t.Errorf("CheckSNI for %s (mode %s) = %v %s, want %v sni_mismatch", tc.client.Addr, d.Mode, v, r, tc.want)
		}
		if v, r := p.CheckProtocol(d, false); v != tc.want || r != ReasonProtocolMismatch {
			t.Errorf("CheckProtocol for %s = %v %s, want %v", tc.client.Addr, v, r, tc.want)
		}
	}
	// A decision made by hand, without a mode, follows its policy's.
	if v, _ := p.CheckSNI(Decision{Verdict: Allow, Host: "a.example", Port: 443}, "b.example", true, false); v != Report {
		t.Errorf("hand-made decision under a report policy: %v", v)
	}
}
