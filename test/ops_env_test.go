package test

// Shared setup of the operations tests (limits, drain, reload, metrics):
// egressd and its origins in the host namespace on 127.0.0.0/8 only, so
// tests can pick client source addresses and read egressd's /proc entry.

import (
	"bufio"
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/net/proxy"

	"github.com/egressd/egressd/proxy/config"
	"github.com/egressd/egressd/test/testenv"
)

// Origins of the operations tests, by name and loopback address.
const (
	opsTLSIP   = "127.0.0.2" // allowed.test, other.test, stable.test: TLS echo (testenv.Origin)
	opsFixedIP = "127.0.0.3" // fixed.test: plain HTTP, a fixed-size body
	opsSlowIP  = "127.0.0.4" // slow.test: TLS and plain HTTP that answer when released
	opsRawIP   = "127.0.0.5" // raw.test: TCP echo on a port that is not a TLS port
	// egressd listens, and DNS answers, off 127.0.0.1: other processes'
	// outgoing loopback connections take their ephemeral ports on
	// 127.0.0.1, and one of them could grab a port picked for a listener.
	opsProxyIP = "127.0.0.9"
	opsDNSIP   = "127.0.0.53"
)

// fixedBody is fixed.test's answer to every request.
var fixedBody = strings.Repeat("x", 1234)

// opsFarm is one egressd with origins, DNS and a config file the test can
// rewrite.
type opsFarm struct {
	t          testing.TB
	ca         *testenv.CA
	caFile     string
	dns        *testenv.DNSServer
	tls        *testenv.Origin
	fixed      *httptest.Server
	slow       *slowOrigin
	raw        *echoOrigin
	proc       *testenv.Proc
	httpAddr   string
	socksAddr  string
	adminAddr  string
	configPath string // the path egressd was started with (may be a symlink)
	ports      opsPorts
}

type opsPorts struct{ tls, fixed, slowTLS, slowHTTP, raw int }

// opsOpts are the config values a test varies; zero values take the
// defaults of opsFarm.config.
type opsOpts struct {
	MaxConns, PerClient int
	Handshake, Idle     time.Duration
	MaxTunnel, Drain    time.Duration
	DrainDelay          time.Duration
	MaxHeader           config.Size
	MaxRespHeader       config.Size // limits.max_response_header_bytes
	Pprof               bool
	LogLevel            string
	AccessFile          string   // log.access_file; "" = stdout
	Hosts               []string // hosts of rule "origin"
	HTTPAddr            string   // overrides listen.http (reload tests)
	BrokenPort          bool     // an invalid port in the rule (reload error tests)
}

var opsDefaultHosts = []string{"allowed.test", "stable.test", "fixed.test", "slow.test", "raw.test"}

func newOpsFarm(t testing.TB) *opsFarm {
	t.Helper()
	f := &opsFarm{t: t}
	f.ca = testenv.NewCA(t)
	f.caFile = f.ca.WritePEM(t.TempDir())
	f.tls = testenv.TLSOrigin(t, f.ca, opsTLSIP, "allowed.test", "other.test", "stable.test")
	f.fixed = newFixedOrigin(t, opsFixedIP)
	f.slow = newSlowOrigin(t, f.ca, opsSlowIP)
	f.raw = newEchoOrigin(t, opsRawIP)
	f.dns = testenv.NewDNSServerIn(t, nil, opsDNSIP)
	for name, ip := range map[string]string{
		"allowed.test": opsTLSIP, "other.test": opsTLSIP, "stable.test": opsTLSIP,
		"fixed.test": opsFixedIP, "slow.test": opsSlowIP, "raw.test": opsRawIP,
	} {
		f.dns.Set(name, 60, netip.MustParseAddr(ip))
	}
	f.ports = opsPorts{
		tls: f.tls.Port(), fixed: portOf(f.fixed.Listener.Addr()), slowTLS: portOf(f.slow.tls.Listener.Addr()),
		slowHTTP: portOf(f.slow.plain.Listener.Addr()), raw: portOf(f.raw.ln.Addr()),
	}
	f.httpAddr = testenv.FreeAddr(t, opsProxyIP)
	f.socksAddr = testenv.FreeAddr(t, opsProxyIP)
	f.adminAddr = testenv.FreeAddr(t, opsProxyIP)
	return f
}

