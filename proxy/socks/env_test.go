package socks

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accept"
	"github.com/egressd/egressd/proxy/accesslog"
	"github.com/egressd/egressd/proxy/egress"
	"github.com/egressd/egressd/proxy/limits"
	"github.com/egressd/egressd/proxy/tunnel"
)

// fakeResolver maps names to addresses; other names do not resolve.
type fakeResolver map[string][]netip.Addr

func (r fakeResolver) LookupNetIP(_ context.Context, host string) ([]netip.Addr, error) {
	if a, ok := r[host]; ok {
		return a, nil
	}
	return nil, errors.New("no such host")
}

// pinTo is a Decider that asks the real engine, then points an allowed
// decision's pinned address at the test origin: fuzz seeds can name fixed
// ports while the origin listens on an ephemeral one. The dialer's
// socket-level check still only lets the decision's address through.
type pinTo struct {
	e      *policy.Engine
	origin netip.AddrPort
}

func (p pinTo) Decide(ctx context.Context, r policy.Request) (policy.Decision, error) {
	d, err := p.e.Decide(ctx, r)
	if err == nil && len(d.Addrs) > 0 {
		d.Addrs = []netip.AddrPort{p.origin}
	}
	return d, err
}

// echoOrigin echoes every connection until EOF. close waits for all of
// them.
type echoOrigin struct {
	ln net.Listener
	wg sync.WaitGroup
}

func newEchoOrigin(t testing.TB) *echoOrigin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &echoOrigin{ln: ln}
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			o.wg.Add(1)
			go func() {
				defer o.wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				// Hide ReadFrom: Go's own splice would keep a pipe in
				// a sync.Pool, and the tests count descriptors.
				io.Copy(struct{ io.Writer }{c}, struct{ io.Reader }{c})
			}()
		}
	}()
	return o
}

func (o *echoOrigin) addr() netip.AddrPort { return o.ln.Addr().(*net.TCPAddr).AddrPort() }

func (o *echoOrigin) close() {
	o.ln.Close()
	o.wg.Wait()
}

type envOptions struct {
	pin          bool // pin allowed decisions to the origin (fuzzing)
	tlsPorts     []int
	auth         func(user, pass string) bool
	authRequired bool
	idle         time.Duration // tunnel idle timeout; zero: 5s
	library      bool          // go-socks5's Server serves every conn (the oracle, oracle_test.go)
	maxConns     int           // limits.max_connections; zero: none
	// share serves the same origin and refused port as another env (whose
	// close stops the origin), so two servers can answer identical bytes.
	share *env
}

// env is one socks.Server on loopback in front of an echo origin, with the
// access log and the diagnostics observed.
type env struct {
	t       testing.TB
	srv     *Server
	acc     *accept.Server // the state machine's accept pipeline; nil for the oracle
	lib     *library       // the oracle; nil for the state machine
	ln      net.Listener
	origin  *echoOrigin
	refused uint16 // refused.test's port: nothing listens there
	// closeRefused releases the refused port; nil when it is shared.
	closeRefused func()
	// sharedOrigin: the origin belongs to another env, which closes it.
	sharedOrigin bool
	access       *observer.ObservedLogs
	diag         *observer.ObservedLogs
	metrics      *accesslog.Metrics
	tunnels      *egress.Registry
	closed       sync.Once
}

