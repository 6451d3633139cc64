package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accesslog"
)

// names answers lookups from a map; a missing name is NXDOMAIN.
type names map[string][]netip.Addr

func (n names) LookupNetIP(_ context.Context, host string) ([]netip.Addr, error) {
	if a, ok := n[host]; ok {
		return a, nil
	}
	return nil, errors.New("no such host")
}

type uiFixture struct {
	srv   *httptest.Server
	on    *atomic.Bool
	hosts *atomic.Pointer[[]string] // admin.ui_hosts
	stats *Stats
	log   *accesslog.Logger
}

// newUIFixture serves the admin handler with a real engine, real metrics
// and stats fed through the access log, as egressd serve wires them.
func newUIFixture(t *testing.T) *uiFixture {
	t.Helper()
	pol, err := policy.Compile(policy.Config{
		Mode:       policy.ModeEnforce,
		DenyRanges: []string{policy.DefaultRanges},
		Groups:     map[string]policy.Group{"web": {CIDRs: []string{"10.0.1.0/24"}}, "batch": {Users: []string{"ci"}, Mode: policy.ModeReport}},
		Rules: []policy.Rule{
			{Name: "no-paste", Action: policy.ActionDeny, Hosts: []string{"pastebin.com"}},
			{Name: "github", Groups: []string{"web"}, Hosts: []string{"github.com"}, Ports: []int{443}},
			{Name: "never", Hosts: []string{"unused.example"}, Ports: []int{443}},
			{Name: "meta", Hosts: []string{"metadata.example"}, Ports: []int{80}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	engine := policy.NewEngine(pol, names{
		"github.com":       {netip.MustParseAddr("140.82.112.3")},
		"metadata.example": {netip.MustParseAddr("169.254.169.254")},
	})
	reg := prometheus.NewRegistry()
	m := accesslog.NewMetrics(reg)
	m.SetRules(pol.RuleNames())
	stats := NewStats(reg)
	log := accesslog.NewLogger(nil, m)
	log.SetObserver(stats)
	on := new(atomic.Bool)
	on.Store(true)
	hosts := new(atomic.Pointer[[]string])
	started := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	srv := httptest.NewServer(Handler(Options{
		Gatherer: reg,
		UI:       on.Load,
		Pprof:    on.Load,
		UIHosts: func() []string {
			if h := hosts.Load(); h != nil {
				return *h
			}
			return nil
		},
		Stats:   stats,
		Decider: engine,
		Status: func() Status {
			return Status{
				Version: "v1.2.3", Started: started, ConfigSHA: strings.Repeat("ab", 32), Loaded: started,
				Reload:    Reload{Time: started.Add(time.Hour), Result: "error"},
				Mode:      pol.Mode(),
				Rules:     []Rule{{"no-paste", "deny"}, {"github", "allow"}, {"never", "allow"}, {"meta", "allow"}},
				Groups:    []Group{{"batch", "report", true}, {"web", "enforce", false}},
				Listeners: []Listener{{"http", "127.0.0.1:3128"}, {"socks5", "127.0.0.1:1080"}, {"admin", "127.0.0.1:9090"}},
			}
		},
	}))
	t.Cleanup(func() {
		srv.Client().CloseIdleConnections()
		srv.Close()
	})
	return &uiFixture{srv: srv, on: on, hosts: hosts, stats: stats, log: log}
}

// finish ends one exchange through the access log, as a front end does.
func (f *uiFixture) finish(l policy.Listener, client, user, host string, port uint16, v policy.Verdict, reason policy.Reason, rule string) {
	r := f.log.NewRecord(l, netip.MustParseAddr(client))
	r.User, r.Host, r.Port = user, host, port
	r.Decision = policy.Decision{Verdict: v, Reason: reason, Rule: rule}
	r.Finish()
}

func (f *uiFixture) get(t *testing.T, path string) (*http.Response, string) {
	t.Helper()
	resp, err := f.srv.Client().Get(f.srv.URL + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestUICheck(t *testing.T) {
	t.Parallel()
	f := newUIFixture(t)
	tests := []struct {
		name  string
		query string
		code  int
		want  CheckResult
		err   string
	}{
		{"allowed", "client=10.0.1.7&target=GitHub.com.:443", 200,
			CheckResult{Decision: "allow", Rule: "github", Group: "web", Host: "github.com", Port: 443, Addrs: []string{"140.82.112.3:443"}}, ""},
		{"other group", "client=10.0.2.7&target=github.com:443", 200,
			CheckResult{Decision: "deny", Reason: "not_allowed", Host: "github.com", Port: 443, Addrs: []string{}}, ""},
		{"port", "client=10.0.1.7&target=github.com:22", 200,
			CheckResult{Decision: "deny", Reason: "port_not_allowed", Group: "web", Host: "github.com", Port: 22, Addrs: []string{}}, ""},
		{"mapped client", "client=::ffff:10.0.1.7&target=github.com:443", 200,
			CheckResult{Decision: "allow", Rule: "github", Group: "web", Host: "github.com", Port: 443, Addrs: []string{"140.82.112.3:443"}}, ""},
		{"metadata literal", "target=169.254.169.254:80", 200,
			CheckResult{Decision: "deny", Reason: "not_allowed", Host: "169.254.169.254", Port: 80, Addrs: []string{}}, ""},
		{"user", "client=10.0.1.7&user=ci&target=github.com:443", 200,
			CheckResult{Decision: "allow", Rule: "github", Group: "web", Host: "github.com", Port: 443, Addrs: []string{"140.82.112.3:443"}}, ""},
		{"no such name", "target=unused.example:443", 200,
			CheckResult{Decision: "deny", Reason: "dns_error", Rule: "never", Host: "unused.example", Port: 443, Addrs: []string{},
				Error: "resolve unused.example: no such host"}, ""},
		{"resolves private", "target=metadata.example:80", 200,
			CheckResult{Decision: "deny", Reason: "private_range", Rule: "meta", Host: "metadata.example", Port: 80, Addrs: []string{}}, ""},
		{"deny rule", "client=10.0.1.7&target=pastebin.com:443", 200,
			CheckResult{Decision: "deny", Reason: "denied_by_rule", Rule: "no-paste", Group: "web", Host: "pastebin.com", Port: 443, Addrs: []string{}}, ""},
		{"group in report mode", "client=10.0.2.7&user=ci&target=github.com:443", 200,
			CheckResult{Decision: "report", Reason: "not_allowed", Group: "batch", Host: "github.com", Port: 443, Addrs: []string{"140.82.112.3:443"}}, ""},
		{"bad target", "target=github.com", 400, CheckResult{}, `target "github.com" is not HOST:PORT`},
		{"port zero", "target=github.com:0", 400, CheckResult{}, `target "github.com:0" is not HOST:PORT`},
		{"no target", "client=10.0.1.7", 400, CheckResult{}, "target is required (HOST:PORT)"},
		{"bad client", "client=10.0.1&target=github.com:443", 400, CheckResult{}, `client "10.0.1" is not an IP address`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := f.get(t, "/api/check?"+tc.query)
			if resp.StatusCode != tc.code || resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("%d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
			}
			if tc.code != 200 {
				var e struct{ Error string }
				if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error != tc.err {
					t.Errorf("error %q (%v), want %q", e.Error, err, tc.err)
				}
				return
			}
			var got CheckResult
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestUIDenials(t *testing.T) {
	t.Parallel()
	f := newUIFixture(t)
	f.finish(policy.ListenerConnect, "10.0.1.7", "", "github.com", 443, policy.Allow, "", "github")
	f.finish(policy.ListenerConnect, "10.0.2.9", "bob", "pastebin.com", 443, policy.Deny, policy.ReasonNotAllowed, "")
	f.finish(policy.ListenerSOCKS5, "10.0.2.9", "", "169.254.169.254", 80, policy.Deny, policy.ReasonPrivateRange, "")

	_, body := f.get(t, "/api/denials")
	var got struct{ Denials []Denial }
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	for i := range got.Denials {
		if time.Since(got.Denials[i].Time) > time.Minute {
			t.Errorf("denial %d time %v", i, got.Denials[i].Time)
		}
		got.Denials[i].Time = time.Time{}
	}
	want := []Denial{
		{Listener: "socks5", Client: "10.0.2.9", Host: "169.254.169.254", Port: 80, Decision: "deny", Reason: "private_range"},
		{Listener: "connect", Client: "10.0.2.9", User: "bob", Host: "pastebin.com", Port: 443, Decision: "deny", Reason: "not_allowed"},
	}
	if diff := cmp.Diff(want, got.Denials); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if _, body := f.get(t, "/api/denials?limit=1"); strings.Count(body, `"host"`) != 1 || !strings.Contains(body, "169.254.169.254") {
		t.Errorf("limit=1: %s", body)
	}
	for _, bad := range []string{"0", "-1", "x"} {
		if resp, _ := f.get(t, "/api/denials?limit="+bad); resp.StatusCode != 400 {
			t.Errorf("limit=%s: %d", bad, resp.StatusCode)
		}
	}
	if _, body := f.get(t, "/api/denials?limit=1000"); strings.Count(body, `"host"`) != 2 {
		t.Errorf("limit=1000: %s", body)
	}
	// The JSON shape for an empty ring is a list, not null.
	if _, body := newUIFixture(t).get(t, "/api/denials"); !strings.Contains(body, `"denials": []`) {
		t.Errorf("empty: %s", body)
	}
}

// The page shows the server's state, the counters, the denials, the top
// hosts and the rules; wire text is escaped; the security headers are set.
func TestUIPage(t *testing.T) {
	t.Parallel()
	f := newUIFixture(t)
	f.finish(policy.ListenerConnect, "10.0.1.7", "", "github.com", 443, policy.Allow, "", "github")
	f.finish(policy.ListenerConnect, "10.0.1.7", "", "github.com", 443, policy.Allow, "", "github")
	hostile := `x<script>alert(1)</script>`
	f.finish(policy.ListenerConnect, "10.0.2.9", `<b>eve</b>`, hostile, 443, policy.Deny, policy.ReasonBadRequest, "")

	resp, body := f.get(t, "/")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("%d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("CSP %q", csp)
	}
	for _, want := range []string{
		"v1.2.3", "abababababab", ">enforce<", "2026-01-02 04:04:05Z", ">error<",
		"127.0.0.1:3128", "127.0.0.1:1080",
		"x&lt;script&gt;alert(1)&lt;/script&gt;", "&lt;b&gt;eve&lt;/b&gt;", "bad_request",
		`<td class="host">github.com</td><td class="num">2</td>`,
		`<td>github</td><td class="action-allow">allow</td><td class="num">2</td>`,
		`<tr class="never"><td>never</td><td class="action-allow">allow</td><td class="num">0</td><td><span class="badge">never matched</span>`,
		`<td>no-paste</td><td class="action-deny">deny</td>`,
		`<td>batch</td><td><span class="mode mode-report">report</span></td>`,
		`<td>web</td><td><span class="mode mode-enforce">enforce</span> <span class="sub">(the policy's)</span></td>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(body, "<script>alert") || strings.Contains(body, "<b>eve") {
		t.Error("wire text rendered as markup")
	}
	if strings.Count(body, "<script") != 1 {
		t.Error("the page has a script besides its own")
	}
	// The page's own assets are embedded.
	for path, ctype := range map[string]string{
		"/assets/app.js":      "text/javascript; charset=utf-8",
		"/assets/style.css":   "text/css; charset=utf-8",
		"/assets/favicon.svg": "image/svg+xml",
	} {
		resp, body := f.get(t, path)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ctype || len(body) < 100 {
			t.Errorf("%s: %d %q %d bytes", path, resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
		}
	}
	for _, p := range []string{"/nothing", "/assets/", "/assets/page.html"} {
		if resp, _ := f.get(t, p); resp.StatusCode != 404 {
			t.Errorf("%s: %d", p, resp.StatusCode)
		}
	}
}

// admin.ui: false turns off the page, its assets and the API, and a reload
// turns them on again; the other endpoints stay.
func TestUIOff(t *testing.T) {
	t.Parallel()
	f := newUIFixture(t)
	paths := []string{"/", "/api/check?target=github.com:443", "/api/denials", "/assets/app.js"}
	f.on.Store(false)
	for _, p := range paths {
		if resp, _ := f.get(t, p); resp.StatusCode != 404 {
			t.Errorf("ui off: GET %s = %d", p, resp.StatusCode)
		}
	}
	if resp, _ := f.get(t, "/metrics"); resp.StatusCode != 200 {
		t.Errorf("ui off: /metrics = %d", resp.StatusCode)
	}
	f.on.Store(true)
	for _, p := range paths {
		if resp, _ := f.get(t, p); resp.StatusCode != 200 {
			t.Errorf("ui on: GET %s = %d", p, resp.StatusCode)
		}
	}
	// Without a UI hook the page is never served.
	srv := httptest.NewServer(Handler(Options{}))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	srv.Client().CloseIdleConnections()
	if resp.StatusCode != 404 {
		t.Errorf("no UI hook: / = %d", resp.StatusCode)
	}
}
