package test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/test/testenv"
)

// Addresses inside the test namespace. Origins live on loopback (carved out
// of the default deny list by the test policy); honeypots sit on addresses
// the policy must never dial.
const (
	originIP   = "127.0.0.2"
	httpIP     = "127.0.0.3"
	deadIP     = "127.0.0.9" // allowed, nothing listens: dial failures
	privateIP  = "10.0.0.5"
	metadataIP = "169.254.169.254"
	homeIP     = "192.168.1.1"
)

// farm is one egressd in its own namespace with origins, DNS and honeypots.
type farm struct {
	ns                *testenv.Netns
	dns               *testenv.DNSServer
	ca                *testenv.CA
	caFile            string
	tls               *testenv.Origin // HTTPS origin on originIP
	http              *testenv.Origin // plain HTTP origin on httpIP
	honey             *testenv.Honeypot
	proc              *testenv.Proc
	tlsPort, httpPort int
}

// policyTmpl is the test policy; %[1]d is the TLS origin's port, %[2]d the
// HTTP origin's. Loopback /24 is an exception to the default deny list only
// for the rules that name it, and more specific than 127.0.0.0/8.
const policyTmpl = `
policy:
  mode: %[3]s
  deny_ranges: [default]
  allow_ranges: [%[4]s]
  tls_ports: [%[1]d]
  groups:
    ops: { cidrs: ["127.0.0.77/32"] }
  rules:
    - name: origin
      hosts: ["allowed.test", "*.wild.test", "rebind.test", "private.test", "metadata.test", "mixed.test", "dead.test", "*.nx.test"]
      ports: [%[1]d, %[2]d]
      allow_ranges: ["127.0.0.0/24"]
    - name: ops-only
      groups: [ops]
      hosts: ["ops.test"]
      ports: [%[1]d, %[2]d]
      allow_ranges: ["127.0.0.0/24"]
    - name: by-ip
      cidrs: ["127.0.0.2/32", "127.0.0.3/32", "10.0.0.0/8"]
      ports: [%[1]d, %[2]d]
`

func newFarm(t *testing.T, mode string) *farm {
	t.Helper()
	return newFarmWith(t, mode, "", "")
}

// newFarmWith is newFarm with more config: sections appended to the file,
// and rules (a YAML list, "{ports}" for the origins' ports) put before the
// test policy's own.
func newFarmWith(t *testing.T, mode, sections, rules string) *farm {
	t.Helper()
	// In report mode a name no rule matched is still range-checked; let the
	// origins' addresses through globally there so report has a target.
	globalAllow := ""
	if mode == "report" {
		globalAllow = `"127.0.0.2/32", "127.0.0.3/32"`
	}
	f := &farm{}
	f.ns = testenv.NewNetns(t, privateIP+"/32", metadataIP+"/32", homeIP+"/32")
	f.ca = testenv.NewCA(t)
	f.caFile = f.ca.WritePEM(t.TempDir())
	f.tls = testenv.TLSOriginIn(t, f.ns, f.ca, originIP, "allowed.test", "a.wild.test", "a.b.c.wild.test", "rebind.test", "evil.test", "ops.test", "mixed.test", originIP)
	f.http = testenv.HTTPOriginIn(t, f.ns, httpIP, "plain")
	f.tlsPort, f.httpPort = f.tls.Port(), f.http.Port()
	var pots []string
	for _, ip := range []string{privateIP, metadataIP, homeIP} {
		pots = append(pots, fmt.Sprintf("%s:%d", ip, f.tlsPort), fmt.Sprintf("%s:%d", ip, f.httpPort), ip+":80")
	}
	f.honey = f.ns.Honeypot(t, pots...)
	f.dns = testenv.NewDNSServerIn(t, f.ns, "127.0.0.53")
	o, h := netip.MustParseAddr(originIP), netip.MustParseAddr(httpIP)
	for _, name := range []string{"allowed.test", "a.wild.test", "a.b.c.wild.test", "wild.test", "evil.test", "ops.test", "other.test"} {
		f.dns.Set(name, 60, o, h)
	}
	f.dns.Set("private.test", 60, netip.MustParseAddr(privateIP))
	f.dns.Set("metadata.test", 60, netip.MustParseAddr(metadataIP))
	f.dns.Set("mixed.test", 60, netip.MustParseAddr(homeIP), o)
	f.dns.Set("dead.test", 60, netip.MustParseAddr(deadIP))
	f.dns.SetSequence("rebind.test", 0, [][]netip.Addr{{o}, {netip.MustParseAddr(privateIP)}})

	cfg := fmt.Sprintf(`
listen:
  http: %q
  socks5: %q
  admin: %q
dns:
  servers: [%q]
  min_ttl: 0s   # rebind.test answers with TTL 0: every lookup asks again
timeouts:
  handshake: 3s
  connect: 2s
  drain_delay: 0s
  drain: 2s
`, f.ns.FreeAddr(t, "127.0.0.1"), f.ns.FreeAddr(t, "127.0.0.1"), f.ns.FreeAddr(t, "127.0.0.1"), f.dns.Addr()) +
		fmt.Sprintf(policyTmpl, f.tlsPort, f.httpPort, mode, globalAllow)
	if rules != "" {
		rules = strings.ReplaceAll(rules, "{ports}", fmt.Sprintf("%d, %d", f.tlsPort, f.httpPort))
		cfg = strings.Replace(cfg, "  rules:\n", "  rules:\n"+rules, 1)
	}
	cfg += sections
	f.proc = (&testenv.Egressd{Netns: f.ns}).Start(t, cfg)
	t.Cleanup(func() { f.honey.AssertNone(t) })
	return f
}

