package test

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/test/testenv"
)

// Addresses of the upstream-proxy tests, inside their namespace.
const (
	chainPartnerIP = "127.0.0.4"  // TLS origin of *.partner.test: egressd's DNS does not know it, only the parents do
	chainWebIP     = "127.0.0.5"  // plain HTTP origin of web.partner.test, likewise
	chainDirectIP  = "127.0.0.2"  // TLS origin of direct.test, a rule without via
	chainParentIP  = "10.1.2.3"   // the recording parent: a private address, which is fine for a parent
	chainParentDNS = "127.0.0.54" // the parents' DNS, on port 53 (Squid takes no port): on-premises names
	chainDeadIP    = "127.0.0.9"  // nothing listens: a parent URL that is down
	chainBannerIP  = "127.0.0.6"  // the server-first origin of ssh.partner.test (chainOptions.banner)

	// chainBanner is what the server-first origin sends first.
	chainBanner = "SSH-2.0-egressd-test\r\n"

	chainUser     = "egress"
	chainPassword = "pa55-Corp-Proxy-7c1e"
)

// chainEnv is egressd with parent proxies in one namespace: a recording
// parent (corp: a dead first URL, then the parent, with credentials), a
// parent whose every URL is down (down), and optionally Squid (squid).
type chainEnv struct {
	ns      *testenv.Netns
	ca      *testenv.CA
	caFile  string
	partner *testenv.Origin // https://app.partner.test (chainPartnerIP)
	web     *testenv.Origin // http://web.partner.test (chainWebIP)
	direct  *testenv.Origin // https://direct.test (chainDirectIP)
	dns     *testenv.DNSServer
	pdns    *testenv.DNSServer // the parents' DNS
	parent  *testenv.Parent
	squid   *testenv.Squid
	honey   *testenv.Honeypot
	banner  net.Listener // the server-first origin, with chainOptions.banner
	proc    *testenv.Proc
	pwFile  string
	cfg     string // the config egressd started with
}

type chainOptions struct {
	squid  bool
	refuse func(target string) int // the recording parent's refusals
	// banner starts a server-first origin for ssh.partner.test (it sends
	// chainBanner, then echoes), reached only through corp, whose 200 to
	// it carries the banner in the same write.
	banner bool
}