func portOf(a net.Addr) int { return a.(*net.TCPAddr).Port }

// config renders a whole config file.
func (f *opsFarm) config(o opsOpts) string {
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.Handshake, 3*time.Second)
	def(&o.Drain, 10*time.Second)
	if o.Hosts == nil {
		o.Hosts = opsDefaultHosts
	}
	c := testenv.NewConfig(f.t)
	c.Listen = testenv.Listen{HTTP: cmp.Or(o.HTTPAddr, f.httpAddr), SOCKS5: f.socksAddr, Admin: f.adminAddr}
	c.DNS.Servers = []string{f.dns.Addr()}
	c.Admin.Pprof = o.Pprof
	c.Log.Level = cmp.Or(o.LogLevel, "info")
	c.Log.AccessFile = o.AccessFile
	c.Limits.MaxConnections = cmp.Or(o.MaxConns, 10000)
	c.Limits.MaxConnectionsPerClient = cmp.Or(o.PerClient, 1000)
	c.Limits.MaxHeaderBytes = cmp.Or(o.MaxHeader, 64<<10)
	c.Limits.MaxResponseHeaderBytes = cmp.Or(o.MaxRespHeader, 64<<10)
	c.Timeouts.Handshake = o.Handshake
	c.Timeouts.Connect = 2 * time.Second
	c.Timeouts.Idle = cmp.Or(o.Idle, 5*time.Minute)
	c.Timeouts.MaxTunnel = o.MaxTunnel
	c.Timeouts.Drain = o.Drain
	c.Timeouts.DrainDelay = o.DrainDelay
	ports := []int{f.ports.tls, f.ports.fixed, f.ports.slowTLS, f.ports.slowHTTP, f.ports.raw}
	if o.BrokenPort {
		ports = append(ports, 99999)
	}
	c.Policy.Mode = "enforce"
	c.Policy.DenyRanges = []string{"default"}
	c.Policy.TLSPorts = []int{f.ports.tls, f.ports.slowTLS}
	c.Policy.Rules = []testenv.Rule{
		{Name: "origin", Hosts: o.Hosts, Ports: ports, AllowRanges: []string{"127.0.0.0/24"}},
	}
	return testenv.YAML(f.t, c)
}

// start writes the config to a file of its own and starts egressd on it.
func (f *opsFarm) start(t testing.TB, o opsOpts) *testenv.Proc {
	t.Helper()
	path := filepath.Join(t.TempDir(), "egressd.yaml")
	writeFile(t, path, f.config(o))
	return f.startAt(t, path, o)
}

// startAt starts egressd with --config path; the file (or what the
// symlink points at) must already hold f.config(o).
func (f *opsFarm) startAt(t testing.TB, path string, o opsOpts) *testenv.Proc {
	t.Helper()
	f.configPath = path
	f.proc = (&testenv.Egressd{Args: []string{"serve", "--config", path}}).Start(t, f.config(o))
	return f.proc
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// replaceFile writes content next to path and renames it into place, as
// editors and configuration tools do.
func replaceFile(t testing.TB, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	writeFile(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// --- origins ---

func newFixedOrigin(t testing.TB, ip string) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Length", strconv.Itoa(len(fixedBody)))
		io.WriteString(w, fixedBody)
	}))
	srv.Listener.Close()
	srv.Listener = listen(t, ip)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

func listen(t testing.TB, ip string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// slowOrigin answers every request only once released: the in-flight work
// of the drain tests.
type slowOrigin struct {
	tls, plain *httptest.Server
	arrived    chan string // one value (the path) per request that arrived
	release    chan struct{}
	once       sync.Once
}

func newSlowOrigin(t testing.TB, ca *testenv.CA, ip string) *slowOrigin {
	t.Helper()
	o := &slowOrigin{arrived: make(chan string, 1024), release: make(chan struct{})}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.arrived <- r.URL.Path
		select {
		case <-o.release:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(fixedBody)))
		io.WriteString(w, fixedBody)
	})
	o.tls = httptest.NewUnstartedServer(h)
	o.tls.Listener.Close()
	o.tls.Listener = listen(t, ip)
	o.tls.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Issue("slow.test")}}
	o.tls.StartTLS()
	o.plain = httptest.NewUnstartedServer(h)
	o.plain.Listener.Close()
	o.plain.Listener = listen(t, ip)
	o.plain.Start()
	t.Cleanup(func() {
		o.Release()
		o.tls.Close()
		o.plain.Close()
	})
	return o
}

