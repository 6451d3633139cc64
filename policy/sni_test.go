package policy

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCheckSNI(t *testing.T) {
	t.Parallel()
	type result struct {
		Verdict Verdict
		Reason  Reason
	}
	name := Decision{Verdict: Allow, Host: "api.github.com", Port: 443}
	ip := Decision{Verdict: Allow, Host: "93.184.216.34", IsIP: true, Port: 443}
	ip6 := Decision{Verdict: Allow, Host: "2606:4700::1", IsIP: true, Port: 443}
	tests := []struct {
		name       string
		mode       string
		requireSNI bool
		echPolicy  string // policy.ech
		d          Decision
		sni        string
		present    bool
		ech        bool
		want       result
	}{
		{"equal", ModeEnforce, true, "", name, "api.github.com", true, false, result{Allow, ReasonNone}},
		{"case and trailing dot", ModeEnforce, true, "", name, "API.GitHub.com.", true, false, result{Allow, ReasonNone}},
		{"mismatch", ModeEnforce, true, "", name, "evil.example", true, false, result{Deny, ReasonSNIMismatch}},
		{"mismatch report", ModeReport, true, "", name, "evil.example", true, false, result{Report, ReasonSNIMismatch}},
		{"ech outer sni mismatch", ModeEnforce, true, "", name, "public.cloudflare-ech.example", true, true, result{Deny, ReasonSNIMismatch}},
		{"unparseable sni", ModeEnforce, true, "", name, "a..b", true, false, result{Deny, ReasonSNIMismatch}},
		{"missing required", ModeEnforce, true, "", name, "", false, false, result{Deny, ReasonSNIMissing}},
		{"missing required report", ModeReport, true, "", name, "", false, false, result{Report, ReasonSNIMissing}},
		{"missing not required", ModeEnforce, false, "", name, "", false, false, result{Allow, ReasonNone}},
		{"present but empty", ModeEnforce, true, "", name, "", true, false, result{Deny, ReasonSNIMissing}},
		{"ip without sni", ModeEnforce, true, "", ip, "", false, false, result{Allow, ReasonNone}},
		{"ip with same ip sni", ModeEnforce, true, "", ip, "93.184.216.34", true, false, result{Allow, ReasonNone}},
		{"ipv6 with same ip sni", ModeEnforce, true, "", ip6, "2606:4700:0::1", true, false, result{Allow, ReasonNone}},
		{"ip with other ip sni", ModeEnforce, true, "", ip, "93.184.216.35", true, false, result{Deny, ReasonSNIMismatch}},
		{"ip with name sni", ModeEnforce, true, "", ip, "example.com", true, false, result{Deny, ReasonSNIMismatch}},
		{"name with ip sni", ModeEnforce, true, "", name, "140.82.112.6", true, false, result{Deny, ReasonSNIMismatch}},
		{"ech allowed", ModeEnforce, true, ECHAllow, name, "api.github.com", true, true, result{Allow, ReasonNone}},
		{"ech refused", ModeEnforce, true, ECHDeny, name, "api.github.com", true, true, result{Deny, ReasonECHRefused}},
		{"ech refused report", ModeReport, true, ECHDeny, name, "api.github.com", true, true, result{Report, ReasonECHRefused}},
		{"ech refused without sni to an ip", ModeEnforce, false, ECHDeny, ip, "", false, true, result{Deny, ReasonECHRefused}},
		{"no ech under deny", ModeEnforce, true, ECHDeny, name, "api.github.com", true, false, result{Allow, ReasonNone}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := Compile(Config{Mode: tt.mode, RequireSNI: tt.requireSNI, ECH: tt.echPolicy, TLSPorts: []int{443}})
			if err != nil {
				t.Fatal(err)
			}
			v, r := p.CheckSNI(tt.d, tt.sni, tt.present, tt.ech)
			if diff := cmp.Diff(tt.want, result{v, r}); diff != "" {
				t.Errorf("CheckSNI(%q) mismatch (-want +got):\n%s", tt.sni, diff)
			}
		})
	}
}

func TestCheckProtocol(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		mode    string
		port    uint16
		isTLS   bool
		verdict Verdict
		reason  Reason
	}{
		{ModeEnforce, 443, true, Allow, ReasonNone},
		{ModeEnforce, 443, false, Deny, ReasonProtocolMismatch},
		{ModeReport, 443, false, Report, ReasonProtocolMismatch},
		{ModeEnforce, 22, false, Allow, ReasonNone},
		{ModeEnforce, 22, true, Allow, ReasonNone},
	} {
		p, err := Compile(Config{Mode: tt.mode, TLSPorts: []int{443, 8443}})
		if err != nil {
			t.Fatal(err)
		}
		v, r := p.CheckProtocol(Decision{Host: "x.example", Port: tt.port}, tt.isTLS)
		if v != tt.verdict || r != tt.reason {
			t.Errorf("%s port %d tls=%v: got %v %q, want %v %q", tt.mode, tt.port, tt.isTLS, v, r, tt.verdict, tt.reason)
		}
	}
}

func TestPolicyAccessors(t *testing.T) {
	t.Parallel()
	p, err := Compile(Config{Mode: ModeReport, RequireSNI: true, TLSPorts: []int{8443, 443, 443},
		Rules: []Rule{{Name: "a", Hosts: []string{"a.example"}, Ports: []int{1}}, {Name: "b", Hosts: []string{"b.example"}, Ports: []int{1}}}})
	if err != nil {
		t.Fatal(err)
	}
	if p.Mode() != ModeReport || !p.RequireSNI() || !p.IsTLSPort(8443) || p.IsTLSPort(80) {
		t.Errorf("accessors: mode %s sni %v", p.Mode(), p.RequireSNI())
	}
	if diff := cmp.Diff([]uint16{443, 8443}, p.TLSPorts()); diff != "" {
		t.Error(diff)
	}
	if diff := cmp.Diff([]string{"a", "b"}, p.RuleNames()); diff != "" {
		t.Error(diff)
	}
	if p.Enforce(ReasonNotAllowed) != Report || p.Enforce(ReasonPrivateRange) != Deny {
		t.Error("Enforce")
	}
	zero, err := Compile(Config{})
	if err != nil || zero.Mode() != ModeEnforce {
		t.Errorf("zero config: %v %v", zero, err)
	}
}

// TestCheckInvalidHello: a hello the guard could not read is denied in every
// mode, whatever require_sni says.
func TestCheckInvalidHello(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{ModeEnforce, ModeReport} {
		for _, requireSNI := range []bool{true, false} {
			p, err := Compile(Config{Mode: mode, RequireSNI: requireSNI, TLSPorts: []int{443}})
			if err != nil {
				t.Fatal(err)
			}
			if v, r := p.CheckInvalidHello(); v != Deny || r != ReasonTLSHelloInvalid {
				t.Errorf("mode %s, require_sni %v: %v %s, want deny tls_hello_invalid", mode, requireSNI, v, r)
			}
		}
	}
}