func (f *farm) proxyURL() string { return "http://" + f.proc.HTTPAddr }

// proxyEnv is what client instances set. curl reads only the lower-case
// http_proxy (an upper-case HTTP_PROXY could come from a CGI request header).
func (f *farm) proxyEnv() []string {
	u := f.proxyURL()
	return []string{"HTTPS_PROXY=" + u, "https_proxy=" + u, "HTTP_PROXY=" + u, "http_proxy=" + u}
}

// curl runs real curl inside the namespace with the given proxy
// environment (HTTPS_PROXY / HTTP_PROXY), the test CA, and args.
func (f *farm) curl(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	all := append([]string{"-q", "-sS", "--max-time", "20", "--cacert", f.caFile, "-D", "/dev/stderr"}, args...)
	cmd := f.ns.Command(ctx, "curl", all...)
	cmd.Env = append([]string{"PATH=/usr/local/bin:/usr/bin:/bin"}, env...)
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

// rawRequest sends exact bytes to the proxy and reads one response: for
// requests no well-behaved client would send.
func (f *farm) rawRequest(t *testing.T, req string) *http.Response {
	t.Helper()
	c := f.dialProxy(t)
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatalf("write: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response to %q: %v", firstLine(req), err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(strings.NewReader(string(body)))
	return resp
}

func (f *farm) dialProxy(t *testing.T) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := f.ns.DialContext(ctx, "tcp", f.proc.HTTPAddr)
	if err != nil {
		t.Fatalf("dial proxy: %v", err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

// connect opens a CONNECT tunnel and returns the conn after the proxy's
// status line, with the response.
func (f *farm) connect(t *testing.T, target string) (net.Conn, *http.Response) {
	t.Helper()
	c := f.dialProxy(t)
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("CONNECT %s: %v", target, err)
	}
	if resp.StatusCode == http.StatusOK && br.Buffered() > 0 {
		t.Fatalf("CONNECT %s: %d unexpected bytes after the status", target, br.Buffered())
	}
	return c, resp
}

// tlsThrough runs a TLS handshake with serverName over a CONNECT tunnel to
// target and one HTTPS request; it returns the request error, if any.
func (f *farm) tlsThrough(t *testing.T, target, serverName string) (*http.Response, error) {
	t.Helper()
	c, resp := f.connect(t, target)
	defer c.Close() // the tunnel, and its access line, end here
	if resp.StatusCode != http.StatusOK {
		return resp, fmt.Errorf("CONNECT status %d", resp.StatusCode)
	}
	tc := tls.Client(c, &tls.Config{ServerName: serverName, RootCAs: f.ca.CertPool(), InsecureSkipVerify: serverName == ""})
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	fmt.Fprintf(tc, "GET /through HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", target)
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(strings.NewReader(string(body)))
	return resp, err
}

func firstLine(s string) string {
	if i := strings.Index(s, "\r\n"); i >= 0 {
		return s[:i]
	}
	return s
}

// waitLog waits for the access line matching all fields.
func (f *farm) waitLog(t *testing.T, kv map[string]any) map[string]any {
	t.Helper()
	return f.proc.WaitForLog(t, testenv.Fields(kv))
}
