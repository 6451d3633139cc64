package policy

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func matchPolicy(t testing.TB) *Policy {
	t.Helper()
	p, err := Compile(Config{
		DenyRanges: []string{DefaultRanges},
		Groups: map[string]Group{
			"web": {CIDRs: []string{"10.0.1.0/24"}},
			"ops": {CIDRs: []string{"10.0.2.0/24"}, Users: []string{"alice"}},
		},
		Rules: []Rule{
			{Name: "github", Groups: []string{"web"}, Hosts: []string{"github.com", "*.github.com"}, Ports: []int{443}},
			{Name: "ops-ssh", Groups: []string{"ops", "web"}, Hosts: []string{"*.github.com"}, Ports: []int{22}},
			{Name: "internal-api", CIDRs: []string{"10.20.0.0/16", "2001:db8:20::/48"}, Ports: []int{8443}},
			{Name: "idn", Hosts: []string{"BÜCHER.example."}, Ports: []int{443}},
			{Name: "any-example", Hosts: []string{"*.Example.COM"}, Ports: []int{80, 443}},
			{Name: "apex-later", Hosts: []string{"example.com", "www.example.com"}, Ports: []int{8080, 443}},
			{Name: "ops-only", Groups: []string{"ops"}, Hosts: []string{"secret.test"}, Ports: []int{443}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestMatch(t *testing.T) {
	t.Parallel()
	p := matchPolicy(t)
	web := Client{Addr: netip.MustParseAddr("10.0.1.5")}
	ops := Client{Addr: netip.MustParseAddr("10.0.2.5")}
	alice := Client{Addr: netip.MustParseAddr("192.0.2.9"), User: "alice"}
	other := Client{Addr: netip.MustParseAddr("10.9.9.9")}
	type want struct {
		Rule   string
		Group  string
		Reason Reason
		Host   string
		IsIP   bool
	}
	tests := []struct {
		name   string
		client Client
		host   string
		port   uint16
		want   want
	}{
		{"exact", web, "github.com", 443, want{Rule: "github", Group: "web", Host: "github.com"}},
		{"wildcard one level", web, "api.github.com", 443, want{Rule: "github", Group: "web", Host: "api.github.com"}},
		{"wildcard any depth", web, "a.b.c.github.com", 443, want{Rule: "github", Group: "web", Host: "a.b.c.github.com"}},
		{"case and trailing dot", web, "API.GitHub.COM.", 443, want{Rule: "github", Group: "web", Host: "api.github.com"}},
		{"suffix without dot boundary", web, "evilgithub.com", 443, want{Group: "web", Reason: ReasonNotAllowed, Host: "evilgithub.com"}},
		{"host is a suffix of pattern", web, "com", 443, want{Group: "web", Reason: ReasonNotAllowed, Host: "com"}},
		{"client not in group", other, "github.com", 443, want{Reason: ReasonNotAllowed, Host: "github.com"}},
		{"port not allowed", web, "github.com", 80, want{Group: "web", Reason: ReasonPortNotAllowed, Host: "github.com"}},
		{"second rule other port", web, "api.github.com", 22, want{Rule: "ops-ssh", Group: "web", Host: "api.github.com"}},
		{"group order in rule", ops, "api.github.com", 22, want{Rule: "ops-ssh", Group: "ops", Host: "api.github.com"}},
		{"group through user", alice, "api.github.com", 22, want{Rule: "ops-ssh", Group: "ops", Host: "api.github.com"}},
		{"port not allowed only counts rules for client", other, "secret.test", 80, want{Reason: ReasonNotAllowed, Host: "secret.test"}},
		{"port not allowed for group member", ops, "secret.test", 80, want{Group: "ops", Reason: ReasonPortNotAllowed, Host: "secret.test"}},
		{"any client rule names the client's group", web, "www.example.com", 80, want{Rule: "any-example", Group: "web", Host: "www.example.com"}},
		{"any client rule", other, "www.example.com", 80, want{Rule: "any-example", Host: "www.example.com"}},
		{"first match wins over later exact", other, "www.example.com", 443, want{Rule: "any-example", Host: "www.example.com"}},
		{"later rule when earlier lacks port", other, "www.example.com", 8080, want{Rule: "apex-later", Host: "www.example.com"}},
		{"wildcard does not match apex", other, "example.com", 80, want{Reason: ReasonPortNotAllowed, Host: "example.com"}},
		{"apex by exact rule", other, "example.com", 443, want{Rule: "apex-later", Host: "example.com"}},
		{"idn unicode", other, "bücher.example", 443, want{Rule: "idn", Host: "xn--bcher-kva.example"}},
		{"idn punycode", other, "xn--bcher-kva.example", 443, want{Rule: "idn", Host: "xn--bcher-kva.example"}},
		{"ip literal in cidr", other, "10.20.1.2", 8443, want{Rule: "internal-api", Host: "10.20.1.2", IsIP: true}},
		{"ip literal decimal in cidr", other, "169083138", 8443, want{Rule: "internal-api", Host: "10.20.1.2", IsIP: true}},
		{"ip literal mapped in cidr", other, "[::ffff:10.20.1.2]", 8443, want{Rule: "internal-api", Host: "10.20.1.2", IsIP: true}},
		{"ipv6 literal in cidr", other, "[2001:db8:20::7]", 8443, want{Rule: "internal-api", Host: "2001:db8:20::7", IsIP: true}},
		{"ip literal wrong port", other, "10.20.1.2", 443, want{Reason: ReasonPortNotAllowed, Host: "10.20.1.2", IsIP: true}},
		{"ip literal outside cidr", other, "10.21.1.2", 8443, want{Reason: ReasonNotAllowed, Host: "10.21.1.2", IsIP: true}},
		{"name does not match cidr rule", other, "internal.test", 8443, want{Reason: ReasonNotAllowed, Host: "internal.test"}},
		{"mapped client address", Client{Addr: netip.MustParseAddr("::ffff:10.0.1.5")}, "github.com", 443, want{Rule: "github", Group: "web", Host: "github.com"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := p.Match(Request{Client: tt.client, Host: tt.host, Port: tt.port})
			if m.Err != nil {
				t.Fatalf("Match(%q): %v", tt.host, m.Err)
			}
			got := want{Rule: m.RuleName, Group: m.Group, Reason: m.Reason, Host: m.Host, IsIP: m.IsIP}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Match(%q:%d) mismatch (-want +got):\n%s", tt.host, tt.port, diff)
			}
			if (m.Rule >= 0) != (m.RuleName != "") {
				t.Errorf("Rule index %d vs name %q", m.Rule, m.RuleName)
			}
		})
	}
}

func TestMatchBadHost(t *testing.T) {
	t.Parallel()
	p := matchPolicy(t)
	m := p.Match(Request{Host: "a..github.com", Port: 443})
	if !errors.Is(m.Err, ErrBadHost) || m.Reason != ReasonNotAllowed || m.Rule != -1 {
		t.Errorf("Match(bad host) = %+v", m)
	}
}

func TestMatchAllocs(t *testing.T) {
	p, err := Compile(bigConfig(1000))
	if err != nil {
		t.Fatal(err)
	}
	c := Client{Addr: netip.MustParseAddr("10.0.1.7")}
	for _, h := range []string{"host-42-4.example.com", "a.b.svc-9-3.example.net", "miss.example.org", "10.20.1.1"} {
		n := testing.AllocsPerRun(100, func() { p.Match(Request{Client: c, Host: h, Port: 443}) })
		if n != 0 {
			t.Errorf("Match(%q): %v allocs, want 0", h, n)
		}
	}
}

func TestGroups(t *testing.T) {
	t.Parallel()
	p := matchPolicy(t)
	got := p.Groups(Client{Addr: netip.MustParseAddr("10.0.1.1"), User: "alice"})
	if diff := cmp.Diff([]string{"ops", "web"}, got); diff != "" {
		t.Error(diff)
	}
}

func TestCompileErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		path string
		msg  string
	}{
		{"bad mode", Config{Mode: "audit"}, "mode", `"audit": must be enforce or report`},
		{"bad deny range", Config{DenyRanges: []string{"10.0.0.0/33"}}, "deny_ranges[0]", "not a CIDR"},
		{"host bits", Config{DenyRanges: []string{"10.0.0.1/8"}}, "deny_ranges[0]", "did you mean 10.0.0.0/8"},
		{"zone", Config{DenyRanges: []string{"fe80::1%eth0"}}, "deny_ranges[0]", "zones"},
		{"default in allow", Config{DenyRanges: []string{"default"}, AllowRanges: []string{"default"}}, "allow_ranges[0]", "not a CIDR"},
		{"allow outside deny", Config{DenyRanges: []string{"10.0.0.0/8"}, AllowRanges: []string{"11.0.0.0/16"}}, "allow_ranges[0]", "not inside any deny range"},
		{"allow tie", Config{DenyRanges: []string{"default"}, AllowRanges: []string{"127.0.0.0/8"}}, "allow_ranges[0]", "tie is denied"},
		{"bad tls port", Config{TLSPorts: []int{70000}}, "tls_ports[0]", "port must be 1..65535"},
		{"bad http port", Config{HTTPPorts: []int{0}}, "http_ports[0]", "port must be 1..65535"},
		{"http port also tls", Config{TLSPorts: []int{443}, HTTPPorts: []int{80, 443}}, "http_ports[1]", "443: also in tls_ports"},
		{"bad group cidr", Config{Groups: map[string]Group{"g": {CIDRs: []string{"x"}}}}, "groups.g.cidrs[0]", "not a CIDR"},
		{"empty user", Config{Groups: map[string]Group{"g": {Users: []string{""}}}}, "groups.g.users[0]", "must not be empty"},
		{"missing name", Config{Rules: []Rule{{Hosts: []string{"a.com"}, Ports: []int{1}}}}, "rules[0].name", "required"},
		{"duplicate name", Config{Rules: []Rule{{Name: "a", Hosts: []string{"a.com"}, Ports: []int{1}}, {Name: "a", Hosts: []string{"b.com"}, Ports: []int{1}}}}, "rules[1].name", "duplicate rule name"},
		{"unknown group", Config{Rules: []Rule{{Name: "a", Groups: []string{"nope"}, Hosts: []string{"a.com"}, Ports: []int{1}}}}, "rules[0].groups[0]", `"nope": no such group`},
		{"no hosts or cidrs", Config{Rules: []Rule{{Name: "a", Ports: []int{1}}}}, "rules[0]", "matches nothing"},
		{"no ports", Config{Rules: []Rule{{Name: "a", Hosts: []string{"a.com"}}}}, "rules[0].ports", "required"},
		{"port zero", Config{Rules: []Rule{{Name: "a", Hosts: []string{"a.com"}, Ports: []int{0}}}}, "rules[0].ports[0]", "1..65535"},
		{"star alone", Config{Rules: []Rule{{Name: "a", Hosts: []string{"*"}, Ports: []int{1}}}}, "rules[0].hosts[0]", `"*": a lone "*"`},
		{"inner wildcard", Config{Rules: []Rule{{Name: "a", Hosts: []string{"a.*.com"}, Ports: []int{1}}}}, "rules[0].hosts[0]", `"a.*.com": wildcard only allowed as the leftmost label`},
		{"partial wildcard", Config{Rules: []Rule{{Name: "a", Hosts: []string{"*foo.com"}, Ports: []int{1}}}}, "rules[0].hosts[0]", "leftmost label"},
		{"double wildcard", Config{Rules: []Rule{{Name: "a", Hosts: []string{"*.*.com"}, Ports: []int{1}}}}, "rules[0].hosts[0]", "leftmost label"},
		{"empty label", Config{Rules: []Rule{{Name: "a", Hosts: []string{"a..com"}, Ports: []int{1}}}}, "rules[0].hosts[0]", "empty label"},
		{"empty host", Config{Rules: []Rule{{Name: "a", Hosts: []string{""}, Ports: []int{1}}}}, "rules[0].hosts[0]", "empty"},
		{"ip in hosts", Config{Rules: []Rule{{Name: "a", Hosts: []string{"10.0.0.1"}, Ports: []int{1}}}}, "rules[0].hosts[0]", "match only cidrs"},
		{"wildcard ip", Config{Rules: []Rule{{Name: "a", Hosts: []string{"*.10.0.0.1"}, Ports: []int{1}}}}, "rules[0].hosts[0]", "IP literal"},
		{"bad rule cidr", Config{Rules: []Rule{{Name: "a", CIDRs: []string{"10.0.0.0/99"}, Ports: []int{1}}}}, "rules[0].cidrs[0]", "not a CIDR"},
		{"bad group mode", Config{Groups: map[string]Group{"g": {Mode: "audit"}}}, "groups.g.mode", `"audit": must be enforce or report`},
		{"bad action", Config{Rules: []Rule{{Name: "a", Action: "block", Hosts: []string{"a.com"}, Ports: []int{1}}}}, "rules[0].action", `"block": must be allow or deny`},
		{"deny rule with allow_ranges", Config{DenyRanges: []string{"default"}, Rules: []Rule{{Name: "a", Action: "deny", Hosts: []string{"a.com"}, AllowRanges: []string{"10.1.0.0/16"}}}}, "rules[0].allow_ranges", "a deny rule allows nothing"},
		{"deny rule matches nothing", Config{Rules: []Rule{{Name: "a", Action: "deny"}}}, "rules[0]", "matches nothing"},
		{"deny rule bad port", Config{Rules: []Rule{{Name: "a", Action: "deny", Hosts: []string{"a.com"}, Ports: []int{0}}}}, "rules[0].ports[0]", "1..65535"},
		{"bad rule allow", Config{DenyRanges: []string{"default"}, Rules: []Rule{{Name: "a", Hosts: []string{"a.com"}, AllowRanges: []string{"8.8.8.0/24"}, Ports: []int{1}}}}, "rules[0].allow_ranges[0]", "not inside any deny range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Compile(tt.cfg)
			if err == nil {
				t.Fatal("Compile succeeded, want error")
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v is not a *FieldError", err)
			}
			if fe.Path != tt.path || !strings.Contains(fe.Msg, tt.msg) {
				t.Errorf("got %q, want path %q and message containing %q", err, tt.path, tt.msg)
			}
		})
	}
}

func TestCompileAllErrorsAtOnce(t *testing.T) {
	t.Parallel()
	_, err := Compile(Config{
		Mode:       "x",
		DenyRanges: []string{"nope"},
		Rules: []Rule{
			{Name: "a", Hosts: []string{"a.*.com", "*"}, Ports: []int{0}},
			{Name: "a", Groups: []string{"g"}, Hosts: []string{"ok.com"}, Ports: []int{1}},
		},
	})
	var paths []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *FieldError
		if errors.As(e, &fe) {
			paths = append(paths, fe.Path)
		}
	}
	want := []string{"mode", "deny_ranges[0]", "rules[0].hosts[0]", "rules[0].hosts[1]", "rules[0].ports[0]", "rules[1].name", "rules[1].groups[0]"}
	if diff := cmp.Diff(want, paths); diff != "" {
		t.Errorf("error paths (-want +got):\n%s\n%v", diff, err)
	}
}

func TestHostPatternMatches(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pattern, host string
		want          bool
	}{
		{"example.com", "example.com", true},
		{"example.com", "www.example.com", false},
		{"*.example.com", "example.com", false},
		{"*.example.com", "www.example.com", true},
		{"*.example.com", "a.b.example.com", true},
		{"*.example.com", "wwwexample.com", false},
		{"*.example.com", ".example.com", false},
	}
	for _, tt := range tests {
		hp, err := ParseHostPattern(tt.pattern)
		if err != nil {
			t.Fatal(err)
		}
		if got := hp.Matches(tt.host); got != tt.want {
			t.Errorf("%q.Matches(%q) = %v, want %v", tt.pattern, tt.host, got, tt.want)
		}
		if hp.String() != tt.pattern {
			t.Errorf("String() = %q, want %q", hp.String(), tt.pattern)
		}
	}
}