// newEnv starts a server. The policy allows allowed.test (resolving to
// 127.0.0.1) and the literal 127.0.0.1 on the origin's port and on 80 and
// 443; admin.test only for user alice; refused.test resolves to a port
// where nothing listens.
func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	e := &env{t: t}
	var err error
	if o.share != nil {
		e.origin, e.refused, e.sharedOrigin = o.share.origin, o.share.refused, true
	} else {
		e.origin = newEchoOrigin(t)
		e.refused, e.closeRefused = refusingPort(t)
	}
	closedPort := int(e.refused)
	port := int(e.origin.addr().Port())
	if o.tlsPorts == nil {
		o.tlsPorts = []int{443}
	}
	pol, err := policy.Compile(policy.Config{
		Mode:       policy.ModeEnforce,
		DenyRanges: []string{policy.DefaultRanges},
		RequireSNI: true,
		TLSPorts:   o.tlsPorts,
		Groups:     map[string]policy.Group{"admins": {Users: []string{"alice"}}},
		Rules: []policy.Rule{
			{Name: "echo", Hosts: []string{"allowed.test"}, CIDRs: []string{"127.0.0.1/32"}, Ports: []int{port, 80, 443},
				AllowRanges: []string{"127.0.0.0/24"}},
			{Name: "refused", Hosts: []string{"refused.test"}, Ports: []int{closedPort}, AllowRanges: []string{"127.0.0.0/24"}},
			{Name: "nx", Hosts: []string{"nx.test"}, Ports: []int{port}},
			{Name: "admins", Groups: []string{"admins"}, Hosts: []string{"admin.test"}, Ports: []int{port},
				AllowRanges: []string{"127.0.0.0/24"}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	lo := netip.MustParseAddr("127.0.0.1")
	engine := policy.NewEngine(pol, fakeResolver{"allowed.test": {lo}, "refused.test": {lo}, "admin.test": {lo}})
	var decider policy.Decider = engine
	if o.pin {
		decider = pinTo{engine, e.origin.addr()}
	}
	accessCore, access := observer.New(zapcore.InfoLevel)
	diagCore, diag := observer.New(zapcore.DebugLevel)
	e.access, e.diag = access, diag
	e.tunnels = egress.NewRegistry()
	dialer := &egress.Dialer{Timeout: 2 * time.Second}
	e.metrics = accesslog.NewMetrics(prometheus.NewRegistry())
	e.srv = New(Options{
		Decider:      decider,
		Dialer:       dialer,
		Log:          accesslog.NewLogger(zap.New(accessCore), e.metrics),
		Runner:       &tunnel.Runner{Registry: e.tunnels, Handshake: 2 * time.Second, Idle: cmp.Or(o.idle, 5*time.Second)},
		Diag:         zap.New(diagCore),
		Handshake:    2 * time.Second,
		Auth:         o.auth,
		AuthRequired: o.authRequired,
	})
	e.ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if o.library {
		e.lib = serveLibrary(e.ln, decider, dialer, o.auth, o.authRequired)
	} else {
		e.acc = accept.Serve(e.ln, e.srv, accept.Options{
			Listener: policy.ListenerSOCKS5,
			Limits:   limits.New(limits.Limits{MaxConnections: o.maxConns}, e.metrics),
			Diag:     zap.New(diagCore),
		})
	}
	t.Cleanup(e.close)
	return e
}

// close stops the server and the origin and fails the test if a connection
// goroutine or a tunnel is still running: every conn the test opened must
// be over. It runs once (tests call it before reading the logs; cleanup
// calls it too).
func (e *env) close() { e.closed.Do(e.doClose) }

func (e *env) doClose() {
	if e.lib != nil {
		e.lib.close()
	} else {
		e.waitIdle()
		e.acc.Close()
	}
	// Tunnels run on the relay's goroutines; the registry sees them end
	// (both conns closed).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.tunnels.Wait(ctx); err != nil {
		e.t.Errorf("%d tunnels still open 10s after their clients left", e.tunnels.Len())
		e.tunnels.CloseAll()
	}
	if !e.sharedOrigin {
		e.origin.close()
	}
	if e.closeRefused != nil {
		e.closeRefused()
	}
	for _, l := range e.diag.FilterLevelExact(zapcore.ErrorLevel).All() {
		e.t.Errorf("diagnostic at error level: %s %v", l.Message, l.ContextMap())
	}
}

// waitIdle stops accepting and waits until every connection has been
// released (its session, and the tunnel it became, ended), without
// closing anything.
func (e *env) waitIdle() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.acc.Shutdown(ctx); err != nil {
		e.t.Errorf("%d socks5 connections still open 10s after their clients left", e.acc.Open())
	}
}

func (e *env) dial() *net.TCPConn {
	e.t.Helper()
	c, err := net.DialTimeout("tcp", e.ln.Addr().String(), 5*time.Second)
	if err != nil {
		e.t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c.(*net.TCPConn)
}

// exchange writes in, half-closes, and returns everything the server sent
// until it closed the connection.
func (e *env) exchange(in []byte) []byte {
	e.t.Helper()
	c := e.dial()
	defer c.Close()
	c.Write(in)
	c.CloseWrite()
	out, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		e.t.Fatalf("read: %v (server did not close within the deadline?)", err)
	}
	return out
}

func isReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && !oe.Timeout()
}

// accessLines returns the access log entries so far as field maps.
func (e *env) accessLines() []map[string]string {
	var out []map[string]string
	for _, l := range e.access.All() {
		out = append(out, lineFields(l))
	}
	return out
}

// lineFields is one access log entry's fields as text.
func lineFields(l observer.LoggedEntry) map[string]string {
	m := map[string]string{}
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range l.Context {
		f.AddTo(enc)
	}
	for k, v := range enc.Fields {
		m[k] = fmt.Sprint(v)
	}
	return m
}

// openFDs counts this process's open file descriptors. The relay's pipe
// pool keeps drained pipes for reuse by design; they are closed first so
// that only what a connection left behind counts.
func openFDs(t testing.TB) int {
	t.Helper()
	egress.DefaultPipePool.Trim()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// refusingPort returns a loopback port that refuses connections until
// release is called: a socket bound there without SO_REUSEADDR and never
// listening answers every SYN with a reset, and no other process can take
// the port meanwhile (a port freed by closing a listener could be reused
// by anyone on a shared machine, and then it accepts).
func refusingPort(t testing.TB) (port uint16, release func()) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	return uint16(sa.(*syscall.SockaddrInet4).Port), sync.OnceFunc(func() { syscall.Close(fd) })
}
