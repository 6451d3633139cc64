package test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/egressd/egressd/test/testenv"
)

// TestHTTPSProxyCurl drives egressd with real curl through HTTPS_PROXY and
// HTTP_PROXY: allowed names reach the origin; denials are 403 with the
// reason header, and leave one access-log line each.
func TestHTTPSProxyCurl(t *testing.T) {
	f := newFarm(t, "enforce")
	env := f.proxyEnv()

	cases := []struct {
		name     string
		url      string
		wantCode int    // curl exit code
		deny     string // X-Egress-Denied / log reason, "" when allowed
		logHost  string // host in the access line
		listener string
	}{
		{name: "allowed https", url: "https://allowed.test:{tls}/a", logHost: "allowed.test", listener: "connect"},
		{name: "allowed http", url: "http://allowed.test:{http}/b", logHost: "allowed.test", listener: "http"},
		{name: "wildcard one level", url: "https://a.wild.test:{tls}/", logHost: "a.wild.test", listener: "connect"},
		{name: "wildcard any depth", url: "https://a.b.c.wild.test:{tls}/", logHost: "a.b.c.wild.test", listener: "connect"},
		{name: "wildcard not apex", url: "http://wild.test:{http}/", deny: "not_allowed", logHost: "wild.test", listener: "http", wantCode: 22},
		{name: "case and trailing dot", url: "http://ALLOWED.Test.:{http}/", logHost: "allowed.test", listener: "http"},
		{name: "denied host", url: "http://other.test:{http}/", deny: "not_allowed", logHost: "other.test", listener: "http", wantCode: 22},
		{name: "denied host connect", url: "https://other.test:{tls}/", deny: "not_allowed", logHost: "other.test", listener: "connect", wantCode: 56},
		{name: "denied port", url: "http://allowed.test:8081/", deny: "port_not_allowed", logHost: "allowed.test", listener: "http", wantCode: 22},
		{name: "group rule for other client", url: "http://ops.test:{http}/", deny: "not_allowed", logHost: "ops.test", listener: "http", wantCode: 22},
		{name: "name in private range", url: "http://private.test:{http}/", deny: "private_range", logHost: "private.test", listener: "http", wantCode: 22},
		{name: "name in metadata range", url: "https://metadata.test:{tls}/", deny: "private_range", logHost: "metadata.test", listener: "connect", wantCode: 56},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			url := strings.NewReplacer("{tls}", fmt.Sprint(f.tlsPort), "{http}", fmt.Sprint(f.httpPort)).Replace(tc.url)
			out, hdr, code := f.curl(t, env, "--fail", url)
			if (tc.wantCode == 0) != (code == 0) {
				t.Fatalf("curl %s: exit %d, want %d\nheaders/stderr: %s\nbody: %s", url, code, tc.wantCode, hdr, out)
			}
			if tc.deny == "" {
				e, err := testenv.ParseEcho([]byte(out))
				if err != nil {
					t.Fatalf("origin answer: %v (%q)", err, out)
				}
				if !strings.HasPrefix(strings.ToLower(e.Host), tc.logHost) {
					t.Errorf("origin saw Host %q, want %s", e.Host, tc.logHost)
				}
				f.waitLog(t, map[string]any{"host": tc.logHost, "listener": tc.listener, "decision": "allow", "rule": "origin"})
				return
			}
			if !strings.Contains(hdr, "X-Egress-Denied: "+tc.deny) {
				t.Errorf("response lacks X-Egress-Denied: %s:\n%s", tc.deny, hdr)
			}
			f.waitLog(t, map[string]any{"host": tc.logHost, "listener": tc.listener, "decision": "deny", "reason": tc.deny})
		})
	}
}

// TestGoTransport uses Go's http.Transport with Proxy set, as Go services
// behind HTTPS_PROXY do.
func TestGoTransport(t *testing.T) {
	f := newFarm(t, "enforce")
	c := f.proc.HTTPClient(t, f.ca.CertPool())
	for _, url := range []string{
		fmt.Sprintf("https://allowed.test:%d/tr", f.tlsPort),
		fmt.Sprintf("http://allowed.test:%d/tr", f.httpPort),
	} {
		for i := 0; i < 3; i++ { // keep-alive: later requests reuse the tunnel or pooled conn
			resp, err := c.Get(url)
			if err != nil {
				t.Fatalf("GET %s: %v", url, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
			}
		}
	}
	resp, err := c.Get(fmt.Sprintf("http://other.test:%d/", f.httpPort))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-Egress-Denied") != "not_allowed" {
		t.Fatalf("denied GET: %d %q", resp.StatusCode, resp.Header.Get("X-Egress-Denied"))
	}
}

