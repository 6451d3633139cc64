package test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/test/testenv"
)

// TestUpstreamTunnelsAndForwarded: a rule with via hands its allowed
// traffic to the parent: CONNECT and SOCKS5 tunnels as CONNECT host:port
// by name with the credentials, forwarded http URLs in absolute form,
// forwarded https URLs through the parent's tunnel. The parent's first URL
// is down: each connection fails over to the second, and both outcomes
// are counted. egressd never resolves the partner names (its DNS does not
// know them), and the password appears nowhere in its output.
func TestUpstreamTunnelsAndForwarded(t *testing.T) {
	e := newChainEnv(t, chainOptions{})
	target := fmt.Sprintf("app.partner.test:%d", e.partner.Port())

	t.Run("CONNECT", func(t *testing.T) {
		out, errOut, code := e.curl(t, "-x", e.proxy(), e.partnerURL("app.partner.test", "/via-connect"))
		if code != 0 {
			t.Fatalf("curl exit %d: %s", code, errOut)
		}
		echo, err := testenv.ParseEcho([]byte(out))
		if err != nil || echo.Path != "/via-connect" || echo.SNI != "app.partner.test" {
			t.Fatalf("origin saw %+v (%v)", echo, err)
		}
		line := e.proc.WaitForLog(t, testenv.Fields(map[string]any{"listener": "connect", "host": "app.partner.test"}))
		for k, want := range map[string]any{"decision": "allow", "rule": "partners", "via": "corp", "via_addr": e.parent.Addr(),
			"ip": "", "status": 200, "sni": "app.partner.test", "reason": ""} {
			if fmt.Sprint(line[k]) != fmt.Sprint(want) {
				t.Errorf("access line %s = %v, want %v (%v)", k, line[k], want, line)
			}
		}
		if _, ok := line["via_status"]; ok {
			t.Errorf("via_status on a success: %v", line)
		}
	})
	t.Run("SOCKS5", func(t *testing.T) {
		out, errOut, code := e.curl(t, "--socks5-hostname", e.proc.SOCKSAddr, e.partnerURL("app.partner.test", "/via-socks"))
		if code != 0 {
			t.Fatalf("curl exit %d: %s", code, errOut)
		}
		if echo, err := testenv.ParseEcho([]byte(out)); err != nil || echo.Path != "/via-socks" {
			t.Fatalf("origin saw %+v (%v)", echo, err)
		}
		e.proc.WaitForLog(t, testenv.Fields(map[string]any{"listener": "socks5", "host": "app.partner.test", "via": "corp",
			"via_addr": e.parent.Addr(), "status": 0, "decision": "allow"}))
	})
	t.Run("forwarded http", func(t *testing.T) {
		u := e.webURL("web.partner.test", "/via-forward?q=1")
		out, errOut, code := e.curl(t, "-x", e.proxy(), "-H", "X-Client: yes", u)
		if code != 0 {
			t.Fatalf("curl exit %d: %s", code, errOut)
		}
		echo, err := testenv.ParseEcho([]byte(out))
		if err != nil || echo.Path != "/via-forward" || echo.Host != fmt.Sprintf("web.partner.test:%d", e.web.Port()) {
			t.Fatalf("origin saw %+v (%v)", echo, err)
		}
		if echo.Header.Get("Proxy-Authorization") != "" || echo.Header.Get("X-Client") != "yes" {
			t.Errorf("origin headers %v", echo.Header)
		}
		if !strings.Contains(errOut, "Via: 1.1 parent") {
			t.Errorf("the response did not come through the parent:\n%s", errOut)
		}
		reqs := e.parentRequests(u)
		if len(reqs) != 1 || reqs[0].Method != http.MethodGet || reqs[0].ProxyAuthorization != wantBasic() {
			t.Fatalf("parent saw %+v for %s; all: %+v", reqs, u, e.parent.Requests())
		}
		e.proc.WaitForLog(t, testenv.Fields(map[string]any{"listener": "http", "host": "web.partner.test", "via": "corp",
			"via_addr": e.parent.Addr(), "status": 200, "method": "GET", "ip": ""}))
	})
	t.Run("forwarded https", func(t *testing.T) {
		u := e.partnerURL("app.partner.test", "/via-forward-tls")
		// egressd is the TLS client of an absolute https URL, through the
		// parent's tunnel. It trusts the system's roots, not the test CA,
		// so the handshake fails after the tunnel opened (upstream_tls:
		// an origin certificate egressd cannot verify is refused): what
		// counts here is that the tunnel was the parent's (below).
		resp := e.raw(t, "GET "+u+" HTTP/1.1\r\nHost: app.partner.test\r\nConnection: close\r\n\r\n")
		if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("X-Egress-Denied") != "upstream_tls" {
			t.Fatalf("status %d %v", resp.StatusCode, resp.Header)
		}
		e.proc.WaitForLog(t, testenv.Fields(map[string]any{"listener": "http", "host": "app.partner.test", "via": "corp", "method": "GET"}))
	})

	// Every connection went to the parent by name with the credentials;
	// egressd resolved none of the partner names.
	var connects int
	for _, r := range e.parent.Requests() {
		if r.Method != http.MethodConnect {
			continue
		}
		connects++
		if r.Target != target || r.ProxyAuthorization != wantBasic() {
			t.Errorf("parent saw CONNECT %s with %q", r.Target, r.ProxyAuthorization)
		}
	}
	if connects != 3 { // curl -x, curl --socks5-hostname, the forwarded https URL
		t.Errorf("parent saw %d CONNECTs, want 3: %+v", connects, e.parent.Requests())
	}
	for _, n := range []string{"app.partner.test", "web.partner.test"} {
		if q := e.dns.Queries(n); q != 0 {
			t.Errorf("egressd resolved %s %d times", n, q)
		}
	}
	m := e.metrics(t)
	// The dead first URL was tried by the first connection only: the
	// next ones went to the second URL first while it was marked down
	// (10 s; a second try means the subtests took longer than that).
	if got := metricValue(m, `egressd_upstream_proxy_requests_total{proxy="corp",result="down"}`); got < 1 || got > 2 {
		t.Errorf("the dead first URL was tried %v times for 4 connections, want 1", got)
	}
	for series, want := range map[string]float64{
		`egressd_upstream_proxy_requests_total{proxy="corp",result="ok"}`:          4,
		`egressd_upstream_proxy_requests_total{proxy="corp",result="unavailable"}`: 0,
		`egressd_upstream_proxy_requests_total{proxy="down",result="ok"}`:          0,
	} {
		if got := metricValue(m, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	e.assertNoPassword(t)
}

// TestUpstreamDenied: everything the policy denies is answered by egressd
// and never reaches a parent: a deny rule, a host no rule allows, a port
// no rule allows, IP literals in the deny ranges (with a cidrs rule that
// has via); and a rule without via stays direct.
func TestUpstreamDenied(t *testing.T) {
	e := newChainEnv(t, chainOptions{})
	port := e.partner.Port()
	for _, tt := range []struct {
		url, reason string
	}{
		{e.partnerURL("paste.partner.test", "/"), "denied_by_rule"},
		{e.partnerURL("unknown.test", "/"), "not_allowed"},
		{fmt.Sprintf("https://app.partner.test:%d/", e.direct.Port()), "port_not_allowed"},
		{fmt.Sprintf("https://%s:%d/", metadataIP, port), "private_range"},
		{fmt.Sprintf("https://%s:%d/", privateIP, port), "private_range"},
		{fmt.Sprintf("https://[::ffff:%s]:%d/", metadataIP, port), "private_range"},
	} {
		_, errOut, code := e.curl(t, "-x", e.proxy(), tt.url)
		if code == 0 || !strings.Contains(errOut, "X-Egress-Denied: "+tt.reason) {
			t.Errorf("%s: curl exit %d, want X-Egress-Denied: %s:\n%s", tt.url, code, tt.reason, errOut)
		}
		_, _, code = e.curl(t, "--socks5-hostname", e.proc.SOCKSAddr, tt.url)
		if code != 97 { // curl: the SOCKS5 server refused (0x02)
			t.Errorf("%s over SOCKS5: curl exit %d, want 97", tt.url, code)
		}
	}
	_, errOut, code := e.curl(t, "-x", e.proxy(), e.webURL("paste.partner.test", "/"))
	if code != 0 || !strings.Contains(errOut, "403") || !strings.Contains(errOut, "X-Egress-Denied: denied_by_rule") {
		t.Errorf("forwarded deny: exit %d:\n%s", code, errOut)
	}
	// direct.test has no via: dialed by egressd itself.
	out, errOut, code := e.curl(t, "-x", e.proxy(), fmt.Sprintf("https://direct.test:%d/direct", e.direct.Port()))
	if code != 0 || !strings.Contains(out, `"path":"/direct"`) {
		t.Fatalf("direct: exit %d: %s %s", code, out, errOut)
	}
	line := e.proc.WaitForLog(t, testenv.Fields(map[string]any{"host": "direct.test", "decision": "allow"}))
	if line["ip"] != chainDirectIP || line["via"] != nil {
		t.Errorf("direct line %v", line)
	}
	e.proc.WaitForLog(t, testenv.Fields(map[string]any{"host": metadataIP, "reason": "private_range", "rule": "partner-ips"}))
	if n := len(e.parent.Requests()); n != 0 || e.parent.Conns() != 0 {
		t.Errorf("the parent saw %d requests on %d connections: %+v", n, e.parent.Conns(), e.parent.Requests())
	}
}

// TestUpstreamSNIGuard: the guard reads the client's ClientHello before a
// byte goes through the parent: a mismatched SNI closes the tunnel, and
// the parent, which had opened its tunnel, relays nothing.
func TestUpstreamSNIGuard(t *testing.T) {
	e := newChainEnv(t, chainOptions{})
	target := fmt.Sprintf("app.partner.test:%d", e.partner.Port())
	for _, listener := range []string{"connect", "socks5"} {
		var c net.Conn
		if listener == "connect" {
			conn, head := e.connect(t, target)
			if !strings.HasPrefix(head, "HTTP/1.1 200 ") {
				t.Fatalf("CONNECT: %q", head)
			}
			c = conn
		} else {
			conn, res := socksRequest(t, e.ns, e.proc.SOCKSAddr, nil, socksConnect, "app.partner.test", e.partner.Port(), false)
			if res.Reply != replySucceeded {
				t.Fatalf("socks5: reply %d", res.Reply)
			}
			c = conn
		}
		tc := tls.Client(c, &tls.Config{ServerName: "evil.test", RootCAs: e.ca.CertPool()})
		if err := tc.Handshake(); err == nil {
			t.Fatalf("%s: TLS through a mismatched SNI succeeded", listener)
		}
		c.Close()
		e.proc.WaitForLog(t, testenv.Fields(map[string]any{"listener": listener, "reason": "sni_mismatch", "sni": "evil.test", "via": "corp"}))
	}
	for _, r := range e.parent.WaitDone(t, 2) {
		if r.Method != http.MethodConnect || r.TunnelUp != 0 {
			t.Errorf("parent request %+v: the tunnel carried client bytes", r)
		}
	}
	if n := e.partner.Count(); n != 0 {
		t.Errorf("origin answered %d requests", n)
	}
}

// TestUpstreamServerFirst: a server-first destination (an SSH-like
// banner) through a parent that writes its 200 and the banner in one
// write, so egressd reads both at once: the client gets the banner first,
// then its own bytes echoed, over CONNECT and SOCKS5, and the banner is
// counted as bytes down.
func TestUpstreamServerFirst(t *testing.T) {
	e := newChainEnv(t, chainOptions{banner: true})
	port := e.banner.Addr().(*net.TCPAddr).Port
	target := fmt.Sprintf("ssh.partner.test:%d", port)
	for _, listener := range []string{"connect", "socks5"} {
		var c net.Conn
		if listener == "connect" {
			conn, head := e.connect(t, target)
			if !strings.HasPrefix(head, "HTTP/1.1 200 ") {
				t.Fatalf("CONNECT: %q", head)
			}
			c = conn
		} else {
			conn, res := socksRequest(t, e.ns, e.proc.SOCKSAddr, nil, socksConnect, "ssh.partner.test", port, false)
			if res.Reply != replySucceeded {
				t.Fatalf("socks5: reply %d", res.Reply)
			}
			c = conn
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		banner := make([]byte, len(chainBanner))
		if _, err := io.ReadFull(c, banner); err != nil || string(banner) != chainBanner {
			t.Fatalf("%s: tunnel starts %q (%v), want the banner", listener, banner, err)
		}
		io.WriteString(c, "ping\n")
		echo := make([]byte, 5)
		if _, err := io.ReadFull(c, echo); err != nil || string(echo) != "ping\n" {
			t.Fatalf("%s: echo %q (%v)", listener, echo, err)
		}
		c.Close()
		e.proc.WaitForLog(t, testenv.Fields(map[string]any{"listener": listener, "host": "ssh.partner.test", "via": "corp",
			"rule": "banner", "bytes_up": 5.0, "bytes_down": float64(len(chainBanner) + 5)}))
	}
	if reqs := e.parentRequests(target); len(reqs) != 2 {
		t.Errorf("parent saw %d CONNECTs to %s, want 2: %+v", len(reqs), target, e.parent.Requests())
	}
}

// TestUpstreamFailures: a parent that refuses (403), one that refuses
// egressd's credentials (407), and a parent whose every URL is down: 502
// with X-Egress-Error: upstream_proxy (SOCKS5: the matching reply), the
// parent's status in the access line, the outcomes counted.
func TestUpstreamFailures(t *testing.T) {
	e := newChainEnv(t, chainOptions{refuse: func(target string) int {
		switch {
		case strings.HasPrefix(target, "refused.partner.test:"):
			return http.StatusForbidden
		case strings.HasPrefix(target, "auth.partner.test:"):
			return http.StatusProxyAuthRequired
		}
		return 0
	}})
	for _, tt := range []struct {
		host      string
		viaStatus int
		socks     int // curl's exit code over SOCKS5
	}{
		{"refused.partner.test", 403, 97},
		{"auth.partner.test", 407, 97},
		{"app.down.test", 0, 97},
	} {
		_, errOut, code := e.curl(t, "-x", e.proxy(), e.partnerURL(tt.host, "/"))
		if code == 0 || !strings.Contains(errOut, "502") || !strings.Contains(errOut, "X-Egress-Error: upstream_proxy") {
			t.Errorf("%s CONNECT: exit %d:\n%s", tt.host, code, errOut)
		}
		want := map[string]any{"listener": "connect", "host": tt.host, "reason": "upstream_proxy", "status": 502, "decision": "allow"}
		if tt.viaStatus != 0 {
			want["via_status"] = tt.viaStatus
			want["via_addr"] = e.parent.Addr()
		} else {
			want["via_addr"] = ""
		}
		e.proc.WaitForLog(t, testenv.Fields(want))

		_, _, code = e.curl(t, "--socks5-hostname", e.proc.SOCKSAddr, e.partnerURL(tt.host, "/"))
		if code != tt.socks {
			t.Errorf("%s SOCKS5: curl exit %d, want %d", tt.host, code, tt.socks)
		}
	}
	// The SOCKS5 replies, read raw: 403 is "not allowed", the others a
	// general failure.
	for host, want := range map[string]int{"refused.partner.test": replyNotAllowed, "auth.partner.test": 1, "app.down.test": 1} {
		_, res := socksRequest(t, e.ns, e.proc.SOCKSAddr, nil, socksConnect, host, e.partner.Port(), false)
		if res.Reply != want {
			t.Errorf("%s: SOCKS5 reply %d, want %d", host, res.Reply, want)
		}
		e.proc.WaitForLog(t, testenv.Fields(map[string]any{"listener": "socks5", "host": host, "reason": "upstream_proxy", "status": want}))
	}
	// Forwarded http: the parent's 407 is not passed on as egressd's own;
	// a parent down is a 502 like a tunnel's.
	for host, viaStatus := range map[string]int{"auth.partner.test": 407, "web.down.test": 0} {
		u := e.webURL(host, "/")
		resp := e.raw(t, "GET "+u+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("X-Egress-Error") != "upstream_proxy" || resp.Header.Get("Proxy-Authenticate") != "" {
			t.Errorf("%s: %d %v", u, resp.StatusCode, resp.Header)
		}
		want := map[string]any{"listener": "http", "host": host, "reason": "upstream_proxy", "status": 502}
		if viaStatus != 0 {
			want["via_status"] = viaStatus
		}
		e.proc.WaitForLog(t, testenv.Fields(want))
	}
	m := e.metrics(t)
	for series, want := range map[string]float64{
		`egressd_upstream_proxy_requests_total{proxy="corp",result="refused"}`:                7, // 403 and 407: curl -x, curl socks, raw socks each; the forwarded 407
		`egressd_upstream_proxy_requests_total{proxy="down",result="unavailable"}`:            4,
		`egressd_upstream_proxy_requests_total{proxy="down",result="down"}`:                   8,
		`egressd_requests_total{decision="allow",listener="connect",reason="upstream_proxy"}`: 3,
	} {
		if got := metricValue(m, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	e.assertNoPassword(t)
}

// TestUpstreamSquid: Squid from Debian's packages as a real parent with
// Basic credentials (basic_ncsa_auth): tunnels and forwarded requests
// through it by name (Squid resolves the on-premises names egressd's DNS
// does not know), and Squid's own refusal.
func TestUpstreamSquid(t *testing.T) {
	e := newChainEnv(t, chainOptions{squid: true})
	out, errOut, code := e.curl(t, "-x", e.proxy(), e.partnerURL("app.audited.test", "/squid-connect"))
	if code != 0 || !strings.Contains(out, `"path":"/squid-connect"`) || !strings.Contains(out, `"sni":"app.audited.test"`) {
		t.Fatalf("CONNECT through squid: exit %d: %s %s", code, out, errOut)
	}
	out, errOut, code = e.curl(t, "--socks5-hostname", e.proc.SOCKSAddr, e.partnerURL("app.audited.test", "/squid-socks"))
	if code != 0 || !strings.Contains(out, `"path":"/squid-socks"`) {
		t.Fatalf("SOCKS5 through squid: exit %d: %s %s", code, out, errOut)
	}
	out, errOut, code = e.curl(t, "-x", e.proxy(), e.webURL("web.audited.test", "/squid-forward"))
	if code != 0 || !strings.Contains(out, `"path":"/squid-forward"`) || !strings.Contains(errOut, "squid") {
		t.Fatalf("forwarded through squid: exit %d: %s %s", code, out, errOut)
	}
	target := fmt.Sprintf("app.audited.test:%d", e.partner.Port())
	// Squid's log names the authenticated user and the destination by name.
	e.squid.WaitForLog(t, "CONNECT "+target, " "+chainUser+" ", "TCP_TUNNEL/200")
	e.squid.WaitForLog(t, "GET "+e.webURL("web.audited.test", "/squid-forward"), " "+chainUser+" ")
	e.proc.WaitForLog(t, testenv.Fields(map[string]any{"listener": "connect", "host": "app.audited.test", "via": "squid", "via_addr": e.squid.Addr, "status": 200}))

	// Squid refuses a domain of its deny list: its 403 is the parent's refusal.
	_, errOut, code = e.curl(t, "-x", e.proxy(), e.partnerURL("blocked.audited.test", "/"))
	if code == 0 || !strings.Contains(errOut, "X-Egress-Error: upstream_proxy") {
		t.Errorf("blocked by squid: exit %d:\n%s", code, errOut)
	}
	e.proc.WaitForLog(t, testenv.Fields(map[string]any{"host": "blocked.audited.test", "reason": "upstream_proxy", "via_status": 403, "via": "squid"}))
	if q := e.dns.Queries("app.audited.test"); q != 0 {
		t.Errorf("egressd resolved app.audited.test %d times", q)
	}
	e.assertNoPassword(t)
}

// TestUpstreamReload: a reload that changes a rule's via takes effect for
// new connections: partners moves from corp to a second parent, then to
// direct (egressd resolves the name itself from then on).
func TestUpstreamReload(t *testing.T) {
	e := newChainEnv(t, chainOptions{})
	second := testenv.NewParentIn(t, e.ns, chainParentIP, testenv.ParentOptions{
		Hosts: map[string]string{"app.partner.test": chainPartnerIP},
	})
	extra := fmt.Sprintf("  second:\n    urls: [%q]\n", second.URL())
	target := fmt.Sprintf("app.partner.test:%d", e.partner.Port())
	get := func(path string) {
		t.Helper()
		out, errOut, code := e.curl(t, "-x", e.proxy(), e.partnerURL("app.partner.test", path))
		if code != 0 || !strings.Contains(out, `"path":"`+path+`"`) {
			t.Fatalf("%s: exit %d: %s %s", path, code, out, errOut)
		}
	}
	// Written whole, then renamed into place: egressd watches the file,
	// and a file rewritten in place can be read half-written.
	write := func(cfg string) {
		t.Helper()
		tmp := e.proc.ConfigPath + ".new"
		if err := os.WriteFile(tmp, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, e.proc.ConfigPath); err != nil {
			t.Fatal(err)
		}
	}
	// reload writes cfg and waits for a reload of result that read it
	// (egressd reloads on the file change and on SIGHUP: a count above
	// the one before the write).
	reload := func(cfg, result string) {
		t.Helper()
		before := reloads(t, e.ns, e.proc.AdminAddr, result)
		write(cfg)
		e.proc.Signal(syscall.SIGHUP)
		waitUntil(t, 10*time.Second, func() bool { return reloads(t, e.ns, e.proc.AdminAddr, result) > before },
			func() string { return e.proc.Stderr() })
	}
	get("/first")
	reload(e.config(t, "second", extra), "success")
	get("/second")
	if n := len(e.parentRequests(target)); n != 1 {
		t.Errorf("corp saw %d CONNECTs, want 1 (before the reload)", n)
	}
	if rs := second.Requests(); len(rs) != 1 || rs[0].Target != target || rs[0].ProxyAuthorization != "" {
		t.Errorf("second parent saw %+v", rs)
	}
	e.proc.WaitForLog(t, testenv.Fields(map[string]any{"host": "app.partner.test", "via": "second", "via_addr": second.Addr()}))

	// Direct: egressd resolves the name itself now.
	e.dns.Set("app.partner.test", 60, netip.MustParseAddr(chainPartnerIP))
	cfg := e.config(t, "", extra)
	cfg = strings.Replace(cfg, `      hosts: ["*.partner.test"]`, `      hosts: ["*.partner.test"]`+"\n      allow_ranges: [\""+chainPartnerIP+"/32\"]", 1)
	reload(cfg, "success")
	get("/direct")
	line := e.proc.WaitForLog(t, testenv.Fields(map[string]any{"host": "app.partner.test", "ip": chainPartnerIP}))
	if line["via"] != nil {
		t.Errorf("direct line has via: %v", line)
	}
	if len(second.Requests()) != 1 || len(e.parentRequests(target)) != 1 {
		t.Errorf("a parent saw the direct request")
	}
	// A password file turned world-readable is a reload refused with its
	// key and line; the old config keeps serving.
	if err := os.Chmod(e.pwFile, 0o644); err != nil {
		t.Fatal(err)
	}
	reload(e.config(t, "corp", extra), "error")
	if !strings.Contains(e.proc.Stderr(), "upstream_proxies.corp.password_file: "+e.pwFile+": readable by group or others (mode 0644)") {
		t.Errorf("stderr does not name the key:\n%s", e.proc.Stderr())
	}
	get("/still-direct")
	if len(e.parentRequests(target)) != 1 {
		t.Errorf("the refused config took effect")
	}
}

// TestUpstreamStartAndCheck: egressd refuses to start with a password
// file others can read, naming the key and line; egressd check says which
// parent a destination would use.
func TestUpstreamStartAndCheck(t *testing.T) {
	dir := t.TempDir()
	pw := dir + "/corp.pass"
	if err := os.WriteFile(pw, []byte(chainPassword+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, fmt.Sprintf(`upstream_proxies:
  corp:
    urls: ["http://10.1.2.3:8080", "http://10.1.2.4:8080"]
    username: egress
    password_file: %s
policy:
  rules:
    - name: partners
      hosts: ["*.partner.example"]
      ports: [443, 80]
      via: corp
    - name: ips
      cidrs: ["203.0.113.0/24"]
      ports: [443]
`, pw))
	_, stderr, code := run(t, "validate", "--config", cfg)
	if code != 1 || !strings.Contains(stderr, cfg+":5: upstream_proxies.corp.password_file: "+pw+": readable by group or others (mode 0644)") {
		t.Fatalf("validate: exit %d: %s", code, stderr)
	}
	_, stderr, code = run(t, "serve", "--config", cfg)
	if code == 0 || !strings.Contains(stderr, cfg+":5: upstream_proxies.corp.password_file") {
		t.Fatalf("serve: exit %d: %s", code, stderr)
	}
	if err := os.Chmod(pw, 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := run(t, "check", "--config", cfg, "app.partner.example:443")
	want := "decision: allow\nrule: partners\nreason: -\nhost: app.partner.example\nvia: corp\nparent: http://10.1.2.3:8080\nparent: http://10.1.2.4:8080\n"
	if code != 0 || out != want {
		t.Errorf("check: exit %d:\n%s\nwant:\n%s%s", code, out, want, stderr)
	}
	out, _, code = run(t, "check", "--config", cfg, "app.other.example:443")
	if code != 1 || strings.Contains(out, "via:") {
		t.Errorf("check of a denied host: exit %d:\n%s", code, out)
	}
	for _, s := range []string{out, stderr} {
		if strings.Contains(s, chainPassword) {
			t.Errorf("check shows the password: %s", s)
		}
	}
	_, stderr, _ = run(t, "check", "--help")
	if !strings.Contains(stderr, "via: NAME") {
		t.Errorf("check --help does not tell about via:\n%s", stderr)
	}
}
