package test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/egressd/egressd/proxy/config"
	"github.com/egressd/egressd/proxy/inspect/inspecttest"
	"github.com/egressd/egressd/test/testenv"
)

type inspectFarm struct {
	*farm
	ca *inspecttest.CA // the inspection CA; clients trust its root
}

// newInspectFarm is the farm with TLS inspection: allowed.test is
// inspected with methods, paths, DLP and headers; a.wild.test is inspected
// with no constraint; evil.test is inspected by its rule but in
// tls_inspection.bypass; the farm's own rule (a.b.c.wild.test and the
// rest) is spliced. With upstreamCA the origins' test CA is trusted for
// upstreams (upstream_ca_file). configure, when given, changes the config
// last.
func newInspectFarm(t *testing.T, upstreamCA bool, configure ...func(*testenv.Config)) *inspectFarm {
	t.Helper()
	ca, err := inspecttest.WriteCA(t.TempDir(), "inspect")
	if err != nil {
		t.Fatal(err)
	}
	f := newFarmWith(t, "enforce", func(f *farm, c *testenv.Config) {
		c.TLSInspection = inspectConfig(ca, "")
		if upstreamCA {
			c.TLSInspection.UpstreamCAFile = f.caFile
		}
		c.DLP.Profiles = map[string]config.DLPProfile{"strict": {Detectors: []string{"aws_access_key", "github_token"}}}
		c.Policy.Rules = append([]testenv.Rule{
			{Name: "uploads", Hosts: []string{"allowed.test"}, Ports: f.ports(), AllowRanges: []string{"127.0.0.0/24"},
				Inspect: true, DLP: "strict", Methods: []string{"GET", "POST"}, Paths: []string{"/api/v2/*", "/upload"},
				RequestHeadersAdd: map[string]string{"X-Egress-Client-Group": "{group}", "X-Egress-Rule": "{rule}"}},
			{Name: "inspect-open", Hosts: []string{"a.wild.test", "evil.test"}, Ports: f.ports(), AllowRanges: []string{"127.0.0.0/24"}, Inspect: true},
		}, c.Policy.Rules...)
		for _, fn := range configure {
			fn(c)
		}
	})
	return &inspectFarm{farm: f, ca: ca}
}

// inspectConfig is tls_inspection with ca's files and evil.test in bypass.
func inspectConfig(ca *inspecttest.CA, upstream string) config.TLSInspection {
	return config.TLSInspection{CACert: ca.CertFile, CAKey: ca.KeyFile, UpstreamCAFile: upstream, Bypass: []string{"evil.test"}}
}

// curlInspected runs curl trusting the inspection CA's root (not the
// origins' CA: only egressd's leaves can satisfy it).
func (f *inspectFarm) curlInspected(t *testing.T, args ...string) (body, hdr string, code int) {
	t.Helper()
	return f.curl(t, nil, append([]string{"--cacert", f.ca.RootFile}, args...)...)
}

func (f *inspectFarm) url(host, path string) string {
	return fmt.Sprintf("https://%s:%d%s", host, f.tlsPort, path)
}

func (f *farm) assertOriginSawNone(t *testing.T, path string) {
	t.Helper()
	if seen := f.originSaw(path); len(seen) > 0 {
		t.Fatalf("the origin saw %s: %+v", path, seen)
	}
}