// Release lets every waiting and future request complete.
func (o *slowOrigin) Release() { o.once.Do(func() { close(o.release) }) }

// waitArrived waits for n requests to have arrived.
func (o *slowOrigin) waitArrived(t testing.TB, n int) {
	t.Helper()
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	for i := 0; i < n; i++ {
		select {
		case <-o.arrived:
		case <-timer.C:
			t.Fatalf("only %d of %d requests reached the slow origin", i, n)
		}
	}
}

// echoOrigin is a raw TCP server echoing what it reads until EOF.
type echoOrigin struct {
	ln net.Listener
	wg sync.WaitGroup
	mu sync.Mutex
	cs map[net.Conn]struct{}
}

func newEchoOrigin(t testing.TB, ip string) *echoOrigin {
	t.Helper()
	o := &echoOrigin{ln: listen(t, ip), cs: map[net.Conn]struct{}{}}
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		for {
			c, err := o.ln.Accept()
			if err != nil {
				return
			}
			o.mu.Lock()
			o.cs[c] = struct{}{}
			o.mu.Unlock()
			o.wg.Add(1)
			go func() {
				defer o.wg.Done()
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
				io.Copy(io.Discard, c)
				c.Close()
				o.mu.Lock()
				delete(o.cs, c)
				o.mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() {
		o.ln.Close()
		o.mu.Lock()
		for c := range o.cs {
			c.Close()
		}
		o.mu.Unlock()
		o.wg.Wait()
	})
	return o
}

// --- clients ---

// dialFrom connects to addr from the local address from ("": any), with a
// deadline; the conn is closed on cleanup.
func dialFrom(t testing.TB, addr, from string) net.Conn {
	t.Helper()
	c, err := dialFromErr(addr, from)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func dialFromErr(addr, from string) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(60 * time.Second))
	return c, nil
}

