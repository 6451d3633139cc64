package test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/test/testenv"
)

// Client addresses of the rollout tests: curl binds to them inside the
// namespace, so egressd sees one client per group.
const (
	webClientIP   = "127.0.0.21"
	batchClientIP = "127.0.0.22"
	pasteIP       = "127.0.0.66" // where paste.test resolves: a honeypot
)

// rolloutEnv is one namespace with a TLS origin, a plain HTTP origin, DNS
// and a honeypot behind the names a deny rule blocks.
type rolloutEnv struct {
	ns                *testenv.Netns
	dns               *testenv.DNSServer
	ca                *testenv.CA
	caFile            string
	tls, http         *testenv.Origin
	honey             *testenv.Honeypot
	tlsPort, httpPort int
}

// rolloutNames resolve to both origins.
var rolloutNames = []string{"allowed.test", "news.test", "api.news.test", "cdn1.assets.test", "cdn2.assets.test",
	"cdn3.assets.test", "cdn4.assets.test", "batch.test", "new.test"}

func newRolloutEnv(t *testing.T) *rolloutEnv {
	t.Helper()
	e := &rolloutEnv{}
	e.ns = testenv.NewNetns(t, metadataIP+"/32")
	e.ca = testenv.NewCA(t)
	e.caFile = e.ca.WritePEM(t.TempDir())
	e.tls = testenv.TLSOriginIn(t, e.ns, e.ca, originIP, append([]string{"paste.test", "www.paste.test"}, rolloutNames...)...)
	e.http = testenv.HTTPOriginIn(t, e.ns, httpIP, "plain")
	e.tlsPort, e.httpPort = e.tls.Port(), e.http.Port()
	e.honey = e.ns.Honeypot(t, fmt.Sprintf("%s:%d", pasteIP, e.tlsPort), fmt.Sprintf("%s:%d", pasteIP, e.httpPort),
		fmt.Sprintf("%s:%d", metadataIP, e.tlsPort))
	e.dns = testenv.NewDNSServerIn(t, e.ns, "127.0.0.53")
	o, h := netip.MustParseAddr(originIP), netip.MustParseAddr(httpIP)
	for _, name := range rolloutNames {
		e.dns.Set(name, 60, o, h)
	}
	e.dns.Set("paste.test", 60, netip.MustParseAddr(pasteIP))
	e.dns.Set("www.paste.test", 60, netip.MustParseAddr(pasteIP))
	e.dns.Set("meta.test", 60, netip.MustParseAddr(metadataIP))
	t.Cleanup(func() { e.honey.AssertNone(t) })
	return e
}

// config returns a whole config for egressd in the namespace: listeners,
// the namespace's DNS server, short timeouts, and the policy pol (nil:
// egressd's default policy) sets.
func (e *rolloutEnv) config(t *testing.T, pol func(e *rolloutEnv, p *policy.Config)) *testenv.Config {
	t.Helper()
	c := testenv.NewConfig(t)
	c.Listen = testenv.Listeners(t, e.ns, "127.0.0.1")
	c.DNS.Servers = []string{e.dns.Addr()}
	c.Timeouts.Handshake = 3 * time.Second
	c.Timeouts.Connect = 2 * time.Second
	if pol != nil {
		pol(e, &c.Policy)
	}
	return c
}

// curl runs real curl from client address from (it binds there), with args.
func (e *rolloutEnv) curl(t *testing.T, from string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	all := append([]string{"-sS", "--max-time", "20", "--cacert", e.caFile, "--interface", from}, args...)
	return e.ns.Curl(t, all...)
}

// fetch makes one request to name through p as client from, by kind:
// "http" (absolute-URI GET to the plain origin), "connect" (HTTPS through
// CONNECT) or "socks5" (HTTPS through socks5h). It returns curl's exit code
// and the HTTP status it printed ("000" when none).
func (e *rolloutEnv) fetch(t *testing.T, p *testenv.Proc, from, kind, name string) (int, string) {
	t.Helper()
	var args []string
	switch kind {
	case "http":
		args = []string{"-x", p.ProxyURL().String(), fmt.Sprintf("http://%s:%d/", name, e.httpPort)}
	case "connect":
		args = []string{"-x", p.ProxyURL().String(), fmt.Sprintf("https://%s:%d/", name, e.tlsPort)}
	case "socks5":
		args = []string{"--socks5-hostname", p.SOCKSAddr, fmt.Sprintf("https://%s:%d/", name, e.tlsPort)}
	default:
		t.Fatalf("fetch kind %q", kind)
	}
	out, _, code := e.curl(t, from, append([]string{"-o", "/dev/null", "-w", "%{http_code}"}, args...)...)
	return code, strings.TrimSpace(out)
}

