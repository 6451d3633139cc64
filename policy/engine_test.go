package policy

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"regexp"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeResolver answers from a map; a missing name is an error.
type fakeResolver map[string][]netip.Addr

var errNXDomain = errors.New("no such host")

func (f fakeResolver) LookupNetIP(_ context.Context, host string) ([]netip.Addr, error) {
	a, ok := f[host]
	if !ok {
		return nil, errNXDomain
	}
	return a, nil
}

// countingResolver records the lookups it answers.
type countingResolver struct {
	fakeResolver
	calls []string
}

func (c *countingResolver) LookupNetIP(ctx context.Context, host string) ([]netip.Addr, error) {
	c.calls = append(c.calls, host)
	return c.fakeResolver.LookupNetIP(ctx, host)
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func addrPorts(port uint16, ss ...string) []netip.AddrPort {
	if len(ss) == 0 {
		return nil
	}
	out := make([]netip.AddrPort, len(ss))
	for i, s := range ss {
		out[i] = netip.AddrPortFrom(netip.MustParseAddr(s), port)
	}
	return out
}

var testDNS = fakeResolver{
	"api.github.com":     addrs("140.82.112.6", "2606:50c0:8000::154"),
	"mapped.github.com":  addrs("::ffff:140.82.112.7"),
	"rebind.github.com":  addrs("169.254.169.254", "140.82.112.8", "10.0.0.1", "::1", "140.82.112.9", "140.82.112.8"),
	"private.github.com": addrs("127.0.0.2", "10.1.1.1", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "fd00::1"),
	"git.corp.example":   addrs("10.50.1.1", "10.60.1.1"),
	"other.corp.example": addrs("10.50.1.1"),
	"public.example":     addrs("93.184.216.34"),
	"meta.example":       addrs("169.254.169.254"),
	"empty.example":      {},
}

func engineConfig(mode string) Config {
	return Config{
		Mode:        mode,
		DenyRanges:  []string{DefaultRanges},
		AllowRanges: []string{"127.0.0.1"},
		RequireSNI:  true,
		TLSPorts:    []int{443},
		Groups:      map[string]Group{"web": {CIDRs: []string{"10.0.1.0/24"}}},
		Rules: []Rule{
			{Name: "github", Groups: []string{"web"}, Hosts: []string{"github.com", "*.github.com"}, Ports: []int{443}},
			{Name: "internal-api", CIDRs: []string{"10.20.0.0/16"}, Ports: []int{8443}},
			{Name: "internal-git", Hosts: []string{"git.corp.example"}, AllowRanges: []string{"10.50.0.0/16"}, Ports: []int{443}},
			{Name: "other", Hosts: []string{"other.corp.example", "empty.example", "nx.example"}, Ports: []int{443}},
		},
	}
}

func newTestEngine(t *testing.T, mode string) (*Engine, *countingResolver) {
	t.Helper()
	p, err := Compile(engineConfig(mode))
	if err != nil {
		t.Fatal(err)
	}
	r := &countingResolver{fakeResolver: testDNS}
	return NewEngine(p, r), r
}

func TestDecide(t *testing.T) {
	web := Client{Addr: netip.MustParseAddr("10.0.1.5")}
	anyone := Client{Addr: netip.MustParseAddr("10.9.9.9")}
	type want struct {
		Verdict Verdict
		Reason  Reason
		Rule    string
		Group   string
		Host    string
		IsIP    bool
		Port    uint16
		Addrs   []netip.AddrPort
		Lookups []string
	}
	tests := []struct {
		name string
		mode string
		req  Request
		want want
	}{
		{"allowed", ModeEnforce, Request{Client: web, Host: "API.github.com.", Port: 443}, want{
			Verdict: Allow, Rule: "github", Group: "web", Host: "api.github.com", Port: 443,
			Addrs: addrPorts(443, "140.82.112.6", "2606:50c0:8000::154"), Lookups: []string{"api.github.com"}}},
		{"mapped answers are unmapped", ModeEnforce, Request{Client: web, Host: "mapped.github.com", Port: 443}, want{
			Verdict: Allow, Rule: "github", Group: "web", Host: "mapped.github.com", Port: 443,
			Addrs: addrPorts(443, "140.82.112.7"), Lookups: []string{"mapped.github.com"}}},
		{"rebinding answers keep only public, in order, deduplicated", ModeEnforce, Request{Client: web, Host: "rebind.github.com", Port: 443}, want{
			Verdict: Allow, Rule: "github", Group: "web", Host: "rebind.github.com", Port: 443,
			Addrs: addrPorts(443, "140.82.112.8", "140.82.112.9"), Lookups: []string{"rebind.github.com"}}},
		{"all private", ModeEnforce, Request{Client: web, Host: "private.github.com", Port: 443}, want{
			Verdict: Deny, Reason: ReasonPrivateRange, Rule: "github", Group: "web", Host: "private.github.com", Port: 443,
			Lookups: []string{"private.github.com"}}},
		{"not allowed is not resolved", ModeEnforce, Request{Client: anyone, Host: "api.github.com", Port: 443}, want{
			Verdict: Deny, Reason: ReasonNotAllowed, Host: "api.github.com", Port: 443}},
		{"port not allowed is not resolved", ModeEnforce, Request{Client: web, Host: "api.github.com", Port: 80}, want{
			Verdict: Deny, Reason: ReasonPortNotAllowed, Group: "web", Host: "api.github.com", Port: 80}},
		{"rule allow_ranges", ModeEnforce, Request{Client: anyone, Host: "git.corp.example", Port: 443}, want{
			Verdict: Allow, Rule: "internal-git", Host: "git.corp.example", Port: 443,
			Addrs: addrPorts(443, "10.50.1.1"), Lookups: []string{"git.corp.example"}}},
		{"rule allow_ranges only for their rule", ModeEnforce, Request{Client: anyone, Host: "other.corp.example", Port: 443}, want{
			Verdict: Deny, Reason: ReasonPrivateRange, Rule: "other", Host: "other.corp.example", Port: 443,
			Lookups: []string{"other.corp.example"}}},
		{"ip literal cidr rule", ModeEnforce, Request{Client: anyone, Host: "10.20.1.2", Port: 8443}, want{
			Verdict: Allow, Rule: "internal-api", Host: "10.20.1.2", IsIP: true, Port: 8443,
			Addrs: addrPorts(8443, "10.20.1.2")}},
		{"ip literal odd spelling", ModeEnforce, Request{Client: anyone, Host: "0xa.0x14.258", Port: 8443}, want{
			Verdict: Allow, Rule: "internal-api", Host: "10.20.1.2", IsIP: true, Port: 8443,
			Addrs: addrPorts(8443, "10.20.1.2")}},
		{"ip literal without rule", ModeEnforce, Request{Client: anyone, Host: "93.184.216.34", Port: 443}, want{
			Verdict: Deny, Reason: ReasonNotAllowed, Host: "93.184.216.34", IsIP: true, Port: 443}},
		{"bad host", ModeEnforce, Request{Client: web, Host: "a..github.com", Port: 443}, want{
			Verdict: Deny, Reason: ReasonNotAllowed, Group: "web", Port: 443}},
		{"port zero", ModeReport, Request{Client: web, Host: "api.github.com", Port: 0}, want{
			Verdict: Deny, Reason: ReasonNotAllowed, Rule: "", Group: "web", Host: "api.github.com"}},
		{"report not allowed", ModeReport, Request{Client: anyone, Host: "public.example", Port: 443}, want{
			Verdict: Report, Reason: ReasonNotAllowed, Host: "public.example", Port: 443,
			Addrs: addrPorts(443, "93.184.216.34"), Lookups: []string{"public.example"}}},
		{"report port not allowed", ModeReport, Request{Client: web, Host: "api.github.com", Port: 22}, want{
			Verdict: Report, Reason: ReasonPortNotAllowed, Group: "web", Host: "api.github.com", Port: 22,
			Addrs: addrPorts(22, "140.82.112.6", "2606:50c0:8000::154"), Lookups: []string{"api.github.com"}}},
		{"report never relaxes private range", ModeReport, Request{Client: anyone, Host: "meta.example", Port: 80}, want{
			Verdict: Deny, Reason: ReasonPrivateRange, Host: "meta.example", Port: 80, Lookups: []string{"meta.example"}}},
		{"report rebinding keeps only public", ModeReport, Request{Client: anyone, Host: "rebind.github.com", Port: 443}, want{
			Verdict: Report, Reason: ReasonNotAllowed, Host: "rebind.github.com", Port: 443,
			Addrs: addrPorts(443, "140.82.112.8", "140.82.112.9"), Lookups: []string{"rebind.github.com"}}},
		{"report ip literal metadata, decimal", ModeReport, Request{Client: anyone, Host: "2852039166", Port: 80}, want{
			Verdict: Deny, Reason: ReasonPrivateRange, Host: "169.254.169.254", IsIP: true, Port: 80}},
		{"report ip literal mapped metadata", ModeReport, Request{Client: anyone, Host: "[::ffff:a9fe:a9fe]", Port: 80}, want{
			Verdict: Deny, Reason: ReasonPrivateRange, Host: "169.254.169.254", IsIP: true, Port: 80}},
		{"report ip literal nat64 metadata", ModeReport, Request{Client: anyone, Host: "[64:ff9b::a9fe:a9fe]", Port: 80}, want{
			Verdict: Deny, Reason: ReasonPrivateRange, Host: "64:ff9b::a9fe:a9fe", IsIP: true, Port: 80}},
		{"report global allow range", ModeReport, Request{Client: anyone, Host: "127.0.0.1", Port: 8080}, want{
			Verdict: Report, Reason: ReasonNotAllowed, Host: "127.0.0.1", IsIP: true, Port: 8080,
			Addrs: addrPorts(8080, "127.0.0.1")}},
		{"report loopback outside allow", ModeReport, Request{Client: anyone, Host: "127.1", Port: 8080}, want{
			Verdict: Report, Reason: ReasonNotAllowed, Host: "127.0.0.1", IsIP: true, Port: 8080,
			Addrs: addrPorts(8080, "127.0.0.1")}},
		{"report loopback .2 denied", ModeReport, Request{Client: anyone, Host: "127.0.0.2", Port: 8080}, want{
			Verdict: Deny, Reason: ReasonPrivateRange, Host: "127.0.0.2", IsIP: true, Port: 8080}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, res := newTestEngine(t, tt.mode)
			d, err := e.Decide(context.Background(), tt.req)
			if err != nil {
				t.Fatalf("Decide: %v", err)
			}
			if d.Policy != e.Load() {
				t.Error("Decision.Policy is not the snapshot")
			}
			got := want{Verdict: d.Verdict, Reason: d.Reason, Rule: d.Rule, Group: d.Group, Host: d.Host, IsIP: d.IsIP,
				Port: d.Port, Addrs: d.Addrs, Lookups: res.calls}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
				t.Errorf("Decide(%+v) mismatch (-want +got):\n%s", tt.req, diff)
			}
		})
	}
}