// connectTunnel opens a CONNECT tunnel through egressd and returns the conn
// (positioned after the 200) or an error with the status.
func connectTunnel(proxyAddr, target string) (net.Conn, error) {
	c, err := dialFromErr(proxyAddr, "")
	if err != nil {
		return nil, err
	}
	if err := testenv.ConnectTunnel(c, target, nil); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// socksTunnel opens a SOCKS5 tunnel (remote name resolution).
func socksTunnel(socksAddr, target string) (net.Conn, error) {
	d, err := proxy.SOCKS5("tcp", socksAddr, nil, &net.Dialer{Timeout: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	c, err := d.Dial("tcp", target)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(60 * time.Second))
	return c, nil
}

// echo writes msg on an echo tunnel and reads it back.
func echo(c net.Conn, msg string) error {
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("echo %q, want %q", buf, msg)
	}
	return nil
}

// httpsTunnel is one CONNECT tunnel carrying keep-alive HTTPS requests, so
// a test can tell a tunnel that survived from one that was re-opened.
type httpsTunnel struct {
	tc   *tls.Conn
	br   *bufio.Reader
	host string
}

func openHTTPSTunnel(f *opsFarm, host string) (*httpsTunnel, error) {
	target := net.JoinHostPort(host, strconv.Itoa(f.ports.tls))
	c, err := connectTunnel(f.httpAddr, target)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(c, &tls.Config{ServerName: host, RootCAs: f.ca.CertPool()})
	if err := tc.Handshake(); err != nil {
		c.Close()
		return nil, err
	}
	return &httpsTunnel{tc: tc, br: bufio.NewReader(tc), host: host}, nil
}

func (h *httpsTunnel) get(path string) error {
	h.tc.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := fmt.Fprintf(h.tc, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, h.host); err != nil {
		return err
	}
	resp, err := http.ReadResponse(h.br, nil)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	if e, err := testenv.ParseEcho(body); err != nil || e.Path != path {
		return fmt.Errorf("GET %s: echo %+v, %v", path, e, err)
	}
	return nil
}

func (h *httpsTunnel) Close() { h.tc.Close() }

// curlResult is one curl run.
type curlResult struct {
	stdout, stderr string
	code           int
	err            error
}

// runCurl runs curl in the host namespace with a minimal environment; it is
// safe to call from any goroutine.
func runCurl(args ...string) curlResult {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	all := append([]string{"-q", "-sS", "--max-time", "30", "-D", "/dev/stderr"}, args...)
	cmd := (*testenv.Netns)(nil).Command(ctx, "curl", all...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := curlResult{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		r.err, r.code = err, -1
	}
	return r
}

func (r curlResult) String() string {
	return fmt.Sprintf("exit %d (%v)\nstderr: %s\nstdout: %.300s", r.code, r.err, r.stderr, r.stdout)
}

// curlHTTPS fetches https://host:tlsPort/path through the HTTP proxy.
func (f *opsFarm) curlHTTPS(host, path string, extra ...string) curlResult {
	return runCurl(append(extra, "-x", "http://"+f.httpAddr, "--cacert", f.caFile, "--fail",
		fmt.Sprintf("https://%s:%d%s", host, f.ports.tls, path))...)
}

// curlFixed fetches http://fixed.test through the HTTP proxy.
func (f *opsFarm) curlFixed(extra ...string) curlResult {
	return runCurl(append(extra, "-x", "http://"+f.httpAddr, "--fail",
		fmt.Sprintf("http://fixed.test:%d/", f.ports.fixed))...)
}

// curlSOCKS fetches https://host:tlsPort/path through SOCKS5.
func (f *opsFarm) curlSOCKS(host, path string, extra ...string) curlResult {
	return runCurl(append(extra, "--socks5-hostname", f.socksAddr, "--cacert", f.caFile, "--fail",
		fmt.Sprintf("https://%s:%d%s", host, f.ports.tls, path))...)
}

// mustCurl fails the test unless r succeeded.
func mustCurl(t testing.TB, what string, r curlResult) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("%s: %s", what, r)
	}
}

// --- egressd's state ---

// fdCount is the number of open descriptors of pid.
func fdCount(t testing.TB, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("read fds of %d: %v", pid, err)
	}
	return len(ents)
}

// socketCount is the number of sockets among pid's descriptors.
func socketCount(t testing.TB, pid int) int {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read fds of %d: %v", pid, err)
	}
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(target, "socket:") {
			n++
		}
	}
	return n
}

// fdBaseline is egressd's descriptors at rest.
type fdBaseline struct{ total, sockets int }

func fdsAtRest(t testing.TB, p *testenv.Proc) fdBaseline {
	t.Helper()
	return fdBaseline{fdCount(t, p.PID()), socketCount(t, p.PID())}
}

// pipeSlack bounds the descriptors of idle splice pipes the relay's pool
// may keep after a load (a pipe is two descriptors; the pool keeps a few).
const pipeSlack = 2 * 16

// waitFDs waits until egressd holds no more sockets than at rest, and no
// more descriptors than at rest plus what the pipe pool may keep.
func waitFDs(t testing.TB, p *testenv.Proc, base fdBaseline) {
	t.Helper()
	var got fdBaseline
	waitUntil(t, 20*time.Second, func() bool {
		got = fdsAtRest(t, p)
		return got.sockets <= base.sockets && got.total <= base.total+pipeSlack
	}, func() string {
		return fmt.Sprintf("egressd holds %d descriptors (%d sockets), at rest %d (%d sockets):\n%s",
			got.total, got.sockets, base.total, base.sockets, fdList(p.PID()))
	})
	t.Logf("egressd descriptors back to %d (%d sockets); at rest before: %d (%d sockets)", got.total, got.sockets, base.total, base.sockets)
}

// fdList describes the open descriptors of pid, one a line.
func fdList(pid int) string {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, _ := os.ReadDir(dir)
	var lines []string
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join(dir, e.Name()))
		lines = append(lines, e.Name()+" -> "+target)
	}
	return strings.Join(lines, "\n")
}