// TestInspectCurl: curl through CONNECT and through SOCKS5, trusting the
// inspection CA, reaches the origin through an inspected tunnel: the
// origin sees the request with the rule's headers (a forged one replaced),
// and each inner request has its own access line (inspected, method, path
// without the query, status) beside the tunnel's.
func TestInspectCurl(t *testing.T) {
	f := newInspectFarm(t, true)
	for _, via := range []struct{ name, listener string }{
		{"connect", "connect"}, {"socks5", "socks5"},
	} {
		t.Run(via.name, func(t *testing.T) {
			proxyArgs := []string{"-x", f.proxyURL()}
			if via.name == "socks5" {
				proxyArgs = []string{"--socks5-hostname", f.proc.SOCKSAddr}
			}
			path := "/upload"
			args := append(proxyArgs, "-X", "POST", "--data", "n=1", "-H", "X-Egress-Client-Group: forged",
				f.url("allowed.test", path+"?via="+via.name))
			body, hdr, code := f.curlInspected(t, args...)
			if code != 0 || !strings.Contains(hdr, " 200") {
				t.Fatalf("curl exit %d, headers:\n%s\n%s", code, hdr, body)
			}
			e, err := testenv.ParseEcho([]byte(body))
			if err != nil {
				t.Fatalf("%v: %s", err, body)
			}
			if e.Method != "POST" || e.Query != "via="+via.name || e.SNI != "allowed.test" {
				t.Fatalf("origin saw %+v", e)
			}
			if got := e.Header.Values("X-Egress-Client-Group"); len(got) != 1 || got[0] != "" {
				t.Errorf("origin got X-Egress-Client-Group %q, want egressd's one (empty: no group)", got)
			}
			if got := e.Header.Get("X-Egress-Rule"); got != "uploads" {
				t.Errorf("origin got X-Egress-Rule %q", got)
			}
			inner := f.waitLog(t, map[string]any{"inspected": true, "listener": via.listener, "method": "POST", "path": path,
				"status": 200.0, "host": "allowed.test", "sni": "allowed.test", "rule": "uploads", "decision": "allow"})
			tun := f.waitLog(t, map[string]any{"listener": via.listener, "host": "allowed.test", "sni": "allowed.test", "rule": "uploads"})
			if _, ok := tun["inspected"]; ok && tun["method"] == nil {
				t.Errorf("the tunnel's line is marked inspected: %v", tun)
			}
			if ua, _ := inner["user_agent"].(string); !strings.HasPrefix(ua, "curl/") {
				t.Errorf("inner line's user_agent %q, want curl's", ua)
			}
			if port, _ := inner["client_port"].(float64); port == 0 || port != tun["client_port"] {
				t.Errorf("inner line's client_port %v, the tunnel's %v", inner["client_port"], tun["client_port"])
			}
		})
	}
}

