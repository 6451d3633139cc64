package policy

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func inspectPolicy(t *testing.T, mode string, r Rule) (*Policy, Decision) {
	t.Helper()
	r.Name = "uploads"
	r.Hosts = []string{"upload.example.com"}
	r.Ports = []int{443}
	r.Inspect = true
	p, err := Compile(Config{
		Mode:   mode,
		Groups: map[string]Group{"web": {CIDRs: []string{"10.0.1.0/24"}}},
		Rules:  []Rule{r},
	})
	if err != nil {
		t.Fatal(err)
	}
	d, err := NewEngine(p, fakeResolver{"upload.example.com": addrs("192.0.2.10")}).Decide(context.Background(), Request{
		Listener: ListenerConnect,
		Client:   Client{Addr: netip.MustParseAddr("10.0.1.7"), User: "alice"},
		Host:     "upload.example.com",
		Port:     443,
	})
	if err != nil || d.Verdict != Allow {
		t.Fatalf("decide: %v %+v", err, d)
	}
	return p, d
}

func TestDecisionCarriesInspect(t *testing.T) {
	t.Parallel()
	_, d := inspectPolicy(t, ModeEnforce, Rule{Methods: []string{"GET"}})
	if !d.Inspect || d.HTTP == nil {
		t.Fatalf("Inspect %v HTTP %v; want both set", d.Inspect, d.HTTP)
	}
	_, d = inspectPolicy(t, ModeEnforce, Rule{})
	if !d.Inspect || d.HTTP != nil {
		t.Fatalf("Inspect %v HTTP %v; want inspect without HTTP constraints", d.Inspect, d.HTTP)
	}
}

func TestCheckRequest(t *testing.T) {
	t.Parallel()
	rule := Rule{Methods: []string{"GET", "POST"}, Paths: []string{"/api/v2/*", "/upload"}}
	tests := []struct {
		name   string
		method string
		path   string
		want   Reason
	}{
		{"exact path", "POST", "/upload", ""},
		{"prefix path", "GET", "/api/v2/items/7", ""},
		{"prefix itself", "GET", "/api/v2/", ""},
		{"prefix without its slash", "GET", "/api/v2", ReasonNotAllowed},
		{"exact path only", "POST", "/upload/more", ReasonNotAllowed},
		{"method not listed", "DELETE", "/upload", ReasonNotAllowed},
		{"methods are case-sensitive", "get", "/upload", ReasonNotAllowed},
		{"other path", "GET", "/admin", ReasonNotAllowed},
		{"dot-dot out of the prefix", "GET", "/api/v2/../admin", ReasonNotAllowed},
		{"encoded dot-dot", "GET", "/api/v2/%2e%2e/admin", ReasonNotAllowed},
		{"encoded slash", "GET", "/api/v2/x%2F..%2Fadmin", ReasonNotAllowed},
		{"encoded slash lower case", "GET", "/api%2fv2/x", ReasonNotAllowed},
		{"backslash", "GET", "/api/v2/..\\admin", ReasonNotAllowed},
		{"encoded backslash", "GET", "/api/v2/%5c", ReasonNotAllowed},
		{"empty segment", "GET", "/api//v2/x", ReasonNotAllowed},
		{"dot segment", "GET", "/api/v2/./x", ReasonNotAllowed},
		{"encoded letters decode", "GET", "/api/v2/%61", ""},
		{"encoded prefix decodes", "POST", "/uplo%61d", ""},
		{"bad escape", "GET", "/api/v2/%zz", ReasonNotAllowed},
		{"NUL", "GET", "/api/v2/%00", ReasonNotAllowed},
		{"relative", "GET", "api/v2/x", ReasonNotAllowed},
		{"empty", "GET", "", ReasonNotAllowed},
	}
	for _, mode := range []string{ModeEnforce, ModeReport} {
		p, d := inspectPolicy(t, mode, rule)
		for _, tt := range tests {
			t.Run(mode+"/"+tt.name, func(t *testing.T) {
				v, r := p.CheckRequest(d, tt.method, tt.path)
				if r != tt.want {
					t.Fatalf("CheckRequest(%q, %q) reason %q, want %q", tt.method, tt.path, r, tt.want)
				}
				want := Allow
				if tt.want != "" {
					want = Deny
					if mode == ModeReport {
						want = Report
					}
				}
				if v != want {
					t.Fatalf("verdict %v, want %v", v, want)
				}
			})
		}
	}
}