// TestHostHeaderNeverReachesOrigin: for an absolute URI the origin gets the
// URI's authority as Host (RFC 9112 section 3.2.2), never a client's Host.
func TestHostHeaderNeverReachesOrigin(t *testing.T) {
	f := newFarm(t, "enforce")
	resp := f.rawRequest(t, fmt.Sprintf("GET http://allowed.test:%d/h HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n", f.httpPort))
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	e, err := testenv.ParseEcho(body)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("allowed.test:%d", f.httpPort); e.Host != want {
		t.Fatalf("origin received Host %q, want %q", e.Host, want)
	}
	for _, r := range f.http.Requests() {
		if strings.Contains(r.Host, "evil") {
			t.Fatalf("origin saw the client's Host header: %+v", r)
		}
	}
}

// TestHopByHopNotForwarded: Proxy-* and hop-by-hop headers stop at egressd.
func TestHopByHopNotForwarded(t *testing.T) {
	f := newFarm(t, "enforce")
	resp := f.rawRequest(t, fmt.Sprintf("GET http://allowed.test:%d/hop HTTP/1.1\r\nHost: allowed.test\r\n"+
		"Proxy-Authorization: Basic c2VjcmV0OnNlY3JldA==\r\nProxy-Connection: keep-alive\r\nConnection: close, X-Drop\r\n"+
		"X-Drop: 1\r\nKeep-Alive: 5\r\nX-Keep: yes\r\n\r\n", f.httpPort))
	body, _ := io.ReadAll(resp.Body)
	e, err := testenv.ParseEcho(body)
	if err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	for _, h := range []string{"Proxy-Authorization", "Proxy-Connection", "X-Drop", "Keep-Alive"} {
		if v := e.Header.Get(h); v != "" {
			t.Errorf("origin received %s: %q", h, v)
		}
	}
	if e.Header.Get("X-Keep") != "yes" {
		t.Errorf("end-to-end header X-Keep lost: %v", e.Header)
	}
	for _, line := range f.proc.Stdout() {
		if strings.Contains(line, "c2VjcmV0") {
			t.Fatalf("access log contains credentials: %s", line)
		}
	}
}

// TestIPLiterals: every spelling of an address is normalized; literals
// match only cidrs rules, and forbidden ones are refused without a packet.
func TestIPLiterals(t *testing.T) {
	f := newFarm(t, "enforce")
	cases := []struct {
		name, authority string
		status          int
		reason          string
	}{
		{"dotted allowed", "127.0.0.3:%d", 200, ""},
		{"decimal allowed", "2130706435:%d", 200, ""},
		{"hex allowed", "0x7f000003:%d", 200, ""},
		{"octal allowed", "0177.0.0.03:%d", 200, ""},
		{"short form allowed", "127.3:%d", 200, ""},
		{"mapped v6 allowed", "[::ffff:127.0.0.3]:%d", 200, ""},
		{"metadata dotted", "169.254.169.254:%d", 403, "not_allowed"},
		{"metadata decimal", "2852039166:%d", 403, "not_allowed"},
		{"metadata hex", "0xa9fea9fe:%d", 403, "not_allowed"},
		{"metadata octal", "0251.0376.0251.0376:%d", 403, "not_allowed"},
		{"metadata mapped v6", "[::ffff:a9fe:a9fe]:%d", 403, "not_allowed"},
		{"metadata nat64", "[64:ff9b::a9fe:a9fe]:%d", 403, "not_allowed"},
		{"metadata 6to4", "[2002:a9fe:a9fe::]:%d", 403, "not_allowed"},
		{"cidr rule as wide as a deny range: tie denies", "10.0.0.5:%d", 403, "private_range"},
		{"mapped v6 into cidr rule, private", "[::ffff:10.0.0.5]:%d", 403, "private_range"},
		{"home router no rule", "192.168.1.1:%d", 403, "not_allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			auth := fmt.Sprintf(tc.authority, f.httpPort)
			resp := f.rawRequest(t, fmt.Sprintf("GET http://%s/ip HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", auth))
			if resp.StatusCode != tc.status {
				body, _ := io.ReadAll(resp.Body)
				t.Fatalf("GET http://%s/: %d, want %d (%s)", auth, resp.StatusCode, tc.status, body)
			}
			if tc.reason != "" && resp.Header.Get("X-Egress-Denied") != tc.reason {
				t.Errorf("reason %q, want %q", resp.Header.Get("X-Egress-Denied"), tc.reason)
			}
			// The same through CONNECT.
			_, cresp := f.connect(t, auth)
			if cresp.StatusCode != tc.status {
				t.Fatalf("CONNECT %s: %d, want %d", auth, cresp.StatusCode, tc.status)
			}
		})
	}
	// An allowed IP-literal destination never matches a hosts rule: the
	// TLS origin's address is in by-ip; 127.0.0.4 is in no rule at all.
	resp := f.rawRequest(t, fmt.Sprintf("GET http://127.0.0.4:%d/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n", f.httpPort))
	if resp.StatusCode != 403 {
		t.Fatalf("unlisted IP literal: %d", resp.StatusCode)
	}
}