func newChainEnv(t *testing.T, o chainOptions) *chainEnv {
	t.Helper()
	e := &chainEnv{}
	e.ns = testenv.NewNetns(t, chainParentIP+"/32", privateIP+"/32", metadataIP+"/32")
	e.ca = testenv.NewCA(t)
	e.caFile = e.ca.WritePEM(t.TempDir())
	e.partner = testenv.TLSOriginIn(t, e.ns, e.ca, chainPartnerIP, "app.partner.test", "refused.partner.test", "auth.partner.test", "app.audited.test", "blocked.audited.test")
	e.web = testenv.HTTPOriginIn(t, e.ns, chainWebIP, "web")
	e.direct = testenv.TLSOriginIn(t, e.ns, e.ca, chainDirectIP, "direct.test")
	e.honey = e.ns.Honeypot(t, fmt.Sprintf("%s:%d", metadataIP, e.partner.Port()), fmt.Sprintf("%s:%d", privateIP, e.partner.Port()))
	t.Cleanup(func() { e.honey.AssertNone(t) })

	// egressd's own DNS knows direct.test only; the partner names exist
	// only for the parents.
	e.dns = testenv.NewDNSServerIn(t, e.ns, "127.0.0.53")
	e.dns.Set("direct.test", 60, netip.MustParseAddr(chainDirectIP))
	pdns, err := testenv.StartDNSServerAt(t, e.ns, chainParentDNS+":53")
	if err != nil {
		t.Fatal(err)
	}
	e.pdns = pdns
	for _, n := range []string{"app.partner.test", "refused.partner.test", "auth.partner.test", "app.audited.test", "blocked.audited.test"} {
		pdns.Set(n, 60, netip.MustParseAddr(chainPartnerIP))
	}
	pdns.Set("web.partner.test", 60, netip.MustParseAddr(chainWebIP))
	pdns.Set("web.audited.test", 60, netip.MustParseAddr(chainWebIP))

	po := testenv.ParentOptions{
		Hosts: map[string]string{
			"app.partner.test": chainPartnerIP, "refused.partner.test": chainPartnerIP, "auth.partner.test": chainPartnerIP,
			"web.partner.test": chainWebIP,
		},
		Credentials: chainUser + ":" + chainPassword,
		Refuse:      o.refuse,
	}
	if o.banner {
		e.banner = startBannerOrigin(t, e.ns, chainBannerIP+":0")
		po.Hosts["ssh.partner.test"] = chainBannerIP
		po.AnswerWithFirstBytes = func(target string) bool { return strings.HasPrefix(target, "ssh.partner.test:") }
	}
	e.parent = testenv.NewParentIn(t, e.ns, chainParentIP, po)
	if o.squid {
		e.squid = testenv.StartSquid(t, e.ns, "127.0.0.1", testenv.SquidOptions{
			DNS: chainParentDNS, User: chainUser, Password: chainPassword, Deny: []string{"blocked.audited.test"},
		})
	}
	e.pwFile = filepath.Join(t.TempDir(), "corp.pass")
	if err := os.WriteFile(e.pwFile, []byte(chainPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.cfg = e.config(t, "corp", "")
	e.proc = (&testenv.Egressd{Netns: e.ns}).Start(t, e.cfg)
	return e
}

// config is the test config; partnersVia is the via of rule partners,
// extraParents more upstream_proxies entries.
func (e *chainEnv) config(t *testing.T, partnersVia, extraParents string) string {
	t.Helper()
	tls, web, direct := e.partner.Port(), e.web.Port(), e.direct.Port()
	squid := ""
	if e.squid != nil {
		squid = fmt.Sprintf(`  squid:
    urls: [%q]
    username: %s
    password_file: %s
`, e.squid.URL(), chainUser, e.pwFile)
	}
	audited := ""
	if e.squid != nil {
		audited = fmt.Sprintf("    - name: audited\n      hosts: [\"*.audited.test\"]\n      ports: [%d, %d]\n      via: squid\n", tls, web)
	}
	listen := ""
	if e.proc != nil {
		listen = fmt.Sprintf("  http: %q\n  socks5: %q\n  admin: %q\n", e.proc.HTTPAddr, e.proc.SOCKSAddr, e.proc.AdminAddr)
	} else {
		listen = fmt.Sprintf("  http: %q\n  socks5: %q\n  admin: %q\n", e.ns.FreeAddr(t, "127.0.0.1"), e.ns.FreeAddr(t, "127.0.0.1"), e.ns.FreeAddr(t, "127.0.0.1"))
	}
	if e.banner != nil {
		audited += fmt.Sprintf("    - name: banner\n      hosts: [\"ssh.partner.test\"]\n      ports: [%d]\n      via: corp\n", e.banner.Addr().(*net.TCPAddr).Port)
	}
	via := ""
	if partnersVia != "" {
		via = "      via: " + partnersVia + "\n"
	}
	return strings.NewReplacer(
		"{listen}", listen, "{dns}", e.dns.Addr(),
		"{dead1}", e.ns.FreeAddr(t, chainDeadIP), "{dead2}", e.ns.FreeAddr(t, chainDeadIP), "{dead3}", e.ns.FreeAddr(t, chainDeadIP),
		"{parent}", e.parent.URL(), "{user}", chainUser, "{pwfile}", e.pwFile,
		"{squid}", squid, "{extra}", extraParents, "{via}", via, "{audited}", audited,
		"{tls}", fmt.Sprint(tls), "{web}", fmt.Sprint(web), "{direct}", fmt.Sprint(direct),
		"{partnerIP}", chainPartnerIP, "{directIP}", chainDirectIP,
	).Replace(`listen:
{listen}dns:
  servers: ["{dns}"]
log:
  level: debug   # every diagnostic, so the password check sees them all
timeouts:
  handshake: 3s
  connect: 3s
  drain_delay: 0s
  drain: 2s
upstream_proxies:
  corp:
    urls: ["http://{dead1}", "{parent}"]   # the first is down: failover
    username: {user}
    password_file: {pwfile}
    connect_timeout: 2s
  down:
    urls: ["http://{dead2}", "http://{dead3}"]
    connect_timeout: 1s
{squid}{extra}policy:
  mode: enforce
  deny_ranges: [default]
  tls_ports: [{tls}, {direct}]
  rules:
    - name: no-paste
      action: deny
      hosts: ["paste.partner.test"]
    - name: partners
      hosts: ["*.partner.test"]
      ports: [{tls}, {web}]
{via}    - name: partner-ips
      cidrs: ["{partnerIP}/32", "169.254.0.0/16", "10.0.0.0/8"]
      ports: [{tls}]
      via: corp
    - name: unreachable
      hosts: ["*.down.test"]
      ports: [{tls}, {web}]
      via: down
{audited}    - name: direct
      hosts: ["direct.test"]
      ports: [{direct}]
      allow_ranges: ["{directIP}/32"]
`)
}

// curl runs curl in the namespace with the test CA; -D sends the response
// heads to stderr.
func (e *chainEnv) curl(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	all := append([]string{"-q", "-sS", "--max-time", "20", "--cacert", e.caFile, "-D", "/dev/stderr"}, args...)
	cmd := e.ns.Command(ctx, "curl", all...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), errb.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("curl: %v", err)
	}
	return out.String(), errb.String(), 0
}

func (e *chainEnv) proxy() string { return "http://" + e.proc.HTTPAddr }

func (e *chainEnv) socks() string { return "socks5h://" + e.proc.SOCKSAddr }

func (e *chainEnv) partnerURL(host, path string) string {
	return fmt.Sprintf("https://%s:%d%s", host, e.partner.Port(), path)
}

func (e *chainEnv) webURL(host, path string) string {
	return fmt.Sprintf("http://%s:%d%s", host, e.web.Port(), path)
}

// raw sends req to egressd's HTTP listener and reads one response.
func (e *chainEnv) raw(t *testing.T, req string) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.ns.DialContext(ctx, "tcp", e.proc.HTTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(c, req)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%q: %v", firstLine(req), err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(strings.NewReader(string(body)))
	return resp
}

// connect opens a CONNECT tunnel to target and returns the conn after
// egressd's answer, reading the answer byte by byte so no tunnel byte is
// consumed.
func (e *chainEnv) connect(t *testing.T, target string) (net.Conn, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.ns.DialContext(ctx, "tcp", e.proc.HTTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	var head []byte
	one := make([]byte, 1)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for !strings.HasSuffix(string(head), "\r\n\r\n") {
		if _, err := c.Read(one); err != nil {
			t.Fatalf("CONNECT %s: %v after %q", target, err, head)
		}
		head = append(head, one[0])
	}
	c.SetReadDeadline(time.Time{})
	return c, string(head)
}

func (e *chainEnv) metrics(t *testing.T) string {
	t.Helper()
	out, errOut, code := e.ns.Curl(t, "-sS", "--max-time", "10", "--noproxy", "*", "http://"+e.proc.AdminAddr+"/metrics")
	if code != 0 {
		t.Fatalf("/metrics: curl exit %d: %s", code, errOut)
	}
	return out
}

// assertNoPassword checks that the password, alone or inside Basic
// credentials, appears in nothing egressd wrote: access log, diagnostics
// (at debug level) and /metrics.
func (e *chainEnv) assertNoPassword(t *testing.T) {
	t.Helper()
	basic := base64.StdEncoding.EncodeToString([]byte(chainUser + ":" + chainPassword))
	for name, text := range map[string]string{
		"stdout":   strings.Join(e.proc.Stdout(), "\n"),
		"stderr":   e.proc.Stderr(),
		"/metrics": e.metrics(t),
	} {
		for _, secret := range []string{chainPassword, basic} {
			if strings.Contains(text, secret) {
				t.Errorf("egressd's %s shows the parent's credentials (%q)", name, secret)
			}
		}
	}
	if e.proc.Stderr() == "" {
		t.Error("no diagnostics at all: the check proves nothing")
	}
}

// parentRequests returns the recording parent's requests for target (a
// CONNECT authority or an absolute URI).
func (e *chainEnv) parentRequests(target string) []testenv.ParentRequest {
	var out []testenv.ParentRequest
	for _, r := range e.parent.Requests() {
		if r.Target == target {
			out = append(out, r)
		}
	}
	return out
}

func wantBasic() string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(chainUser+":"+chainPassword))
}

// startBannerOrigin serves a server-first protocol at addr in ns: each
// connection gets chainBanner at once, then its own bytes echoed back.
func startBannerOrigin(t *testing.T, ns *testenv.Netns, addr string) net.Listener {
	t.Helper()
	ln, err := ns.Listen("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	testenv.ServeConns(t, ln, func(c net.Conn) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.WriteString(c, chainBanner); err != nil {
			return
		}
		io.Copy(c, c)
	})
	return ln
}