// waitUntil polls cond every 20ms up to timeout, then fails with msg().
func waitUntil(t testing.TB, timeout time.Duration, cond func() bool, msg func() string) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("after %v: %s", timeout, msg())
		case <-tick.C:
		}
	}
}

// metrics is one parsed /metrics scrape.
type metrics map[string]*dto.MetricFamily

func (f *opsFarm) scrape(t testing.TB) metrics {
	t.Helper()
	resp, err := adminGet(f.adminAddr, "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s", resp.Status)
	}
	return parseMetrics(t, resp.Body)
}

// parseMetrics parses a /metrics page (Prometheus text format).
func parseMetrics(t testing.TB, r io.Reader) metrics {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(r)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// adminGet sends one GET to the admin listener on a fresh connection.
func adminGet(addr, path string) (*http.Response, error) {
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(strings.NewReader(string(body)))
	return resp, err
}

// get returns the value of the series of family name with exactly labels
// (counter, gauge or untyped value; a histogram's sample count), and
// whether it exists.
func (m metrics) get(name string, labels map[string]string) (float64, bool) {
	mf, ok := m[name]
	if !ok {
		return 0, false
	}
	for _, s := range mf.GetMetric() {
		if len(s.GetLabel()) != len(labels) {
			continue
		}
		match := true
		for _, lp := range s.GetLabel() {
			if v, ok := labels[lp.GetName()]; !ok || v != lp.GetValue() {
				match = false
				break
			}
		}
		if !match {
			continue
		}
		switch {
		case s.Counter != nil:
			return s.Counter.GetValue(), true
		case s.Gauge != nil:
			return s.Gauge.GetValue(), true
		case s.Histogram != nil:
			return float64(s.Histogram.GetSampleCount()), true
		case s.Untyped != nil:
			return s.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// value is get for a series that must exist.
func (m metrics) value(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	v, ok := m.get(name, labels)
	if !ok {
		t.Fatalf("no series %s%v", name, labels)
	}
	return v
}

// series returns every series of a family as "k=v,k=v" (labels in name
// order) -> value.
func (m metrics) series(name string) map[string]float64 {
	out := map[string]float64{}
	mf, ok := m[name]
	if !ok {
		return out
	}
	for _, s := range mf.GetMetric() {
		var kv []string
		for _, lp := range s.GetLabel() {
			kv = append(kv, lp.GetName()+"="+lp.GetValue())
		}
		var v float64
		switch {
		case s.Counter != nil:
			v = s.Counter.GetValue()
		case s.Gauge != nil:
			v = s.Gauge.GetValue()
		case s.Histogram != nil:
			v = float64(s.Histogram.GetSampleCount())
		}
		out[strings.Join(kv, ",")] = v
	}
	return out
}

// waitMetric polls /metrics until the series equals want.
func (f *opsFarm) waitMetric(t testing.TB, name string, labels map[string]string, want float64) {
	t.Helper()
	var got float64
	waitUntil(t, 15*time.Second, func() bool {
		got, _ = f.scrape(t).get(name, labels)
		return got == want
	}, func() string { return fmt.Sprintf("%s%v = %v, want %v", name, labels, got, want) })
}

// openConns is egressd_client_connections of both listeners.
func (f *opsFarm) openConns(t testing.TB) float64 {
	t.Helper()
	m := f.scrape(t)
	return m.value(t, "egressd_client_connections", map[string]string{"listener": "http"}) +
		m.value(t, "egressd_client_connections", map[string]string{"listener": "socks5"})
}

// waitOpenConns waits until egressd counts want client connections.
func (f *opsFarm) waitOpenConns(t testing.TB, want float64) {
	t.Helper()
	var got float64
	waitUntil(t, 15*time.Second, func() bool {
		got = f.openConns(t)
		return got == want
	}, func() string { return fmt.Sprintf("egressd_client_connections = %v, want %v", got, want) })
}

// accessCount counts access lines matching kv.
func accessCount(p *testenv.Proc, kv map[string]any) int {
	n := 0
	pred := testenv.Fields(kv)
	for _, l := range p.AccessLines() {
		if pred(l) {
			n++
		}
	}
	return n
}
