package limits

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/net/proxy"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accesslog"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is a Limiter over a real loopback listener whose accept loop holds
// every admitted connection until the test closes it.
type env struct {
	lim      *Limiter
	metrics  *accesslog.Metrics
	logs     *observer.ObservedLogs
	addr     string
	accepted chan net.Conn
}

func newEnv(t *testing.T, o Options, lc ListenerConfig) *env {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	m := accesslog.NewMetrics(prometheus.NewRegistry())
	o.Log = accesslog.NewLogger(zap.New(core), m)
	lim := New(o)
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := lim.Listener(raw, lc)
	e := &env{lim: lim, metrics: m, logs: logs, addr: raw.Addr().String(), accepted: make(chan net.Conn, 64)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if _, ok := c.(*net.TCPConn); !ok {
				t.Errorf("accepted %T, want *net.TCPConn", c)
			}
			e.accepted <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		close(e.accepted)
		for c := range e.accepted {
			c.Close()
		}
		lim.Close()
	})
	return e
}

// dial connects from local IP from ("" for any).
func dial(t *testing.T, addr, from string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

// admitted dials and waits until the server side has the connection.
func (e *env) admitted(t *testing.T, from string) (client, server net.Conn) {
	t.Helper()
	c := dial(t, e.addr, from)
	select {
	case s := <-e.accepted:
		return c, s
	case <-time.After(5 * time.Second):
		t.Fatal("connection not admitted")
		return nil, nil
	}
}

// refusedHTTP sends req on a new connection and returns the response, after
// checking that egressd then closes the connection.
func (e *env) refusedHTTP(t *testing.T, from, req string) *http.Response {
	t.Helper()
	c := dial(t, e.addr, from)
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer to a refused connection: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != refusalBody {
		t.Errorf("body %q", body)
	}
	if n, err := br.ReadByte(); err == nil {
		t.Errorf("byte %q after the refusal", n)
	}
	c.Close()
	return resp
}

func (e *env) lines() []map[string]any {
	var out []map[string]any
	for _, l := range e.logs.All() {
		out = append(out, l.ContextMap())
	}
	return out
}

func (e *env) rejections(listener policy.Listener, limit string) float64 {
	return testutil.ToFloat64(e.metrics.LimitRejects.WithLabelValues(string(listener), limit))
}

func (e *env) noConnAccepted(t *testing.T) {
	t.Helper()
	select {
	case c := <-e.accepted:
		t.Fatalf("connection from %v reached the front end", c.RemoteAddr())
	default:
	}
}

// waitFor polls cond for up to 5s: for effects of another goroutine that
// leave nothing to wait on (a refusal's access line is written after the
// client saw the close).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

func TestLimitMaxConnectionsHTTP(t *testing.T) {
	e := newEnv(t, Options{Limits: Limits{MaxConnections: 2}}, ListenerConfig{Protocol: policy.ListenerHTTP})
	_, s1 := e.admitted(t, "")
	e.admitted(t, "")

	resp := e.refusedHTTP(t, "", "GET http://a.test:8080/x HTTP/1.1\r\nHost: a.test\r\n\r\n")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("X-Egress-Error") != "limit" {
		t.Fatalf("refusal %d %v", resp.StatusCode, resp.Header)
	}
	resp = e.refusedHTTP(t, "", "CONNECT b.test:443 HTTP/1.1\r\nHost: b.test:443\r\n\r\n")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("CONNECT refusal %d", resp.StatusCode)
	}
	e.noConnAccepted(t)
	waitFor(t, "two access lines", func() bool { return len(e.lines()) == 2 })
	want := []map[string]any{
		{"listener": "http", "client": "127.0.0.1", "user": "", "group": "", "method": "GET", "host": "a.test", "port": uint16(8080),
			"sni": "", "ip": "", "decision": "deny", "rule": "", "reason": "limit", "status": int(503), "bytes_up": int64(0), "bytes_down": int64(0)},
		{"listener": "connect", "client": "127.0.0.1", "user": "", "group": "", "host": "b.test", "port": uint16(443),
			"sni": "", "ip": "", "decision": "deny", "rule": "", "reason": "limit", "status": int(503), "bytes_up": int64(0), "bytes_down": int64(0)},
	}
	got := e.lines()
	for _, l := range got {
		delete(l, "duration_ms")
	}
	slices.SortFunc(got, func(a, b map[string]any) int { return strings.Compare(a["host"].(string), b["host"].(string)) })
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("access lines (-want +got):\n%s", diff)
	}
	if got := e.rejections(policy.ListenerHTTP, accesslog.LimitMaxConnections); got != 1 {
		t.Errorf("http rejections %v", got)
	}
	if got := e.rejections(policy.ListenerConnect, accesslog.LimitMaxConnections); got != 1 {
		t.Errorf("connect rejections %v", got)
	}
	if got := testutil.ToFloat64(e.metrics.Requests.WithLabelValues("connect", "deny", "limit")); got != 1 {
		t.Errorf("requests_total{connect,deny,limit} %v", got)
	}

	// Closing one admitted connection, by its owner and without telling
	// the limiter, makes room at once.
	s1.Close()
	e.admitted(t, "")
	if got := e.lim.Open(); got != 2 {
		t.Errorf("Open() = %d, want 2", got)
	}
}

