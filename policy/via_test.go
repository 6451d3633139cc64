package policy

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func viaConfig(mode, defaultVia string) Config {
	c := engineConfig(mode)
	c.DefaultVia = defaultVia
	c.Rules = append([]Rule{
		{Name: "no-paste", Action: ActionDeny, Hosts: []string{"paste.partner.example"}},
		{Name: "partners", Hosts: []string{"*.partner.example"}, Ports: []int{443, 80}, Via: "corp"},
		{Name: "partner-ips", CIDRs: []string{"93.184.216.0/24", "10.30.0.0/16"}, Ports: []int{443}, Via: "corp"},
	}, c.Rules...)
	c.Rules = append(c.Rules, Rule{Name: "loopback", CIDRs: []string{"127.0.0.0/8"}, Ports: []int{443}, Via: "corp"})
	return c
}

// TestDecideVia: a rule with via (or default_via) passes the request to a
// parent without resolving it; everything before the dial decides as
// without via; IP literals still meet the deny ranges.
func TestDecideVia(t *testing.T) {
	anyone := Client{Addr: netip.MustParseAddr("10.9.9.9")}
	web := Client{Addr: netip.MustParseAddr("10.0.1.5")}
	type want struct {
		Verdict Verdict
		Reason  Reason
		Rule    string
		Via     string
		Addrs   []netip.AddrPort
		Lookups []string
	}
	tests := []struct {
		name, mode, defaultVia string
		req                    Request
		want                   want
	}{
		{"rule via: no lookup", ModeEnforce, "", Request{Client: anyone, Host: "app.partner.example", Port: 443},
			want{Verdict: Allow, Rule: "partners", Via: "corp"}},
		{"name only the parent resolves", ModeEnforce, "", Request{Client: anyone, Host: "nx.partner.example", Port: 80},
			want{Verdict: Allow, Rule: "partners", Via: "corp"}},
		{"port of no rule", ModeEnforce, "", Request{Client: anyone, Host: "app.partner.example", Port: 22},
			want{Verdict: Deny, Reason: ReasonPortNotAllowed}},
		{"deny rule before via", ModeEnforce, "", Request{Client: anyone, Host: "paste.partner.example", Port: 443},
			want{Verdict: Deny, Reason: ReasonDeniedByRule, Rule: "no-paste"}},
		{"deny rule in report mode", ModeReport, "corp", Request{Client: anyone, Host: "paste.partner.example", Port: 443},
			want{Verdict: Deny, Reason: ReasonDeniedByRule, Rule: "no-paste"}},
		{"rule without via stays direct", ModeEnforce, "", Request{Client: web, Host: "api.github.com", Port: 443},
			want{Verdict: Allow, Rule: "github", Addrs: addrPorts(443, "140.82.112.6", "2606:50c0:8000::154"), Lookups: []string{"api.github.com"}}},
		{"default_via for a rule naming none", ModeEnforce, "corp2", Request{Client: web, Host: "api.github.com", Port: 443},
			want{Verdict: Allow, Rule: "github", Via: "corp2"}},
		{"rule via beats default_via", ModeEnforce, "corp2", Request{Client: anyone, Host: "app.partner.example", Port: 443},
			want{Verdict: Allow, Rule: "partners", Via: "corp"}},
		{"report mode goes via default_via", ModeReport, "corp2", Request{Client: anyone, Host: "unknown.example", Port: 443},
			want{Verdict: Report, Reason: ReasonNotAllowed, Via: "corp2"}},
		{"report mode port mismatch goes via the host's rule", ModeReport, "corp2", Request{Client: anyone, Host: "app.partner.example", Port: 22},
			want{Verdict: Report, Reason: ReasonPortNotAllowed, Via: "corp"}},
		{"report mode port mismatch of a rule without via", ModeReport, "corp2", Request{Client: web, Host: "api.github.com", Port: 22},
			want{Verdict: Report, Reason: ReasonPortNotAllowed, Via: "corp2"}},
		{"report mode port mismatch, no default_via", ModeReport, "", Request{Client: anyone, Host: "app.partner.example", Port: 22},
			want{Verdict: Report, Reason: ReasonPortNotAllowed, Via: "corp"}},
		{"report mode without default_via resolves", ModeReport, "", Request{Client: anyone, Host: "public.example", Port: 443},
			want{Verdict: Report, Reason: ReasonNotAllowed, Addrs: addrPorts(443, "93.184.216.34"), Lookups: []string{"public.example"}}},
		{"IP literal of a cidrs rule", ModeEnforce, "", Request{Client: anyone, Host: "93.184.216.9", Port: 443},
			want{Verdict: Allow, Rule: "partner-ips", Via: "corp"}},
		{"IP literal never matches hosts", ModeEnforce, "", Request{Client: anyone, Host: "140.82.112.6", Port: 443},
			want{Verdict: Deny, Reason: ReasonNotAllowed}},
		{"IP literal in a deny range", ModeEnforce, "", Request{Client: anyone, Host: "10.30.1.1", Port: 443},
			want{Verdict: Allow, Rule: "partner-ips", Via: "corp"}}, // the rule's cidrs are its exception
		{"metadata address via a rule", ModeEnforce, "", Request{Client: anyone, Host: "0xa9fea9fe", Port: 443},
			want{Verdict: Deny, Reason: ReasonNotAllowed}},
		{"metadata address in report mode", ModeReport, "corp2", Request{Client: anyone, Host: "169.254.169.254", Port: 443},
			want{Verdict: Deny, Reason: ReasonPrivateRange}},
		{"loopback: a tie with a deny range denies, via or not", ModeEnforce, "", Request{Client: anyone, Host: "127.0.0.2", Port: 443},
			want{Verdict: Deny, Reason: ReasonPrivateRange, Rule: "loopback"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Compile(viaConfig(tt.mode, tt.defaultVia))
			if err != nil {
				t.Fatal(err)
			}
			r := &countingResolver{fakeResolver: testDNS}
			d, err := NewEngine(p, r).Decide(context.Background(), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			got := want{Verdict: d.Verdict, Reason: d.Reason, Rule: d.Rule, Via: d.Via, Addrs: d.Addrs, Lookups: r.calls}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
				t.Errorf("decision (-want +got):\n%s", diff)
			}
		})
	}
}

