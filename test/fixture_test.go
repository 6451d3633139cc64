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

func newFarm(t *testing.T, mode string) *farm {
	t.Helper()
	return newFarmWith(t, mode, nil)
}

// newFarmWith is newFarm with more config: configure, when set, changes
// the farm's config before egressd starts.
//
// The farm's policy: loopback /24 is an exception to the default deny
// list only for the rules that name it, and more specific than
// 127.0.0.0/8. In report mode a name no rule matched is still
// range-checked, so the origins' addresses are let through globally there
// to give report a target.
func newFarmWith(t *testing.T, mode string, configure func(f *farm, c *testenv.Config)) *farm {
	t.Helper()
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

	c := testenv.NewConfig(t)
	c.Listen = testenv.Listeners(t, f.ns, "127.0.0.1")
	c.DNS.Servers = []string{f.dns.Addr()}
	c.DNS.MinTTL = 0 // rebind.test answers with TTL 0: every lookup asks again
	c.Timeouts.Handshake = 3 * time.Second
	c.Timeouts.Connect = 2 * time.Second
	c.Policy.Mode = mode
	c.Policy.DenyRanges = []string{"default"}
	if mode == "report" {
		c.Policy.AllowRanges = []string{originIP + "/32", httpIP + "/32"}
	}
	c.Policy.TLSPorts = []int{f.tlsPort}
	c.Policy.Groups = map[string]testenv.Group{"ops": {CIDRs: []string{"127.0.0.77/32"}}}
	ports := f.ports()
	c.Policy.Rules = []testenv.Rule{
		{Name: "origin", Hosts: []string{"allowed.test", "*.wild.test", "rebind.test", "private.test", "metadata.test", "mixed.test", "dead.test", "*.nx.test"},
			Ports: ports, AllowRanges: []string{"127.0.0.0/24"}},
		{Name: "ops-only", Groups: []string{"ops"}, Hosts: []string{"ops.test"}, Ports: ports, AllowRanges: []string{"127.0.0.0/24"}},
		{Name: "by-ip", CIDRs: []string{"127.0.0.2/32", "127.0.0.3/32", "10.0.0.0/8"}, Ports: ports},
	}
	if configure != nil {
		configure(f, c)
	}
	f.proc = (&testenv.Egressd{Netns: f.ns}).StartConfig(t, c)
	t.Cleanup(func() { f.honey.AssertNone(t) })
	return f
}

// ports are the origins' ports: the TLS one, then the plain HTTP one.
func (f *farm) ports() []int { return []int{f.tlsPort, f.httpPort} }

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
	resp, err := testenv.Connect(c, target, nil)
	if err != nil {
		t.Fatal(err)
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