// TestRebinding: a name whose answers alternate between an allowed and a
// denied address (TTL 0) is only ever dialed at an address that was checked.
func TestRebinding(t *testing.T) {
	f := newFarm(t, "enforce")
	var ok, denied int
	for i := 0; i < 10; i++ {
		resp := f.rawRequest(t, fmt.Sprintf("GET http://rebind.test:%d/r HTTP/1.1\r\nHost: rebind.test\r\nConnection: close\r\n\r\n", f.tlsPort))
		switch {
		case resp.StatusCode == 403 && resp.Header.Get("X-Egress-Denied") == "private_range":
			denied++
		case resp.StatusCode == 400 || resp.StatusCode == 200:
			ok++ // plain HTTP to the TLS origin: it answers 400, but it was reached
		default:
			t.Fatalf("request %d: %d %v", i, resp.StatusCode, resp.Header)
		}
	}
	if ok == 0 || denied == 0 {
		t.Fatalf("answers did not alternate: %d reached, %d denied", ok, denied)
	}
	f.honey.Sync(t)
	f.honey.AssertNone(t)
}

// TestMixedAnswerDialsOnlyCheckedAddress: a name with one denied and one
// allowed address is dialed only at the allowed one.
func TestMixedAnswerDialsOnlyCheckedAddress(t *testing.T) {
	f := newFarm(t, "enforce")
	resp, err := f.tlsThrough(t, fmt.Sprintf("mixed.test:%d", f.tlsPort), "mixed.test")
	if err == nil {
		resp.Body.Close()
	}
	line := f.waitLog(t, map[string]any{"host": "mixed.test", "listener": "connect"})
	if line["ip"] != originIP {
		t.Fatalf("dialed %v, want %s: %v", line["ip"], originIP, line)
	}
}

// TestSNIChecks: on a TLS port the ClientHello must name the CONNECT host.
func TestSNIChecks(t *testing.T) {
	f := newFarm(t, "enforce")
	target := fmt.Sprintf("allowed.test:%d", f.tlsPort)

	resp, err := f.tlsThrough(t, target, "allowed.test")
	if err != nil {
		t.Fatalf("matching SNI: %v", err)
	}
	resp.Body.Close()
	f.waitLog(t, map[string]any{"host": "allowed.test", "sni": "allowed.test", "decision": "allow", "listener": "connect"})

	if _, err := f.tlsThrough(t, target, "evil.test"); err == nil {
		t.Fatal("SNI evil.test through CONNECT allowed.test succeeded")
	}
	f.waitLog(t, map[string]any{"host": "allowed.test", "sni": "evil.test", "decision": "deny", "reason": "sni_mismatch"})

	if _, err := f.tlsThrough(t, target, ""); err == nil {
		t.Fatal("no SNI succeeded")
	}
	f.waitLog(t, map[string]any{"host": "allowed.test", "decision": "deny", "reason": "sni_missing"})

	c, cresp := f.connect(t, target)
	if cresp.StatusCode != 200 {
		t.Fatalf("CONNECT: %d", cresp.StatusCode)
	}
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
	if n, _ := c.Read(make([]byte, 1)); n != 0 {
		t.Fatal("plain HTTP on a TLS port got an answer")
	}
	f.waitLog(t, map[string]any{"host": "allowed.test", "decision": "deny", "reason": "protocol_mismatch"})
	if n := f.tls.Count(); n != 1 {
		t.Fatalf("origin served %d requests, want only the one with the matching SNI", n)
	}
}

