package test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/net/proxy"

	"github.com/egressd/egressd/test/testenv"
)

// Passwords of the test users. The tests check that none of them, nor their
// Basic encoding, ever shows up in egressd's output.
const (
	alicePass = "alice-Secret-1"
	bobPass   = "bob-Secret-2"
	wrongPass = "not-the-Password"
)

// authEnv is egressd with auth.users_file in its own namespace: web.test
// for everyone, admin.test for the group of user alice, local.test for the
// group of clients from 127.0.0.1.
type authEnv struct {
	ns        *testenv.Netns
	ca        *testenv.CA
	caFile    string
	web       *testenv.Origin // plain HTTP, 127.0.0.3
	tls       *testenv.Origin // HTTPS, 127.0.0.2
	proc      *testenv.Proc
	usersFile string
}

// writeUsers writes an htpasswd file (bcrypt; the minimum cost keeps the
// tests fast, the format is what htpasswd -B writes).
func writeUsers(t *testing.T, path string, userPass ...string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("# egressd test users\n")
	for i := 0; i < len(userPass); i += 2 {
		h, err := bcrypt.GenerateFromPassword([]byte(userPass[i+1]), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s:%s\n", userPass[i], strings.Replace(string(h), "$2a$", "$2y$", 1))
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

func newAuthEnv(t *testing.T, required bool) *authEnv {
	t.Helper()
	e := &authEnv{}
	e.ns = testenv.NewNetns(t)
	e.ca = testenv.NewCA(t)
	e.caFile = e.ca.WritePEM(t.TempDir())
	e.web = testenv.HTTPOriginIn(t, e.ns, "127.0.0.3", "web")
	e.tls = testenv.TLSOriginIn(t, e.ns, e.ca, "127.0.0.2", "web.test")
	dns := testenv.NewDNSServerIn(t, e.ns, "127.0.0.53")
	for _, n := range []string{"admin.test", "local.test"} {
		dns.Set(n, 60, netip.MustParseAddr("127.0.0.3"))
	}
	dns.Set("web.test", 60, netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3"))
	e.usersFile = filepath.Join(t.TempDir(), "users.htpasswd")
	writeUsers(t, e.usersFile, "alice", alicePass, "bob", bobPass)
	c := testenv.NewConfig(t)
	c.Listen = testenv.Listeners(t, e.ns, "127.0.0.1")
	c.DNS.Servers = []string{dns.Addr()}
	c.Auth.UsersFile = e.usersFile
	c.Auth.Required = required
	c.Auth.CacheTTL = time.Minute
	c.Timeouts.Handshake = 3 * time.Second
	c.Timeouts.Connect = 2 * time.Second
	c.Policy.Mode = "enforce"
	c.Policy.DenyRanges = []string{"default"}
	c.Policy.TLSPorts = []int{e.tls.Port()}
	c.Policy.Groups = map[string]testenv.Group{
		"admins": {Users: []string{"alice"}},
		"local":  {CIDRs: []string{"127.0.0.1/32"}},
	}
	c.Policy.Rules = []testenv.Rule{
		{Name: "public", Hosts: []string{"web.test"}, Ports: []int{e.tls.Port(), e.web.Port()}, AllowRanges: []string{"127.0.0.0/24"}},
		{Name: "admin-only", Groups: []string{"admins"}, Hosts: []string{"admin.test"}, Ports: []int{e.web.Port()}, AllowRanges: []string{"127.0.0.0/24"}},
		{Name: "local-only", Groups: []string{"local"}, Hosts: []string{"local.test"}, Ports: []int{e.web.Port()}, AllowRanges: []string{"127.0.0.0/24"}},
	}
	e.proc = (&testenv.Egressd{Netns: e.ns}).StartConfig(t, c)
	t.Cleanup(func() { assertNoSecrets(t, e.proc) })
	return e
}

// assertNoSecrets fails if a password, or a Basic credential carrying one,
// appears in egressd's stdout or stderr.
func assertNoSecrets(t *testing.T, p *testenv.Proc) {
	t.Helper()
	out := strings.Join(p.Stdout(), "\n") + p.Stderr()
	for _, user := range []string{"alice", "bob"} {
		for _, pass := range []string{alicePass, bobPass, wrongPass} {
			basic := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
			if strings.Contains(out, pass) || strings.Contains(out, basic) {
				t.Errorf("egressd's output contains a password or credentials")
				return
			}
		}
	}
}

// curl runs curl in the namespace with the test CA and returns its output,
// the response headers (on stderr, with curl's errors) and its exit code.
func (e *authEnv) curl(t *testing.T, args ...string) (out, hdr string, code int) {
	t.Helper()
	return e.ns.Curl(t, append([]string{"-sS", "--max-time", "20", "--cacert", e.caFile, "-D", "/dev/stderr"}, args...)...)
}

// scrape reads egressd's /metrics from inside the namespace.
func (e *authEnv) scrape(t *testing.T) metrics {
	t.Helper()
	out, errOut, code := e.ns.Curl(t, "-sS", "--max-time", "10", "--noproxy", "*", "http://"+e.proc.AdminAddr+"/metrics")
	if code != 0 {
		t.Fatalf("scrape: curl exit %d: %s", code, errOut)
	}
	return parseMetrics(t, strings.NewReader(out))
}

// TestAuthRequiredHTTP: with auth.required, HTTP and CONNECT without or
// with wrong credentials get 407 with Proxy-Authenticate and reason
// auth_required; right ones (curl --proxy-user) pass, and the user drives
// group membership.
func TestAuthRequiredHTTP(t *testing.T) {
	e := newAuthEnv(t, true)
	web := fmt.Sprintf("http://web.test:%d/", e.web.Port())
	webTLS := fmt.Sprintf("https://web.test:%d/", e.tls.Port())
	admin := fmt.Sprintf("http://admin.test:%d/", e.web.Port())
	local := fmt.Sprintf("http://local.test:%d/", e.web.Port())
	cases := []struct {
		name string
		args []string
		code int    // curl exit code
		hdr  string // a response header line curl must show ("" none)
		log  map[string]any
	}{
		{name: "missing", args: []string{web}, hdr: "HTTP/1.1 407",
			log: map[string]any{"listener": "http", "user": "", "decision": "deny", "reason": "auth_required", "status": 407}},
		{name: "missing, connect", args: []string{webTLS}, code: 56, hdr: "HTTP/1.1 407",
			log: map[string]any{"listener": "connect", "user": "", "decision": "deny", "reason": "auth_required", "status": 407}},
		{name: "wrong password", args: []string{"--proxy-user", "alice:" + wrongPass, web}, hdr: "HTTP/1.1 407",
			log: map[string]any{"listener": "http", "user": "", "reason": "auth_required"}},
		{name: "unknown user", args: []string{"--proxy-user", "mallory:" + alicePass, web}, hdr: "HTTP/1.1 407",
			log: map[string]any{"listener": "http", "user": "", "reason": "auth_required"}},
		{name: "right password", args: []string{"--proxy-user", "alice:" + alicePass, web}, hdr: "HTTP/1.1 200",
			log: map[string]any{"listener": "http", "user": "alice", "decision": "allow", "rule": "public"}},
		{name: "right password, connect", args: []string{"--proxy-user", "bob:" + bobPass, webTLS}, hdr: "HTTP/1.1 200",
			log: map[string]any{"listener": "connect", "user": "bob", "decision": "allow", "rule": "public", "sni": "web.test"}},
		{name: "group by user", args: []string{"--proxy-user", "alice:" + alicePass, admin}, hdr: "HTTP/1.1 200",
			log: map[string]any{"listener": "http", "user": "alice", "host": "admin.test", "decision": "allow", "rule": "admin-only", "group": "admins"}},
		{name: "user not in the group", args: []string{"--proxy-user", "bob:" + bobPass, admin}, hdr: "HTTP/1.1 403",
			log: map[string]any{"listener": "http", "user": "bob", "host": "admin.test", "decision": "deny", "reason": "not_allowed"}},
		// alice is in admins (by user) and in local (by address): rules of
		// every group she is in apply.
		{name: "every matching group", args: []string{"--proxy-user", "alice:" + alicePass, local}, hdr: "HTTP/1.1 200",
			log: map[string]any{"listener": "http", "user": "alice", "host": "local.test", "decision": "allow", "rule": "local-only", "group": "local"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			skip := len(e.proc.AccessLines())
			out, hdr, code := e.curl(t, append([]string{"-x", e.proc.ProxyURL().String()}, tc.args...)...)
			if code != tc.code {
				t.Fatalf("curl exit %d, want %d\n%s\n%s", code, tc.code, hdr, out)
			}
			if !strings.Contains(hdr, tc.hdr) {
				t.Fatalf("no %q in the response headers:\n%s", tc.hdr, hdr)
			}
			if strings.Contains(tc.hdr, "407") {
				if !strings.Contains(hdr, `Proxy-Authenticate: Basic realm="egressd"`) || !strings.Contains(hdr, "X-Egress-Denied: auth_required") {
					t.Errorf("407 without Proxy-Authenticate or reason:\n%s", hdr)
				}
			}
			waitLogAfter(t, e.proc, skip, tc.log)
		})
	}
	if n := e.web.Count() + e.tls.Count(); n != 4 {
		t.Errorf("origins served %d requests, want the 4 authenticated and allowed ones", n)
	}
}

// TestAuthRequiredSOCKS: RFC 1929 with curl and golang.org/x/net/proxy.
func TestAuthRequiredSOCKS(t *testing.T) {
	e := newAuthEnv(t, true)
	web := fmt.Sprintf("http://web.test:%d/s", e.web.Port())
	admin := fmt.Sprintf("http://admin.test:%d/s", e.web.Port())
	cases := []struct {
		name string
		args []string
		code int
		log  map[string]any
	}{
		{name: "missing", args: []string{web}, code: 97,
			log: map[string]any{"user": "", "decision": "deny", "reason": "auth_required", "status": 255}},
		{name: "wrong password", args: []string{"--proxy-user", "alice:" + wrongPass, web}, code: 97,
			log: map[string]any{"user": "alice", "decision": "deny", "reason": "auth_required", "status": 1}},
		{name: "right password", args: []string{"--proxy-user", "alice:" + alicePass, web},
			log: map[string]any{"user": "alice", "host": "web.test", "decision": "allow", "rule": "public"}},
		{name: "group by user", args: []string{"--proxy-user", "alice:" + alicePass, admin},
			log: map[string]any{"user": "alice", "host": "admin.test", "decision": "allow", "rule": "admin-only", "group": "admins"}},
		{name: "user not in the group", args: []string{"--proxy-user", "bob:" + bobPass, admin}, code: 97,
			log: map[string]any{"user": "bob", "host": "admin.test", "decision": "deny", "reason": "not_allowed"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			skip := len(e.proc.AccessLines())
			out, hdr, code := e.curl(t, append([]string{"--fail", "--socks5-hostname", e.proc.SOCKSAddr}, tc.args...)...)
			if code != tc.code {
				t.Fatalf("curl exit %d, want %d\n%s\n%s", code, tc.code, hdr, out)
			}
			tc.log["listener"] = "socks5"
			waitLogAfter(t, e.proc, skip, tc.log)
		})
	}

	get := func(auth *proxy.Auth) error {
		hc := httpVia(t, xnetSOCKS(t, e.ns, e.proc.SOCKSAddr, auth), nil)
		resp, err := hc.Get(web)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	if err := get(&proxy.Auth{User: "bob", Password: bobPass}); err != nil {
		t.Errorf("x/net/proxy with credentials: %v", err)
	}
	if err := get(&proxy.Auth{User: "bob", Password: wrongPass}); err == nil {
		t.Error("x/net/proxy with a wrong password succeeded")
	}
	if err := get(nil); err == nil || !strings.Contains(err.Error(), "no acceptable authentication methods") {
		t.Errorf("x/net/proxy without credentials: %v, want no acceptable methods", err)
	}
}

// TestAuthOptional: without auth.required, anonymous clients are served
// (and only rules for any client apply to them), credentials offered are
// checked, and wrong ones are refused rather than ignored.
func TestAuthOptional(t *testing.T) {
	e := newAuthEnv(t, false)
	web := fmt.Sprintf("http://web.test:%d/o", e.web.Port())
	admin := fmt.Sprintf("http://admin.test:%d/o", e.web.Port())
	px := e.proc.ProxyURL().String()
	cases := []struct {
		name string
		args []string
		code int
		log  map[string]any
	}{
		{name: "http anonymous", args: []string{"-x", px, web},
			log: map[string]any{"listener": "http", "user": "", "host": "web.test", "decision": "allow"}},
		{name: "http anonymous to a users-only rule", args: []string{"-x", px, admin}, code: 22,
			log: map[string]any{"listener": "http", "user": "", "host": "admin.test", "reason": "not_allowed"}},
		{name: "http wrong password", args: []string{"-x", px, "--proxy-user", "alice:" + wrongPass, web}, code: 22,
			log: map[string]any{"listener": "http", "reason": "auth_required", "status": 407}},
		{name: "http user", args: []string{"-x", px, "--proxy-user", "alice:" + alicePass, admin},
			log: map[string]any{"listener": "http", "user": "alice", "host": "admin.test", "decision": "allow", "group": "admins"}},
		{name: "socks5 anonymous", args: []string{"--socks5-hostname", e.proc.SOCKSAddr, web},
			log: map[string]any{"listener": "socks5", "user": "", "host": "web.test", "decision": "allow"}},
		{name: "socks5 anonymous to a users-only rule", args: []string{"--socks5-hostname", e.proc.SOCKSAddr, admin}, code: 97,
			log: map[string]any{"listener": "socks5", "user": "", "host": "admin.test", "reason": "not_allowed"}},
		// curl offers "no authentication" before username/password;
		// egressd still picks username/password, so alice is alice.
		{name: "socks5 user", args: []string{"--socks5-hostname", e.proc.SOCKSAddr, "--proxy-user", "alice:" + alicePass, admin},
			log: map[string]any{"listener": "socks5", "user": "alice", "host": "admin.test", "decision": "allow", "group": "admins"}},
		{name: "socks5 wrong password", args: []string{"--socks5-hostname", e.proc.SOCKSAddr, "--proxy-user", "alice:" + wrongPass, web}, code: 97,
			log: map[string]any{"listener": "socks5", "user": "alice", "reason": "auth_required", "status": 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			skip := len(e.proc.AccessLines())
			out, hdr, code := e.curl(t, append([]string{"--fail"}, tc.args...)...)
			if code != tc.code {
				t.Fatalf("curl exit %d, want %d\n%s\n%s", code, tc.code, hdr, out)
			}
			waitLogAfter(t, e.proc, skip, tc.log)
		})
	}
	// x/net/proxy also offers "no authentication" first.
	hc := httpVia(t, xnetSOCKS(t, e.ns, e.proc.SOCKSAddr, &proxy.Auth{User: "alice", Password: alicePass}), nil)
	resp, err := hc.Get(admin)
	if err != nil {
		t.Fatalf("x/net/proxy as alice: %v", err)
	}
	resp.Body.Close()
}

// TestAuthKeepAlive: a keep-alive client (Go's Transport with credentials
// in the proxy URL) authenticates every request, and every request is
// logged with its user.
func TestAuthKeepAlive(t *testing.T) {
	e := newAuthEnv(t, true)
	u := e.proc.ProxyURL()
	u.User = url.UserPassword("bob", bobPass)
	tr := &http.Transport{Proxy: http.ProxyURL(u), DialContext: e.ns.DialContext, TLSClientConfig: &tls.Config{RootCAs: e.ca.CertPool()}}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	for i := range 5 {
		resp, err := c.Get(fmt.Sprintf("http://web.test:%d/ka%d", e.web.Port(), i))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
	}
	if n := e.web.Conns(); n != 1 {
		t.Logf("origin saw %d connections (keep-alive to the origin is best effort)", n)
	}
	lines := 0
	for _, l := range e.proc.AccessLines() {
		if l["user"] == "bob" && l["listener"] == "http" {
			lines++
		}
	}
	if lines < 4 { // the fifth may still be in the access log's buffer
		e.proc.WaitForLog(t, testenv.Fields(map[string]any{"user": "bob", "listener": "http"}))
	}
}

// reloads reads egressd_config_reloads_total{result} from /metrics.
func reloads(t *testing.T, ns *testenv.Netns, admin, result string) int {
	t.Helper()
	tr := &http.Transport{DialContext: ns.DialContext, DisableKeepAlives: true, Proxy: nil}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	re := regexp.MustCompile(`^egressd_config_reloads_total\{result="` + result + `"\} (\d+)`)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			n, _ := strconv.Atoi(m[1])
			return n
		}
	}
	return 0
}

// waitReloads waits, bounded, until egressd counted n reloads with result.
func waitReloads(t *testing.T, e *authEnv, result string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for reloads(t, e.ns, e.proc.AdminAddr, result) < n {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("egressd did not count %d %s reloads:\n%s", n, result, e.proc.Stderr())
		}
	}
}

// TestAuthUsersReload: the users file is read again on reload (SIGHUP): a
// changed password applies at once (the cached success of the old one does
// not survive, nor the remembered failure of the new one), a user added can
// log in at once (though refused, and remembered, as unknown just before);
// a file that does not load keeps the old users in force.
func TestAuthUsersReload(t *testing.T) {
	e := newAuthEnv(t, true)
	web := fmt.Sprintf("http://web.test:%d/r", e.web.Port())
	tryAs := func(user, pass string) string {
		_, hdr, _ := e.curl(t, "-x", e.proc.ProxyURL().String(), "--proxy-user", user+":"+pass, web)
		return strings.SplitN(hdr, "\r\n", 2)[0]
	}
	try := func(pass string) string { return tryAs("alice", pass) }
	const newPass, carolPass = "alice-New-3", "carol-Added-5"
	if got := try(alicePass); !strings.Contains(got, "200") {
		t.Fatalf("before reload: %s", got)
	}
	before := e.scrape(t).series("egressd_auth_checks_total")
	for range 2 { // the second answer comes from the remembered failure
		if got := try(newPass); !strings.Contains(got, "407") {
			t.Fatalf("the next password before reload: %s", got)
		}
		if got := tryAs("carol", carolPass); !strings.Contains(got, "407") {
			t.Fatalf("a user not yet in the file: %s", got)
		}
	}
	after := e.scrape(t).series("egressd_auth_checks_total")
	for series, want := range map[string]float64{
		"result=fail,source=bcrypt": 2, // the first try of each
		"result=fail,source=cache":  2, // the second: no bcrypt check
		"result=ok,source=bcrypt":   0,
		"result=ok,source=cache":    0,
	} {
		if got := after[series] - before[series]; got != want {
			t.Errorf("egressd_auth_checks_total{%s} rose by %v, want %v (before %v, after %v)", series, got, want, before, after)
		}
	}
	writeUsers(t, e.usersFile, "alice", newPass, "bob", bobPass, "carol", carolPass)
	e.proc.Signal(syscall.SIGHUP)
	waitReloads(t, e, "success", 1)
	if got := try(alicePass); !strings.Contains(got, "407") {
		t.Errorf("old password after reload: %s", got)
	}
	if got := try(newPass); !strings.Contains(got, "200") {
		t.Errorf("new password after reload: %s", got)
	}
	if got := tryAs("carol", carolPass); !strings.Contains(got, "200") {
		t.Errorf("the user added by the reload: %s", got)
	}
	// A broken users file: the reload is refused, alice keeps working.
	if err := os.WriteFile(e.usersFile, []byte("alice:$apr1$abc$0123456789abcdefghijkl\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.proc.Signal(syscall.SIGHUP)
	waitReloads(t, e, "error", 1)
	if got := try(newPass); !strings.Contains(got, "200") {
		t.Errorf("after a refused reload: %s", got)
	}
	waitStderr(t, e.proc, "users.htpasswd:1: user") // the line, in JSON
	if !strings.Contains(e.proc.Stderr(), "MD5 (apr1) hash: only bcrypt") {
		t.Errorf("the error does not name the hash type:\n%s", e.proc.Stderr())
	}
}

// waitStderr waits, bounded, until egressd's diagnostics contain s.
func waitStderr(t *testing.T, p *testenv.Proc, s string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !strings.Contains(p.Stderr(), s) {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("egressd never logged %q:\n%s", s, p.Stderr())
		}
	}
}

// TestAuthUsersFileWatch: replacing the users file (write a new one, rename
// it into place, as a deployment tool does) reloads it without a signal.
func TestAuthUsersFileWatch(t *testing.T) {
	e := newAuthEnv(t, true)
	web := fmt.Sprintf("http://web.test:%d/w", e.web.Port())
	try := func(pass string) string {
		_, hdr, _ := e.curl(t, "-x", e.proc.ProxyURL().String(), "--proxy-user", "alice:"+pass, web)
		return strings.SplitN(hdr, "\r\n", 2)[0]
	}
	const newPass = "alice-Watched-4"
	staged := e.usersFile + ".new"
	writeUsers(t, staged, "alice", newPass, "bob", bobPass)
	if err := os.Rename(staged, e.usersFile); err != nil {
		t.Fatal(err)
	}
	waitReloads(t, e, "success", 1)
	if got := try(newPass); !strings.Contains(got, "200") {
		t.Errorf("new password after the file changed: %s", got)
	}
	if got := try(alicePass); !strings.Contains(got, "407") {
		t.Errorf("old password after the file changed: %s", got)
	}
}

// endlessHash is a well-formed bcrypt hash of the highest cost bcrypt
// allows (2^31 rounds: days of CPU): a check against it holds its slot for
// the whole test.
const endlessHash = "$2a$31$gpVmaN8TqL4/V4bV.epeKOiaupMtt3GZmqZKuWGKRUmSVj/rLCBZm"

// TestAuthOverload: with auth.max_concurrent_checks: 1, a credential check
// that finds the one bcrypt slot taken waits timeouts.handshake, then is
// refused: 407 over HTTP, the RFC 1929 failure over SOCKS5 (curl exit 97),
// with an auth_required line each and egressd_auth_checks_total{result=
// "overload"}. The slot is taken by whichever check comes first and never
// ends during the test: the only user's hash has bcrypt's highest cost,
// and unknown users are checked against it too.
func TestAuthOverload(t *testing.T) {
	ns := testenv.NewNetns(t)
	web := testenv.HTTPOriginIn(t, ns, "127.0.0.3", "web")
	dns := testenv.NewDNSServerIn(t, ns, "127.0.0.53")
	dns.Set("web.test", 60, netip.MustParseAddr("127.0.0.3"))
	users := filepath.Join(t.TempDir(), "users.htpasswd")
	if err := os.WriteFile(users, []byte("slow:"+endlessHash+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := testenv.NewConfig(t)
	c.Listen = testenv.Listeners(t, ns, "127.0.0.1")
	c.DNS.Servers = []string{dns.Addr()}
	c.Auth.UsersFile = users
	c.Auth.Required = true
	c.Auth.MaxConcurrentChecks = 1
	c.Timeouts.Handshake = time.Second
	c.Timeouts.Connect = 2 * time.Second
	c.Timeouts.Drain = time.Second
	c.Policy.Mode = "enforce"
	c.Policy.DenyRanges = []string{"default"}
	c.Policy.Rules = []testenv.Rule{
		{Name: "public", Hosts: []string{"web.test"}, Ports: []int{web.Port()}, AllowRanges: []string{"127.0.0.0/24"}},
	}
	p := (&testenv.Egressd{Netns: ns}).StartConfig(t, c)
	url := fmt.Sprintf("http://web.test:%d/", web.Port())

	type answer struct {
		front    string
		out, err string
		code     int
	}
	clients := []struct{ front, creds string }{
		{"http", "slow:a"}, {"http", "mallory:b"}, {"socks5", "slow:c"}, {"socks5", "eve:d"},
	}
	answers := make(chan answer, len(clients))
	for _, c := range clients {
		go func() {
			args := []string{"-sS", "--max-time", "3", "--proxy-user", c.creds, "-o", "/dev/null", "-w", "%{http_code}"}
			if c.front == "http" {
				args = append(args, "-x", "http://"+p.HTTPAddr)
			} else {
				args = append(args, "--socks5-hostname", p.SOCKSAddr)
			}
			out, errOut, code := ns.Curl(t, append(args, url)...)
			answers <- answer{c.front, out, errOut, code}
		}()
	}
	held, refused := 0, map[string]int{}
	for range clients {
		a := <-answers
		switch {
		case a.code == 28:
			held++ // the check that took the slot: no answer in time
		case a.front == "http" && a.code == 0 && a.out == "407":
			refused["http"]++
		case a.front == "socks5" && a.code == 97:
			refused["socks5"]++
		default:
			t.Errorf("%s client: curl exit %d, %q %s", a.front, a.code, a.out, a.err)
		}
	}
	if held != 1 || refused["http"] < 1 || refused["socks5"] < 1 {
		t.Fatalf("%d clients held, refused %v; want one held and the others refused, on both front ends", held, refused)
	}
	if web.Count() != 0 {
		t.Fatalf("the origin served %d requests", web.Count())
	}
	scrapeOut, errOut, code := ns.Curl(t, "-sS", "--max-time", "10", "--noproxy", "*", "http://"+p.AdminAddr+"/metrics")
	if code != 0 {
		t.Fatalf("scrape: curl exit %d: %s", code, errOut)
	}
	m := parseMetrics(t, strings.NewReader(scrapeOut))
	if got := m.value(t, "egressd_auth_checks_total", map[string]string{"source": "bcrypt", "result": "overload"}); got != 3 {
		t.Errorf("egressd_auth_checks_total{source=bcrypt,result=overload} = %v, want 3", got)
	}
	n := 0
	for _, l := range p.AccessLines() {
		if l["reason"] == "auth_required" && l["decision"] == "deny" {
			n++
		}
	}
	if n != 3 {
		t.Errorf("%d auth_required lines, want 3 (the overloaded checks)", n)
	}
}