func TestDecideDNSError(t *testing.T) {
	e, _ := newTestEngine(t, ModeEnforce)
	for _, host := range []string{"nx.example", "empty.example"} {
		d, err := e.Decide(context.Background(), Request{Host: host, Port: 443})
		if err == nil {
			t.Fatalf("%s: no error", host)
		}
		if d.Reason != ReasonDNSError || d.Verdict != Deny || d.Rule != "other" || len(d.Addrs) != 0 {
			t.Errorf("%s: decision %+v", host, d)
		}
		if host == "nx.example" && !errors.Is(err, errNXDomain) {
			t.Errorf("error %v does not wrap the resolver's", err)
		}
	}
	p, err := Compile(engineConfig(ModeEnforce))
	if err != nil {
		t.Fatal(err)
	}
	d, err := NewEngine(p, nil).Decide(context.Background(), Request{Host: "git.corp.example", Port: 443})
	if err == nil || d.Reason != ReasonDNSError {
		t.Errorf("nil resolver: %+v, %v", d, err)
	}
}

func TestEngineStore(t *testing.T) {
	e := NewEngine(nil, testDNS)
	d, err := e.Decide(context.Background(), Request{Host: "public.example", Port: 443})
	if err == nil || d.Verdict != Deny {
		t.Errorf("no policy: %+v, %v", d, err)
	}
	enforce, err := Compile(engineConfig(ModeEnforce))
	if err != nil {
		t.Fatal(err)
	}
	report, err := Compile(engineConfig(ModeReport))
	if err != nil {
		t.Fatal(err)
	}
	r := Request{Host: "public.example", Port: 443}
	for _, step := range []struct {
		p    *Policy
		want Verdict
	}{{enforce, Deny}, {report, Report}, {enforce, Deny}} {
		e.Store(step.p)
		d, err := e.Decide(context.Background(), r)
		if err != nil || d.Verdict != step.want || d.Policy != step.p {
			t.Errorf("after Store(%s): %+v, %v; want %v", step.p.Mode(), d, err, step.want)
		}
	}
}