// TestInspectGoClientHTTP2: a Go client through CONNECT, offering h2,
// speaks HTTP/2 to egressd inside the tunnel; several requests share one
// tunnel and each is logged.
func TestInspectGoClientHTTP2(t *testing.T) {
	f := newInspectFarm(t, true)
	tr := &http.Transport{
		Proxy:             http.ProxyURL(f.proc.ProxyURL()),
		DialContext:       f.ns.DialContext,
		TLSClientConfig:   &tls.Config{RootCAs: f.ca.Pool},
		ForceAttemptHTTP2: true,
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	for i := range 3 {
		resp, err := c.Get(f.url("a.wild.test", fmt.Sprintf("/h2/%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
			t.Fatalf("request %d: %s %s", i, resp.Proto, resp.Status)
		}
		f.waitLog(t, map[string]any{"inspected": true, "path": fmt.Sprintf("/h2/%d", i), "status": 200.0, "rule": "inspect-open"})
	}
	// The same through SOCKS5 (golang.org/x/net/proxy), HTTP/1.1 this time.
	d, err := proxy.SOCKS5("tcp", f.proc.SOCKSAddr, nil, nsDialer{f.ns})
	if err != nil {
		t.Fatal(err)
	}
	tr5 := &http.Transport{
		DialContext:     d.(proxy.ContextDialer).DialContext,
		TLSClientConfig: &tls.Config{RootCAs: f.ca.Pool},
	}
	defer tr5.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr5, Timeout: 20 * time.Second}).Get(f.url("a.wild.test", "/socks"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	f.waitLog(t, map[string]any{"inspected": true, "listener": "socks5", "path": "/socks", "status": 200.0})
}

// TestInspectDenials: inside HTTPS, a secret in the body (DLP), a method
// or path the rule does not list, and a Host other than the SNI are
// refused 403 with their reason, through CONNECT and SOCKS5; the origin
// never sees them.
func TestInspectDenials(t *testing.T) {
	f := newInspectFarm(t, true)
	cases := []struct {
		name, path, reason string
		args               []string
	}{
		{"dlp", "/upload", "dlp", []string{"-X", "POST", "--data", "key=" + dlpAWS}},
		{"method", "/upload", "not_allowed", []string{"-X", "DELETE"}},
		{"path", "/admin", "not_allowed", nil},
		{"dot-dot", "/api/v2/%2e%2e/admin", "not_allowed", []string{"--path-as-is"}},
		{"host", "/api/v2/x", "host_mismatch", []string{"-H", "Host: a.wild.test"}},
	}
	for _, via := range []string{"connect", "socks5"} {
		for _, c := range cases {
			t.Run(via+"/"+c.name, func(t *testing.T) {
				proxyArgs := []string{"-x", f.proxyURL()}
				if via == "socks5" {
					proxyArgs = []string{"--socks5-hostname", f.proc.SOCKSAddr}
				}
				args := append(append(proxyArgs, c.args...), f.url("allowed.test", c.path))
				_, hdr, code := f.curlInspected(t, args...)
				if code != 0 || !strings.Contains(hdr, " 403") || !hasHeader(hdr, "X-Egress-Denied", c.reason) {
					t.Fatalf("curl exit %d, headers:\n%s", code, hdr)
				}
				f.waitLog(t, map[string]any{"inspected": true, "listener": via, "path": c.path, "reason": c.reason, "decision": "deny", "status": 403.0})
				f.assertOriginSawNone(t, c.path)
			})
		}
	}
	f.assertOriginSawNone(t, "/admin")
}

// TestInspectUntrustedClient: a client that does not trust the inspection
// CA fails its handshake cleanly (curl: certificate problem, exit 60);
// nothing reaches the origin and the tunnel is logged and counted.
func TestInspectUntrustedClient(t *testing.T) {
	f := newInspectFarm(t, true)
	_, errOut, code := f.curl(t, nil, "-x", f.proxyURL(), f.url("a.wild.test", "/untrusted")) // trusts the origins' CA only
	if code != 60 {
		t.Fatalf("curl exit %d, want 60 (peer certificate cannot be authenticated):\n%s", code, errOut)
	}
	f.waitLog(t, map[string]any{"listener": "connect", "host": "a.wild.test", "sni": "a.wild.test", "status": 200.0})
	f.assertOriginSawNone(t, "/untrusted")
	m := scrapeFarm(t, f.farm)
	if got := m.value(t, "egressd_inspect_handshakes_total", map[string]string{"result": "failed"}); got != 1 {
		t.Fatalf("egressd_inspect_handshakes_total{result=failed} = %v, want 1", got)
	}
}

// TestInspectBypassAndSplice: a name in tls_inspection.bypass and a rule
// without inspect are never terminated: the client sees the origin's own
// certificate, and no inner request is logged.
func TestInspectBypassAndSplice(t *testing.T) {
	f := newInspectFarm(t, true)
	for _, host := range []string{"evil.test", "a.b.c.wild.test"} {
		body, hdr, code := f.curl(t, nil, "-x", f.proxyURL(), f.url(host, "/spliced")) // trusts the origins' CA only
		if code != 0 || !strings.Contains(hdr, " 200") {
			t.Fatalf("%s: curl exit %d:\n%s\n%s", host, code, hdr, body)
		}
		f.waitLog(t, map[string]any{"listener": "connect", "host": host, "sni": host, "status": 200.0})
	}
	for _, l := range f.proc.AccessLines() {
		if l["inspected"] == true {
			t.Fatalf("an inspected line for a spliced tunnel: %v", l)
		}
	}
}

// TestInspectUpstreamCertificate: without upstream_ca_file, the origins'
// test CA is not trusted: a request inside an inspected tunnel gets 502
// with X-Egress-Denied: upstream_tls, never the origin's answer.
func TestInspectUpstreamCertificate(t *testing.T) {
	f := newInspectFarm(t, false)
	_, hdr, code := f.curlInspected(t, "-x", f.proxyURL(), f.url("a.wild.test", "/badcert"))
	if code != 0 || !strings.Contains(hdr, " 502") || !hasHeader(hdr, "X-Egress-Denied", "upstream_tls") {
		t.Fatalf("curl exit %d, headers:\n%s", code, hdr)
	}
	f.waitLog(t, map[string]any{"inspected": true, "path": "/badcert", "reason": "upstream_tls", "status": 502.0})
	f.assertOriginSawNone(t, "/badcert")
}

// TestInspectKeyPermissions: a CA key readable by group or others stops
// egressd at start, naming the key; on reload it is refused and the old
// config keeps serving.
func TestInspectKeyPermissions(t *testing.T) {
	ca, err := inspecttest.WriteCA(t.TempDir(), "inspect")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(ca.KeyFile, 0o640); err != nil {
		t.Fatal(err)
	}
	c := testenv.NewConfig(t)
	c.Listen.HTTP = "127.0.0.1:0"
	c.TLSInspection = inspectConfig(ca, "")
	cfg := writeConfig(t, testenv.YAML(t, c))
	_, errOut, code := run(t, "serve", "--config", cfg)
	if code == 0 || !strings.Contains(errOut, "tls_inspection.ca_key: "+ca.KeyFile+": readable by group or others (mode 0640)") {
		t.Fatalf("serve with a 0640 key: exit %d\n%s", code, errOut)
	}
	_, errOut, code = run(t, "validate", "--config", cfg)
	if code != 1 || !strings.Contains(errOut, "tls_inspection.ca_key") {
		t.Fatalf("validate with a 0640 key: exit %d\n%s", code, errOut)
	}

	f := newInspectFarm(t, true)
	if err := os.Chmod(f.ca.KeyFile, 0o644); err != nil {
		t.Fatal(err)
	}
	f.proc.Signal(syscall.SIGHUP)
	waitFarmReloads(t, f.farm, "error", 1)
	waitStderr(t, f.proc, "readable by group or others")
	body, hdr, code := f.curlInspected(t, "-x", f.proxyURL(), f.url("a.wild.test", "/after-refused-reload"))
	if code != 0 || !strings.Contains(hdr, " 200") {
		t.Fatalf("after a refused reload: curl exit %d\n%s\n%s", code, hdr, body)
	}
}

// hasHeader reports whether curl's dumped headers (HTTP/1.1 or, in lower
// case, HTTP/2) carry name: value.
func hasHeader(hdr, name, value string) bool {
	return strings.Contains(strings.ToLower(hdr), strings.ToLower(name)+": "+strings.ToLower(value))
}

// scrapeFarm reads the farm's /metrics.
func scrapeFarm(t *testing.T, f *farm) metrics {
	t.Helper()
	out, errOut, code := f.ns.Curl(t, "-sS", "--max-time", "10", "--noproxy", "*", "http://"+f.proc.AdminAddr+"/metrics")
	if code != 0 {
		t.Fatalf("scrape: curl exit %d: %s", code, errOut)
	}
	return parseMetrics(t, strings.NewReader(out))
}

// waitFarmReloads waits until the farm counted n reloads with result.
func waitFarmReloads(t *testing.T, f *farm, result string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for reloads(t, f.ns, f.proc.AdminAddr, result) < n {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("egressd did not count %d %s reloads:\n%s", n, result, f.proc.Stderr())
		}
	}
}

// TestInspectDrain: on SIGTERM, inspected tunnels idle between requests
// (HTTP/1.1 and HTTP/2 keep-alive, through CONNECT and SOCKS5) are closed
// at once (HTTP/2 after its GOAWAY), with their tunnel lines (open, with
// log.tunnel_open, and close): the drain does not wait out timeouts.drain
// for them, and egressd exits cleanly.
func TestInspectDrain(t *testing.T) {
	f := newInspectFarm(t, true, func(c *testenv.Config) {
		c.Timeouts.Drain = 15 * time.Second
		c.Log.TunnelOpen = true
	})
	d, err := proxy.SOCKS5("tcp", f.proc.SOCKSAddr, nil, nsDialer{f.ns})
	if err != nil {
		t.Fatal(err)
	}
	transports := map[string]*http.Transport{
		"connect-h1": {Proxy: http.ProxyURL(f.proc.ProxyURL()), DialContext: f.ns.DialContext, TLSClientConfig: &tls.Config{RootCAs: f.ca.Pool}},
		"connect-h2": {Proxy: http.ProxyURL(f.proc.ProxyURL()), DialContext: f.ns.DialContext, TLSClientConfig: &tls.Config{RootCAs: f.ca.Pool}, ForceAttemptHTTP2: true},
		"socks5-h1":  {DialContext: d.(proxy.ContextDialer).DialContext, TLSClientConfig: &tls.Config{RootCAs: f.ca.Pool}},
	}
	for name, tr := range transports {
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 20 * time.Second}).Get(f.url("a.wild.test", "/drain-"+name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close() // the connection stays open, idle
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %s", name, resp.Status)
		}
		f.waitLog(t, map[string]any{"inspected": true, "path": "/drain-" + name, "status": 200.0})
	}
	if err := f.proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := f.proc.Wait(t, 25*time.Second); code != 0 {
		t.Fatalf("egressd exit %d after SIGTERM:\n%s", code, f.proc.Stderr())
	}
	if strings.Contains(f.proc.Stderr(), "drain time over") {
		t.Fatalf("the drain waited out timeouts.drain for idle inspected tunnels:\n%s", f.proc.Stderr())
	}
	// Each tunnel wrote its open line (log.tunnel_open) and its close line.
	events := map[any]int{}
	for _, l := range f.proc.AccessLines() {
		if l["host"] == "a.wild.test" && l["inspected"] == nil {
			events[l["event"]]++
		}
	}
	if events["open"] != len(transports) || events["close"] != len(transports) {
		t.Fatalf("tunnel lines by event %v, want %d open and %d close:\n%v", events, len(transports), len(transports), f.proc.AccessLines())
	}
}

// TestInspectThroughParent: a rule with inspect and via (upstream
// proxies): egressd terminates the tunnel without dialing, and each
// request inside goes to the origin through the parent's CONNECT with its
// credentials; egressd, not the parent, verifies the origin's certificate
// for the name. The inner line names the parent.
func TestInspectThroughParent(t *testing.T) {
	e := newChainEnv(t, chainOptions{})
	ca, err := inspecttest.WriteCA(t.TempDir(), "inspect")
	if err != nil {
		t.Fatal(err)
	}
	// The same environment, partners inspected: egressd restarted with it.
	e.proc.Stop(t, 0)
	e.proc = nil
	cfg := e.config(t, "corp\n      inspect: true", "") + fmt.Sprintf("tls_inspection:\n  ca_cert: %s\n  ca_key: %s\n  upstream_ca_file: %s\n",
		ca.CertFile, ca.KeyFile, e.caFile)
	e.proc = (&testenv.Egressd{Netns: e.ns}).Start(t, cfg)

	target := fmt.Sprintf("app.partner.test:%d", e.partner.Port())
	for _, via := range []string{"connect", "socks5"} {
		t.Run(via, func(t *testing.T) {
			proxyArgs := []string{"-x", e.proxy()}
			if via == "socks5" {
				proxyArgs = []string{"--socks5-hostname", e.proc.SOCKSAddr}
			}
			path := "/inspected-via-" + via
			out, errOut, code := e.curl(t, append(proxyArgs, "--cacert", ca.RootFile, e.partnerURL("app.partner.test", path))...)
			if code != 0 {
				t.Fatalf("curl exit %d: %s", code, errOut)
			}
			echo, err := testenv.ParseEcho([]byte(out))
			if err != nil || echo.Path != path || echo.SNI != "app.partner.test" {
				t.Fatalf("origin saw %+v (%v)", echo, err)
			}
			// egressd's own DNS does not know the name: the origin was
			// reached through the parent's tunnel (pooled: one CONNECT
			// may carry both subtests' requests).
			reqs := e.parentRequests(target)
			if len(reqs) == 0 {
				t.Fatalf("the parent saw no CONNECT %s: %+v", target, e.parent.Requests())
			}
			for _, r := range reqs {
				if r.Method != http.MethodConnect || r.ProxyAuthorization != wantBasic() {
					t.Fatalf("parent request %+v", r)
				}
			}
			e.proc.WaitForLog(t, testenv.Fields(map[string]any{"inspected": true, "listener": via, "path": path,
				"host": "app.partner.test", "via": "corp", "status": 200, "decision": "allow", "rule": "partners"}))
		})
	}
}