// TestViaPrivateLiteral: an IP literal in a deny range, with no more
// specific exception, is private_range whatever the via: the parent would
// dial it as given.
func TestViaPrivateLiteral(t *testing.T) {
	c := Config{DenyRanges: []string{DefaultRanges}, DefaultVia: "corp", Rules: []Rule{
		{Name: "any-ip", CIDRs: []string{"0.0.0.0/0"}, Ports: []int{443}},
	}}
	p, err := Compile(c)
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(p, nil)
	for host, want := range map[string]Reason{"169.254.169.254": ReasonPrivateRange, "10.0.0.5": ReasonPrivateRange, "::ffff:10.0.0.5": ReasonPrivateRange, "64:ff9b::a9fe:a9fe": ReasonNotAllowed} {
		d, err := e.Decide(context.Background(), Request{Host: host, Port: 443})
		if err != nil || d.Verdict != Deny || d.Reason != want || d.Via != "" {
			t.Errorf("%s: %v %s via %q (%v), want deny %s", host, d.Verdict, d.Reason, d.Via, err, want)
		}
	}
	d, err := e.Decide(context.Background(), Request{Host: "93.184.216.34", Port: 443})
	if err != nil || d.Verdict != Allow || d.Via != "corp" || len(d.Addrs) != 0 {
		t.Errorf("public literal: %+v %v", d, err)
	}
}

func TestCompileViaOnDenyRule(t *testing.T) {
	_, err := Compile(Config{Rules: []Rule{{Name: "x", Action: ActionDeny, Hosts: []string{"a.example"}, Via: "corp"}}})
	if err == nil || !strings.Contains(err.Error(), "rules[0].via: a deny rule sends nothing") {
		t.Fatalf("err = %v", err)
	}
}

func TestVias(t *testing.T) {
	p, err := Compile(viaConfig(ModeEnforce, "corp2"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"corp2", "corp"}, p.Vias()); diff != "" {
		t.Error(diff)
	}
}