func TestCheckRequestWithoutConstraints(t *testing.T) {
	t.Parallel()
	p, d := inspectPolicy(t, ModeEnforce, Rule{})
	if v, r := p.CheckRequest(d, "DELETE", "/a/../b"); v != Allow || r != "" {
		t.Fatalf("got %v %q, want allow: the rule lists no methods or paths", v, r)
	}
	p, d = inspectPolicy(t, ModeEnforce, Rule{Methods: []string{"GET"}})
	if v, _ := p.CheckRequest(d, "GET", "/a/../b"); v != Allow {
		t.Fatalf("got %v: a rule with methods only does not judge paths", v)
	}
}

func TestCheckHost(t *testing.T) {
	t.Parallel()
	p, d := inspectPolicy(t, ModeEnforce, Rule{})
	ipDec := Decision{Host: "192.0.2.10", IsIP: true, Port: 443, Policy: p}
	v6Dec := Decision{Host: "2001:db8::1", IsIP: true, Port: 8443, Policy: p}
	tests := []struct {
		name string
		d    Decision
		host string
		want Reason
	}{
		{"same", d, "upload.example.com", ""},
		{"with the port", d, "upload.example.com:443", ""},
		{"case and trailing dot", d, "UPLOAD.example.com.", ""},
		{"empty", d, "", ""},
		{"other host", d, "evil.example.com", ReasonHostMismatch},
		{"other port", d, "upload.example.com:8443", ReasonHostMismatch},
		{"port with a leading zero", d, "upload.example.com:0443", ReasonHostMismatch},
		{"empty port", d, "upload.example.com:", ReasonHostMismatch},
		{"subdomain", d, "a.upload.example.com", ReasonHostMismatch},
		{"bad name", d, "upload..example.com", ReasonHostMismatch},
		{"ip for a name", d, "192.0.2.10", ReasonHostMismatch},
		{"ip", ipDec, "192.0.2.10", ""},
		{"ip with port", ipDec, "192.0.2.10:443", ""},
		{"ip odd spelling", ipDec, "3221225994", ""},
		{"other ip", ipDec, "192.0.2.11", ReasonHostMismatch},
		{"v6 bracketed", v6Dec, "[2001:db8::1]:8443", ""},
		{"v6 bracketed, no port", v6Dec, "[2001:db8::1]", ""},
		{"v6 bare", v6Dec, "2001:db8::1", ReasonHostMismatch},
		{"v6 unclosed", v6Dec, "[2001:db8::1", ReasonHostMismatch},
		{"v6 junk after", v6Dec, "[2001:db8::1]x", ReasonHostMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, r := p.CheckHost(tt.d, tt.host)
			if r != tt.want {
				t.Fatalf("CheckHost(%q) = %q, want %q", tt.host, r, tt.want)
			}
		})
	}
	pr, dr := inspectPolicy(t, ModeReport, Rule{})
	if v, r := pr.CheckHost(dr, "evil.example.com"); v != Report || r != ReasonHostMismatch {
		t.Fatalf("report mode: %v %q, want report host_mismatch", v, r)
	}
}

