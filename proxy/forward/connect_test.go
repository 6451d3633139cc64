package forward

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accept"
	"github.com/egressd/egressd/proxy/accesslog"
	"github.com/egressd/egressd/proxy/egress"
	"github.com/egressd/egressd/proxy/tunnel"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// countingResolver maps names to addresses and counts lookups.
type countingResolver struct {
	names   map[string][]netip.Addr
	lookups atomic.Int64
}

func (r *countingResolver) LookupNetIP(_ context.Context, host string) ([]netip.Addr, error) {
	r.lookups.Add(1)
	if a, ok := r.names[host]; ok {
		return a, nil
	}
	return nil, errors.New("no such host")
}

// countingDecider counts the decisions the real engine makes.
type countingDecider struct {
	e         *policy.Engine
	decisions atomic.Int64
}

func (d *countingDecider) Decide(ctx context.Context, r policy.Request) (policy.Decision, error) {
	d.decisions.Add(1)
	return d.e.Decide(ctx, r)
}

// connectEnv is a Handler behind a real accept pipeline on loopback, in
// front of an echo origin, with a policy that allows allowed.test (the
// origin) and private.test (a name that resolves into 10.0.0.0/8, which
// the default deny ranges refuse).
type connectEnv struct {
	t        *testing.T
	addr     string
	port     uint16 // the origin's
	resolver *countingResolver
	decider  *countingDecider
	dials    atomic.Int64
	auths    atomic.Int64
	access   *observer.ObservedLogs
}