func TestLimitPerClientUnit(t *testing.T) {
	e := newEnv(t, Options{Limits: Limits{MaxConnectionsPerClient: 2}}, ListenerConfig{Protocol: policy.ListenerHTTP})
	e.admitted(t, "127.0.0.1")
	e.admitted(t, "127.0.0.1")
	resp := e.refusedHTTP(t, "127.0.0.1", "GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d", resp.StatusCode)
	}
	// Another client is not affected.
	e.admitted(t, "127.0.0.2")
	e.admitted(t, "127.0.0.2")
	waitFor(t, "rejection count", func() bool {
		return e.rejections(policy.ListenerHTTP, accesslog.LimitMaxConnectionsPerClient) == 1
	})
	if got := testutil.ToFloat64(e.metrics.ClientConns.WithLabelValues("http")); got != 4 {
		t.Errorf("egressd_client_connections{http} = %v, want 4", got)
	}
}

func TestLimitPeerIsProxySkipsPerClient(t *testing.T) {
	e := newEnv(t, Options{Limits: Limits{MaxConnectionsPerClient: 1, MaxConnections: 3}},
		ListenerConfig{Protocol: policy.ListenerHTTP, PeerIsProxy: true})
	for range 3 {
		e.admitted(t, "127.0.0.1")
	}
	resp := e.refusedHTTP(t, "127.0.0.1", "GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d", resp.StatusCode)
	}
	waitFor(t, "rejection count", func() bool {
		return e.rejections(policy.ListenerHTTP, accesslog.LimitMaxConnections) == 1
	})
}

func TestLimitSOCKS5Refusal(t *testing.T) {
	e := newEnv(t, Options{Limits: Limits{MaxConnections: 1}}, ListenerConfig{Protocol: policy.ListenerSOCKS5})
	e.admitted(t, "")

	t.Run("x/net/proxy client", func(t *testing.T) {
		d, err := proxy.SOCKS5("tcp", e.addr, nil, &net.Dialer{Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.Dial("tcp", "a.test:443"); err == nil || !strings.Contains(err.Error(), "general SOCKS server failure") {
			t.Fatalf("dial through a full proxy: %v", err)
		}
	})
	t.Run("no acceptable method", func(t *testing.T) {
		c := dial(t, e.addr, "")
		c.Write([]byte{5, 1, 2}) // username/password only
		b, err := io.ReadAll(c)
		if err != nil || string(b) != "\x05\xff" {
			t.Fatalf("answer %x, %v", b, err)
		}
	})
	t.Run("not SOCKS", func(t *testing.T) {
		c := dial(t, e.addr, "")
		c.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
		if b, _ := io.ReadAll(c); len(b) != 0 {
			t.Fatalf("answer %q", b)
		}
	})
	waitFor(t, "three access lines", func() bool { return len(e.lines()) == 3 })
	if got := e.rejections(policy.ListenerSOCKS5, accesslog.LimitMaxConnections); got != 3 {
		t.Errorf("socks5 rejections %v", got)
	}
	var hosts []string
	for _, l := range e.lines() {
		hosts = append(hosts, l["host"].(string))
	}
	slices.Sort(hosts)
	if diff := cmp.Diff([]string{"", "", "a.test"}, hosts); diff != "" {
		t.Errorf("hosts in access lines (-want +got):\n%s", diff)
	}
	e.noConnAccepted(t)
}

// A refused client that sends nothing still gets its answer, after
// RefuseTimeout, and the connection is closed: a refusal never hangs.
func TestLimitSilentClientRefusalIsBounded(t *testing.T) {
	e := newEnv(t, Options{Limits: Limits{MaxConnections: 1}, RefuseTimeout: 200 * time.Millisecond},
		ListenerConfig{Protocol: policy.ListenerHTTP})
	e.admitted(t, "")
	c := dial(t, e.addr, "")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("answer: %v %v", resp, err)
	}
	io.ReadAll(resp.Body)
	// The client never closes; the refusal ends at its deadline.
	waitFor(t, "the refusal to end", func() bool { return len(e.lines()) == 1 })
}

// Past MaxRefusing, refused connections are closed without an answer.
func TestLimitMaxRefusing(t *testing.T) {
	e := newEnv(t, Options{Limits: Limits{MaxConnections: 1}, MaxRefusing: 1, RefuseTimeout: 5 * time.Second},
		ListenerConfig{Protocol: policy.ListenerHTTP})
	e.admitted(t, "")
	slow := dial(t, e.addr, "") // holds the one refusal slot: sends nothing
	waitFor(t, "the first refusal to start", func() bool {
		e.lim.mu.Lock()
		defer e.lim.mu.Unlock()
		return len(e.lim.refusing) == 1
	})
	c := dial(t, e.addr, "")
	b, err := io.ReadAll(c)
	if len(b) != 0 || (err != nil && !errors.Is(err, os.ErrDeadlineExceeded) && !isReset(err)) {
		t.Fatalf("overflow refusal: %q, %v", b, err)
	}
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("overflow refusal hung")
	}
	slow.Close()
	waitFor(t, "two rejections", func() bool {
		return e.rejections(policy.ListenerHTTP, accesslog.LimitMaxConnections) == 2
	})
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op)
}