func TestSetHeaders(t *testing.T) {
	t.Parallel()
	_, d := inspectPolicy(t, ModeEnforce, Rule{RequestHeadersAdd: map[string]string{
		"x-egress-client-group": "{group}",
		"X-Who":                 "{user}@{client} via {rule} to {host}",
		"X-Static":              "yes",
	}})
	got := map[string]string{}
	d.HTTP.SetHeaders(d, Client{Addr: netip.MustParseAddr("::ffff:10.0.1.7"), User: "al\r\nice"}, func(k, v string) { got[k] = v })
	want := map[string]string{
		"X-Egress-Client-Group": "web",
		"X-Who":                 "al??ice@10.0.1.7 via uploads to upload.example.com",
		"X-Static":              "yes",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatal(diff)
	}
	if !d.HTTP.HasHeaders() {
		t.Fatal("HasHeaders false")
	}
	var none *HTTPRule
	none.SetHeaders(d, Client{}, func(k, v string) { t.Fatalf("nil rule set %s", k) })
}

func TestHTTPRuleErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		rule Rule
		want string
	}{
		{"lower-case method", Rule{Inspect: true, Methods: []string{"get"}}, `rules[0].methods[0]: "get": methods are case-sensitive`},
		{"bad method", Rule{Inspect: true, Methods: []string{"G T"}}, `rules[0].methods[0]: "G T": not an HTTP method token`},
		{"connect", Rule{Inspect: true, Methods: []string{"CONNECT"}}, `rules[0].methods[0]: CONNECT is never forwarded`},
		{"relative path", Rule{Inspect: true, Paths: []string{"api"}}, `rules[0].paths[0]: "api": a path starts with /`},
		{"inner wildcard", Rule{Inspect: true, Paths: []string{"/a/*/b"}}, `rules[0].paths[0]: "/a/*/b": "*" only as the last`},
		{"wildcard without slash", Rule{Inspect: true, Paths: []string{"/a*"}}, `rules[0].paths[0]: "/a*": "*" only as the last`},
		{"dot segment", Rule{Inspect: true, Paths: []string{"/a/../b"}}, `rules[0].paths[0]: "/a/../b": not a canonical path`},
		{"escape", Rule{Inspect: true, Paths: []string{"/a%20b"}}, `rules[0].paths[0]: "/a%20b": not a canonical path`},
		{"bad header name", Rule{Inspect: true, RequestHeadersAdd: map[string]string{"X Y": "1"}}, `rules[0].request_headers_add.X Y: "X Y": not a header field name`},
		{"reserved header", Rule{Inspect: true, RequestHeadersAdd: map[string]string{"host": "x"}}, `rules[0].request_headers_add.host: Host: egressd does not set this field`},
		{"unknown placeholder", Rule{Inspect: true, RequestHeadersAdd: map[string]string{"X-G": "{grup}"}}, `rules[0].request_headers_add.X-G: {grup}: unknown placeholder`},
		{"unclosed placeholder", Rule{Inspect: true, RequestHeadersAdd: map[string]string{"X-G": "{group"}}, `"{" without "}"`},
		{"stray brace", Rule{Inspect: true, RequestHeadersAdd: map[string]string{"X-G": "a}"}}, `"}" without "{"`},
		{"control character", Rule{Inspect: true, RequestHeadersAdd: map[string]string{"X-G": "a\nb"}}, `control characters are not allowed`},
		{"methods need inspect", Rule{Methods: []string{"GET"}}, `rules[0].inspect: methods, paths and request_headers_add need inspect: true`},
		{"headers need inspect", Rule{RequestHeadersAdd: map[string]string{"X-G": "1"}}, `need inspect: true`},
		{"deny rule inspect", Rule{Action: ActionDeny, Inspect: true}, `rules[0].inspect: a deny rule lets nothing through to inspect`},
		{"deny rule methods", Rule{Action: ActionDeny, Methods: []string{"GET"}}, `rules[0]: a deny rule allows nothing: methods`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.rule
			r.Name, r.Hosts = "r", []string{"example.com"}
			if r.Action != ActionDeny {
				r.Ports = []int{443}
			}
			_, err := Compile(Config{Rules: []Rule{r}})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Compile error %v, want it to contain %q", err, tt.want)
			}
		})
	}
}