// rolloutPolicy: report mode for the policy, enforce for group web, a
// global deny list at the top, one rule per group below it.
func rolloutPolicy(e *rolloutEnv, p *policy.Config) {
	p.Mode = "report"
	p.DenyRanges = []string{"default"}
	p.AllowRanges = []string{"127.0.0.2/32", "127.0.0.3/32"}
	p.TLSPorts = []int{e.tlsPort}
	p.Groups = map[string]policy.Group{
		"web":   {CIDRs: []string{webClientIP + "/32"}, Mode: "enforce"},
		"batch": {CIDRs: []string{batchClientIP + "/32"}},
	}
	p.Rules = []policy.Rule{
		{Name: "no-paste", Action: "deny", Hosts: []string{"paste.test", "*.paste.test"}},
		{Name: "web-news", Groups: []string{"web"}, Hosts: []string{"news.test", "*.paste.test", "paste.test"},
			Ports: []int{e.tlsPort, e.httpPort}, AllowRanges: []string{"127.0.0.0/24"}},
	}
}

// TestDenyRuleEveryListener: a deny rule at the top denies on every front
// end, in a report group and an enforcing one alike, whatever a later rule
// says: 403 with X-Egress-Denied: denied_by_rule (SOCKS5 0x02), an access
// line naming the rule, no DNS query and no connection to the address the
// name would resolve to.
func TestDenyRuleEveryListener(t *testing.T) {
	e := newRolloutEnv(t)
	p := (&testenv.Egressd{Netns: e.ns}).StartConfig(t, e.config(t, rolloutPolicy))
	for _, from := range []string{webClientIP, batchClientIP} {
		group := map[string]string{webClientIP: "web", batchClientIP: "batch"}[from]
		for _, kind := range []string{"http", "connect", "socks5"} {
			for _, name := range []string{"paste.test", "www.paste.test"} {
				code, status := e.fetch(t, p, from, kind, name)
				if kind == "http" && status != "403" || kind != "http" && code == 0 {
					t.Errorf("%s %s from %s: curl exit %d status %s, want a denial", kind, name, group, code, status)
				}
				p.WaitForLog(t, testenv.Fields(map[string]any{"listener": kind, "client": from, "host": name,
					"decision": "deny", "reason": "denied_by_rule", "rule": "no-paste", "group": group}))
			}
		}
	}
	// The header names the reason.
	_, hdrs, _ := e.curl(t, batchClientIP, "-o", "/dev/null", "-D", "/dev/stderr", "-x", p.ProxyURL().String(),
		fmt.Sprintf("http://paste.test:%d/", e.httpPort))
	if !strings.Contains(strings.ToLower(hdrs), "x-egress-denied: denied_by_rule") {
		t.Errorf("no X-Egress-Denied: denied_by_rule header:\n%s", hdrs)
	}
	for _, name := range []string{"paste.test", "www.paste.test"} {
		if n := e.dns.Queries(name); n != 0 {
			t.Errorf("%s was resolved %d times; a deny rule decides before DNS", name, n)
		}
	}
	if e.tls.Count()+e.http.Count() != 0 {
		t.Errorf("origins saw %d requests", e.tls.Count()+e.http.Count())
	}
}

// TestGroupModeLive: with the policy in report mode and group web in
// enforce, web is denied what no rule allows while batch is let through and
// reported; a rule allows web; private ranges stay denied for batch.
func TestGroupModeLive(t *testing.T) {
	e := newRolloutEnv(t)
	p := (&testenv.Egressd{Netns: e.ns}).StartConfig(t, e.config(t, rolloutPolicy))
	cases := []struct {
		from, kind, name string
		ok               bool
		log              map[string]any
	}{
		{webClientIP, "connect", "news.test", true, map[string]any{"decision": "allow", "rule": "web-news", "group": "web"}},
		{webClientIP, "http", "news.test", true, map[string]any{"decision": "allow", "rule": "web-news", "group": "web"}},
		{webClientIP, "connect", "allowed.test", false, map[string]any{"decision": "deny", "reason": "not_allowed", "group": "web"}},
		{webClientIP, "socks5", "allowed.test", false, map[string]any{"decision": "deny", "reason": "not_allowed", "group": "web"}},
		{webClientIP, "http", "allowed.test", false, map[string]any{"decision": "deny", "reason": "not_allowed", "group": "web"}},
		{batchClientIP, "connect", "allowed.test", true, map[string]any{"decision": "report", "reason": "not_allowed", "group": "batch"}},
		{batchClientIP, "socks5", "allowed.test", true, map[string]any{"decision": "report", "reason": "not_allowed", "group": "batch"}},
		{batchClientIP, "http", "news.test", true, map[string]any{"decision": "report", "reason": "not_allowed", "group": "batch"}},
		{batchClientIP, "connect", "meta.test", false, map[string]any{"decision": "deny", "reason": "private_range", "group": "batch"}},
	}
	for _, tc := range cases {
		code, status := e.fetch(t, p, tc.from, tc.kind, tc.name)
		if (code == 0 && status == "200") != tc.ok {
			t.Errorf("%s %s from %s: curl exit %d status %s, want ok=%v", tc.kind, tc.name, tc.from, code, status, tc.ok)
		}
		tc.log["listener"], tc.log["client"], tc.log["host"] = tc.kind, tc.from, tc.name
		p.WaitForLog(t, testenv.Fields(tc.log))
	}
}