// TestBadRequests: malformed or origin-form requests get clean answers and
// the process keeps serving.
func TestBadRequests(t *testing.T) {
	f := newFarm(t, "enforce")
	if resp := f.rawRequest(t, "GET /status HTTP/1.1\r\nHost: allowed.test\r\n\r\n"); resp.StatusCode != 400 {
		t.Errorf("origin-form: %d, want 400", resp.StatusCode)
	}
	if resp := f.rawRequest(t, "CONNECT allowed.test HTTP/1.1\r\nHost: allowed.test\r\n\r\n"); resp.StatusCode != 400 {
		t.Errorf("CONNECT without port: %d, want 400", resp.StatusCode)
	}
	if resp := f.rawRequest(t, "GET ftp://allowed.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n"); resp.StatusCode != 400 {
		t.Errorf("ftp scheme: %d, want 400", resp.StatusCode)
	}
	big := strings.Repeat("a", 128<<10)
	if resp := f.rawRequest(t, "GET http://allowed.test/ HTTP/1.1\r\nHost: allowed.test\r\nX-Big: "+big+"\r\n\r\n"); resp.StatusCode != 431 {
		t.Errorf("oversized header: %d, want 431", resp.StatusCode)
	}
	// DNS failure and dial failure are 502s, not hangs.
	resp := f.rawRequest(t, fmt.Sprintf("GET http://no.nx.test:%d/ HTTP/1.1\r\nHost: x\r\n\r\n", f.httpPort))
	if resp.StatusCode != 502 || resp.Header.Get("X-Egress-Error") != "dns_error" {
		t.Errorf("unresolvable name: %d %v", resp.StatusCode, resp.Header)
	}
	resp = f.rawRequest(t, fmt.Sprintf("GET http://dead.test:%d/ HTTP/1.1\r\nHost: x\r\n\r\n", f.httpPort))
	if resp.StatusCode != 502 {
		t.Errorf("dial failure: %d", resp.StatusCode)
	}
	_, cresp := f.connect(t, fmt.Sprintf("dead.test:%d", f.tlsPort))
	if cresp.StatusCode != 502 {
		t.Errorf("CONNECT dial failure: %d", cresp.StatusCode)
	}
	// Still serving.
	out, hdr, code := f.curl(t, f.proxyEnv(), "--fail", fmt.Sprintf("http://allowed.test:%d/", f.httpPort))
	if code != 0 {
		t.Fatalf("after bad requests: curl exit %d: %s %s", code, hdr, out)
	}
}

// TestReportMode: what a rule would deny is allowed and logged as report;
// private ranges stay denied.
func TestReportMode(t *testing.T) {
	f := newFarm(t, "report")
	env := f.proxyEnv()
	if out, hdr, code := f.curl(t, env, "--fail", fmt.Sprintf("http://other.test:%d/", f.httpPort)); code != 0 {
		t.Fatalf("report mode denied other.test: %d %s %s", code, hdr, out)
	}
	f.waitLog(t, map[string]any{"host": "other.test", "decision": "report", "reason": "not_allowed"})
	if _, _, code := f.curl(t, env, "--fail", fmt.Sprintf("https://other.test:%d/", f.tlsPort)); code != 60 && code != 0 {
		// The origin's certificate does not name other.test: curl fails
		// verification (60), but the tunnel was allowed.
		t.Fatalf("report mode CONNECT: curl exit %d", code)
	}
	f.waitLog(t, map[string]any{"host": "other.test", "listener": "connect", "decision": "report"})
	_, hdr, code := f.curl(t, env, "--fail", fmt.Sprintf("http://private.test:%d/", f.httpPort))
	if code != 22 || !strings.Contains(hdr, "X-Egress-Denied: private_range") {
		t.Fatalf("report mode relaxed private_range: exit %d %s", code, hdr)
	}
}