func newConnectEnv(t *testing.T, auth func(string) (string, bool), required bool) *connectEnv {
	t.Helper()
	origin, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := origin.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	e := &connectEnv{t: t, port: uint16(origin.Addr().(*net.TCPAddr).Port)}
	pol, err := policy.Compile(policy.Config{
		Mode:       policy.ModeEnforce,
		DenyRanges: []string{policy.DefaultRanges},
		Rules: []policy.Rule{{Name: "a", Hosts: []string{"allowed.test", "private.test"}, Ports: []int{int(e.port)},
			AllowRanges: []string{"127.0.0.0/24"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.resolver = &countingResolver{names: map[string][]netip.Addr{
		"allowed.test": {netip.MustParseAddr("127.0.0.1")},
		"private.test": {netip.MustParseAddr("10.0.0.1")},
	}}
	e.decider = &countingDecider{e: policy.NewEngine(pol, e.resolver)}
	core, access := observer.New(zapcore.InfoLevel)
	e.access = access
	var countedAuth func(string) (string, bool)
	if auth != nil {
		countedAuth = func(h string) (string, bool) {
			e.auths.Add(1)
			return auth(h)
		}
	}
	registry := egress.NewRegistry()
	h := New(Options{
		Decider:      e.decider,
		Dialer:       &egress.Dialer{Timeout: 2 * time.Second, Observe: func(time.Duration, error) { e.dials.Add(1) }},
		Log:          accesslog.NewLogger(zap.New(core), nil),
		Runner:       &tunnel.Runner{Registry: registry, Handshake: 2 * time.Second},
		Handshake:    2 * time.Second,
		Auth:         countedAuth,
		AuthRequired: required,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	acc := accept.Serve(ln, h, accept.Options{Listener: policy.ListenerHTTP})
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		h.Run()
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		acc.Shutdown(ctx) // every connection released: requests, tunnels
		h.Close()
		acc.Close()
		<-ran
		registry.CloseAll()
		origin.Close()
	})
	return e
}

// connect sends head on a new connection and returns the response to it.
func (e *connectEnv) connect(head string) (*http.Response, *bufio.Reader, net.Conn) {
	e.t.Helper()
	c, err := net.DialTimeout("tcp", e.addr, 5*time.Second)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, head); err != nil {
		e.t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		e.t.Fatalf("no answer to %q: %v", head, err)
	}
	return resp, br, c
}

// heads are the two ways a CONNECT head reaches serveConnect: plain (the
// fast path answers it without net/http) and unusual (net/http reads it).
func heads(target, extra string) map[string]string {
	return map[string]string{
		"fast path": "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n" + extra + "\r\n",
		"net/http":  "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\nX-Note: caf\xc3\xa9\r\n" + extra + "\r\n",
	}
}

// TestConnectDecidedOnce: a denied CONNECT is decided once, with one DNS
// lookup, and answered once (403 with its reason; nothing dialed), whether
// the fast path or net/http read its head; an allowed one is decided once
// too, and tunnels.
func TestConnectDecidedOnce(t *testing.T) {
	e := newConnectEnv(t, nil, false)
	for path, head := range heads(fmt.Sprintf("private.test:%d", e.port), "") {
		t.Run("denied, "+path, func(t *testing.T) {
			d0, l0, a0 := e.decider.decisions.Load(), e.resolver.lookups.Load(), e.access.Len()
			resp, br, _ := e.connect(head)
			if resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-Egress-Denied") != "private_range" {
				t.Fatalf("answer %d %v", resp.StatusCode, resp.Header)
			}
			if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "egressd: denied: private_range\n" {
				t.Fatalf("body %q, %v", b, err)
			}
			if _, err := br.ReadByte(); err == nil {
				t.Fatal("the connection stays open after the refusal")
			}
			if d, l := e.decider.decisions.Load()-d0, e.resolver.lookups.Load()-l0; d != 1 || l != 1 {
				t.Fatalf("%d decisions and %d DNS lookups, want one each", d, l)
			}
			if n := e.dials.Load(); n != 0 {
				t.Fatalf("%d dials for denied CONNECTs", n)
			}
			waitLines(t, e.access, a0+1)
			l := e.access.All()[a0].ContextMap()
			if l["reason"] != "private_range" || fmt.Sprint(l["status"]) != "403" || l["listener"] != "connect" {
				t.Fatalf("access line %v", l)
			}
		})
	}
	for path, head := range heads(fmt.Sprintf("allowed.test:%d", e.port), "") {
		t.Run("allowed, "+path, func(t *testing.T) {
			d0 := e.decider.decisions.Load()
			resp, br, c := e.connect(head)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("answer %d", resp.StatusCode)
			}
			io.WriteString(c, "ping")
			b := make([]byte, 4)
			if _, err := io.ReadFull(br, b); err != nil || string(b) != "ping" {
				t.Fatalf("tunnel echoed %q, %v", b, err)
			}
			if d := e.decider.decisions.Load() - d0; d != 1 {
				t.Fatalf("%d decisions, want 1", d)
			}
		})
	}
}

// TestConnectAuthCheckedOnce: credentials are checked once per CONNECT,
// whichever path read it, also when the check fails for want of a bcrypt
// slot (auth overload): the client gets 407, and nothing is decided.
func TestConnectAuthCheckedOnce(t *testing.T) {
	overloaded := func(string) (string, bool) { return "", false }
	e := newConnectEnv(t, overloaded, false)
	for path, head := range heads(fmt.Sprintf("allowed.test:%d", e.port), "Proxy-Authorization: Basic YWxpY2U6c2VjcmV0\r\n") {
		t.Run(path, func(t *testing.T) {
			a0, d0 := e.auths.Load(), e.decider.decisions.Load()
			resp, _, _ := e.connect(head)
			if resp.StatusCode != http.StatusProxyAuthRequired || !strings.HasPrefix(resp.Header.Get("Proxy-Authenticate"), "Basic") {
				t.Fatalf("answer %d %v", resp.StatusCode, resp.Header)
			}
			if a, d := e.auths.Load()-a0, e.decider.decisions.Load()-d0; a != 1 || d != 0 {
				t.Fatalf("%d credential checks and %d decisions, want 1 and 0", a, d)
			}
		})
	}
}

// waitLines waits for the access log to hold n lines: a refusal's line is
// written while the client reads the answer.
func waitLines(t *testing.T, logs *observer.ObservedLogs, n int) {
	t.Helper()
	for start := time.Now(); logs.Len() < n; time.Sleep(time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("%d access lines, want %d", logs.Len(), n)
		}
	}
}
