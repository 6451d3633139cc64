package policy

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
)

// bigConfig builds a policy with n hosts: n/10 rules of 10 patterns each,
// half exact and half wildcards, a third of them limited to a group.
func bigConfig(n int) Config {
	c := Config{
		Mode:       ModeEnforce,
		DenyRanges: []string{DefaultRanges},
		Groups: map[string]Group{
			"web": {CIDRs: []string{"10.0.1.0/24"}},
			"ops": {Users: []string{"alice"}},
		},
	}
	for r := 0; r < n/10; r++ {
		rule := Rule{Name: fmt.Sprintf("rule-%d", r), Ports: []int{443, 8443}}
		switch r % 3 {
		case 1:
			rule.Groups = []string{"web"}
		case 2:
			rule.Groups = []string{"ops", "web"}
		}
		for h := 0; h < 10; h++ {
			if h%2 == 0 {
				rule.Hosts = append(rule.Hosts, fmt.Sprintf("host-%d-%d.example.com", r, h))
			} else {
				rule.Hosts = append(rule.Hosts, fmt.Sprintf("*.svc-%d-%d.example.net", r, h))
			}
		}
		c.Rules = append(c.Rules, rule)
	}
	c.Rules = append(c.Rules, Rule{Name: "internal", CIDRs: []string{"10.20.0.0/16"}, Ports: []int{8443}})
	return c
}

func BenchmarkMatch100kHosts(b *testing.B) {
	p, err := Compile(bigConfig(100_000))
	if err != nil {
		b.Fatal(err)
	}
	client := Client{Addr: netip.MustParseAddr("10.0.1.7")}
	reqs := []Request{
		{Client: client, Host: "host-4242-4.example.com", Port: 443},              // exact
		{Client: client, Host: "a.b.c.svc-9001-3.example.net", Port: 8443},        // wildcard, depth 3
		{Client: client, Host: "nothing.example.org", Port: 443},                  // miss
		{Client: client, Host: "host-7-2.example.com", Port: 80},                  // port_not_allowed
		{Client: client, Host: "10.20.3.4", Port: 8443},                           // cidr rule
		{Client: Client{User: "alice"}, Host: "x.svc-5-1.example.net", Port: 443}, // via user group
	}
	for _, r := range reqs {
		if m := p.Match(r); m.Err != nil {
			b.Fatalf("%s: %v", r.Host, m.Err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		p.Match(reqs[i%len(reqs)])
		i++
	}
}

// BenchmarkDecide measures a whole decision with an in-memory resolver.
func BenchmarkDecide(b *testing.B) {
	p, err := Compile(bigConfig(100_000))
	if err != nil {
		b.Fatal(err)
	}
	e := NewEngine(p, fakeResolver{"host-4242-4.example.com": {netip.MustParseAddr("93.184.216.34"), netip.MustParseAddr("2606:2800:220:1::1")}})
	r := Request{Client: Client{Addr: netip.MustParseAddr("10.0.1.7")}, Host: "host-4242-4.example.com", Port: 443}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if d, err := e.Decide(ctx, r); err != nil || d.Verdict != Allow {
			b.Fatal(d, err)
		}
	}
}

func BenchmarkCompile100kHosts(b *testing.B) {
	c := bigConfig(100_000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compile(c); err != nil {
			b.Fatal(err)
		}
	}
}