func TestDecideAllocs(t *testing.T) {
	e, _ := newTestEngine(t, ModeEnforce)
	e.resolver = testDNS
	ctx := context.Background()
	for _, r := range []Request{
		{Client: Client{Addr: netip.MustParseAddr("10.0.1.5")}, Host: "api.github.com", Port: 443},
		{Host: "10.20.1.2", Port: 8443},
		{Host: "public.example", Port: 443},
	} {
		n := testing.AllocsPerRun(100, func() {
			if _, err := e.Decide(ctx, r); err != nil {
				t.Fatal(err)
			}
		})
		if n > 1 {
			t.Errorf("Decide(%s): %v allocs, want at most 1 (Addrs)", r.Host, n)
		}
	}
}

func TestEnforce(t *testing.T) {
	t.Parallel()
	for _, r := range DenyReasons {
		wantReport := Report
		switch r {
		case ReasonPrivateRange, ReasonDeniedByRule, ReasonTLSHelloInvalid, ReasonAuthRequired, ReasonDLP, ReasonUpstreamTLS:
			wantReport = Deny
		}
		if got := enforce(ModeReport, r); got != wantReport {
			t.Errorf("enforce(report, %s) = %v, want %v", r, got, wantReport)
		}
		if got := enforce(ModeEnforce, r); got != Deny {
			t.Errorf("enforce(enforce, %s) = %v, want deny", r, got)
		}
	}
	for _, mode := range []string{ModeEnforce, ModeReport} {
		if got := enforce(mode, ReasonNone); got != Allow {
			t.Errorf("enforce(%s, none) = %v", mode, got)
		}
		for _, r := range []Reason{ReasonDNSError, ReasonDialError, ReasonBadRequest, ReasonLimit} {
			if got := enforce(mode, r); got != Deny {
				t.Errorf("enforce(%s, %s) = %v, want deny", mode, r, got)
			}
		}
	}
}

func TestDenyReasonsContract(t *testing.T) {
	t.Parallel()
	want := []Reason{"not_allowed", "port_not_allowed", "denied_by_rule", "private_range", "sni_mismatch", "sni_missing",
		"tls_hello_invalid", "ech_refused", "protocol_mismatch", "auth_required", "dlp", "host_mismatch", "upstream_tls"}
	if diff := cmp.Diff(want, DenyReasons); diff != "" {
		t.Error(diff)
	}
}

// TestDenyReasonsDocumented: the README's list of denial reasons is
// DenyReasons, in order.
func TestDenyReasonsDocumented(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("Reasons:((?:\\s*`[a-z_]+`,?)+)\\.").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README has no \"Reasons: `a`, `b`.\" sentence")
	}
	var documented []Reason
	for _, tok := range regexp.MustCompile("`([a-z_]+)`").FindAllSubmatch(m[1], -1) {
		documented = append(documented, Reason(tok[1]))
	}
	if diff := cmp.Diff(DenyReasons, documented); diff != "" {
		t.Errorf("README reasons differ from DenyReasons (-code +README):\n%s", diff)
	}
}