// The count is released exactly once, whoever reports the close first.
func TestLimitReleaseExactlyOnce(t *testing.T) {
	e := newEnv(t, Options{}, ListenerConfig{Protocol: policy.ListenerHTTP})
	_, s1 := e.admitted(t, "")
	_, s2 := e.admitted(t, "")
	gauge := func() float64 { return testutil.ToFloat64(e.metrics.ClientConns.WithLabelValues("http")) }
	if g := gauge(); g != 2 {
		t.Fatalf("gauge %v", g)
	}
	s1.Close()
	e.lim.ConnState(s1, http.StateHijacked) // a hijack releases nothing
	e.lim.ConnState(s1, http.StateClosed)
	e.lim.ConnState(s1, http.StateClosed)
	e.lim.Release(s1)
	if got := e.lim.Open(); got != 1 {
		t.Fatalf("Open() = %d, want 1", got)
	}
	s2.Close() // closed by its owner: found by the sweep
	if got := e.lim.Open(); got != 0 {
		t.Fatalf("Open() = %d, want 0", got)
	}
	e.lim.Release(s2)
	e.lim.ConnState(s2, http.StateClosed)
	if g := gauge(); g != 0 {
		t.Fatalf("gauge %v after release, want 0", g)
	}
}

func TestLimitWait(t *testing.T) {
	e := newEnv(t, Options{Sweep: 10 * time.Millisecond}, ListenerConfig{Protocol: policy.ListenerHTTP})
	_, s := e.admitted(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := e.lim.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with an open conn: %v", err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	var err error
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = e.lim.Wait(ctx)
	}()
	s.Close()
	wg.Wait()
	if err != nil {
		t.Fatalf("Wait after close: %v", err)
	}
	waitFor(t, "the sweeper to move the gauge", func() bool {
		return testutil.ToFloat64(e.metrics.ClientConns.WithLabelValues("http")) == 0
	})
}

func TestLimitSetLimits(t *testing.T) {
	e := newEnv(t, Options{Limits: Limits{MaxConnections: 1}}, ListenerConfig{Protocol: policy.ListenerHTTP})
	e.admitted(t, "")
	e.lim.SetLimits(Limits{MaxConnections: 2})
	e.admitted(t, "")
	e.refusedHTTP(t, "", "GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n")
}

// Behind a load balancer (PeerIsProxy) connections count against the
// client a PROXY header names once AdmitClient learns it.
func TestLimitAdmitClientBehindProxy(t *testing.T) {
	e := newEnv(t, Options{Limits: Limits{MaxConnectionsPerClient: 2, MaxConnections: 10}},
		ListenerConfig{Protocol: policy.ListenerHTTP, PeerIsProxy: true})
	alice, bob := netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("::ffff:10.1.2.4")
	var clients, servers []net.Conn
	for range 4 {
		c, s := e.admitted(t, "127.0.0.1") // all from the load balancer
		clients, servers = append(clients, c), append(servers, s)
	}
	for i := range 2 {
		if !e.lim.AdmitClient(servers[i], alice, policy.ListenerHTTP) {
			t.Fatalf("connection %d of alice refused under the cap", i+1)
		}
	}
	// Asking again about an admitted conn changes nothing.
	if !e.lim.AdmitClient(servers[0], alice, policy.ListenerHTTP) {
		t.Fatal("a conn already counted for alice was refused")
	}
	if e.lim.AdmitClient(servers[2], alice, policy.ListenerHTTP) {
		t.Fatal("alice's third connection was admitted past max_connections_per_client 2")
	}
	io.WriteString(clients[2], "GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(clients[2]), nil)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("X-Egress-Error") != "limit" {
		t.Fatalf("refused connection: %v, %v", resp, err)
	}
	resp.Body.Close()
	// bob (an IPv4-mapped spelling) is another client.
	if !e.lim.AdmitClient(servers[3], bob, policy.ListenerHTTP) {
		t.Fatal("bob refused although only alice is at the cap")
	}
	waitFor(t, "the refusal's access line", func() bool { return len(e.lines()) == 1 })
	if l := e.lines()[0]; l["client"] != "10.1.2.3" || l["reason"] != "limit" {
		t.Errorf("access line %v, want client 10.1.2.3 and reason limit", l)
	}
	if got := e.rejections(policy.ListenerHTTP, accesslog.LimitMaxConnectionsPerClient); got != 1 {
		t.Errorf("per-client rejections %v, want 1", got)
	}
	if got := e.lim.Open(); got != 3 {
		t.Errorf("Open() = %d, want 3 (the refused conn released)", got)
	}
	// alice closes one: the next gets its slot.
	servers[0].Close()
	_, s := e.admitted(t, "127.0.0.1")
	if !e.lim.AdmitClient(s, alice, policy.ListenerHTTP) {
		t.Fatal("alice refused after closing one of her two connections")
	}
}
