package accept

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accesslog"
	"github.com/egressd/egressd/proxy/limits"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The tests trust 127.0.0.2 as the load balancer; 127.0.0.1 is a direct
// client.
const (
	lbIP     = "127.0.0.2"
	directIP = "127.0.0.1"
)

// frontEnd hands each connection it is given to the test, which then owns
// it; with hold set, Serve returns only once hold is closed.
type frontEnd struct {
	conns chan *Conn
	hold  chan struct{}
}

func (f *frontEnd) Serve(c *Conn) {
	f.conns <- c
	if f.hold != nil {
		<-f.hold
	}
}

type env struct {
	t       *testing.T
	srv     *Server
	fe      *frontEnd
	lim     *limits.Limiter
	metrics *accesslog.Metrics
}

func newEnv(t *testing.T, o Options, lim limits.Limits) *env {
	return newEnvHold(t, o, lim, false)
}

// newEnvHold is newEnv; with hold, every Serve stays in progress until the
// test ends.
func newEnvHold(t *testing.T, o Options, lim limits.Limits, hold bool) *env {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, fe: &frontEnd{conns: make(chan *Conn, 64)}}
	if hold {
		e.fe.hold = make(chan struct{})
	}
	e.metrics = accesslog.NewMetrics(prometheus.NewRegistry())
	e.lim = limits.New(lim, e.metrics)
	o.Limits = e.lim
	o.Listener = policy.ListenerHTTP
	if o.ProxyProtocol && o.Trusted == nil {
		o.Trusted = []netip.Prefix{netip.MustParsePrefix(lbIP + "/32")}
	}
	e.srv = Serve(ln, e.fe, o)
	t.Cleanup(func() {
		if e.fe.hold != nil {
			close(e.fe.hold)
		}
		e.srv.Close()
		close(e.fe.conns)
		for c := range e.fe.conns {
			c.Close()
		}
	})
	return e
}

func (e *env) dial(from string) *net.TCPConn {
	e.t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", e.srv.Addr().String())
	if err != nil {
		e.t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	e.t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// next returns the next connection the front end got.
func (e *env) next() *Conn {
	e.t.Helper()
	select {
	case c := <-e.fe.conns:
		return c
	case <-time.After(10 * time.Second):
		e.t.Fatal("no connection reached the front end")
		return nil
	}
}

func (e *env) nothingServed() {
	e.t.Helper()
	select {
	case c := <-e.fe.conns:
		e.t.Fatalf("connection from %v reached the front end", c.Client)
	case <-time.After(100 * time.Millisecond):
	}
}

// closedByServer checks that c was closed without a byte.
func closedByServer(t *testing.T, c net.Conn) {
	t.Helper()
	n, err := c.Read(make([]byte, 1))
	if n != 0 || err == nil || errors.Is(err, context.DeadlineExceeded) || isTimeoutErr(err) {
		t.Fatalf("conn not closed by the server: n=%d err=%v", n, err)
	}
}

func isTimeoutErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestDirectClient(t *testing.T) {
	e := newEnv(t, Options{}, limits.Limits{})
	client := e.dial(directIP)
	c := e.next()
	want := client.LocalAddr().(*net.TCPAddr).AddrPort()
	if c.Client != want || c.Limit != "" {
		t.Fatalf("Client %v Limit %q, want %v and none", c.Client, c.Limit, want)
	}
	if e.srv.Open() != 1 || e.lim.Open() != 1 {
		t.Fatalf("open %d, counted %d", e.srv.Open(), e.lim.Open())
	}
	c.Close()
	c.Release()
	if e.srv.Open() != 0 || e.lim.Open() != 0 {
		t.Fatalf("after Close: open %d, counted %d", e.srv.Open(), e.lim.Open())
	}
}

func TestProxyHeader(t *testing.T) {
	e := newEnv(t, Options{ProxyProtocol: true}, limits.Limits{})
	lb := e.dial(lbIP)
	io.WriteString(lb, "PROXY TCP4 203.0.113.7 10.0.0.1 51000 3128\r\nGET")
	c := e.next()
	if want := netip.MustParseAddrPort("203.0.113.7:51000"); c.Client != want {
		t.Fatalf("Client %v, want %v", c.Client, want)
	}
	b := make([]byte, 3)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "GET" {
		t.Fatalf("front end read %q, %v", b, err)
	}
	c.Close()

	// A direct client is known by its socket; a header from it is forged.
	direct := e.dial(directIP)
	io.WriteString(direct, "\x05\x01\x00")
	if c := e.next(); c.Client.Addr() != netip.MustParseAddr(directIP) {
		t.Fatalf("direct client %v", c.Client)
	} else {
		c.Close()
	}
	forged := e.dial(directIP)
	io.WriteString(forged, "PROXY TCP4 203.0.113.7 10.0.0.1 51000 3128\r\nGET")
	closedByServer(t, forged)
	missing := e.dial(lbIP)
	io.WriteString(missing, "GET / HTTP/1.1\r\n\r\n")
	closedByServer(t, missing)
	e.nothingServed()
	if e.srv.Open() != 0 || e.lim.Open() != 0 {
		t.Fatalf("refused conns left: open %d, counted %d", e.srv.Open(), e.lim.Open())
	}
}

// A load balancer that is slow to send a header holds up no other
// connection, and is cut at the header timeout.
func TestSlowHeader(t *testing.T) {
	e := newEnv(t, Options{ProxyProtocol: true, HeaderTimeout: 500 * time.Millisecond}, limits.Limits{})
	start := time.Now()
	slow := e.dial(lbIP)
	slowDirect := e.dial(directIP)
	lb := e.dial(lbIP)
	io.WriteString(lb, "PROXY TCP4 203.0.113.9 10.0.0.1 1 2\r\n")
	e.next().Close()
	if d := time.Since(start); d > 400*time.Millisecond {
		t.Fatalf("a good connection waited %v behind silent ones", d)
	}
	closedByServer(t, slow)
	closedByServer(t, slowDirect)
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Fatalf("silent conns cut after %v, before the timeout", d)
	}
}

func TestLimits(t *testing.T) {
	e := newEnv(t, Options{}, limits.Limits{MaxConnections: 2})
	e.dial(directIP)
	first := e.next()
	e.dial(directIP)
	e.next()
	e.dial(directIP)
	refused := e.next()
	if refused.Limit != accesslog.LimitMaxConnections {
		t.Fatalf("third connection: Limit %q", refused.Limit)
	}
	// A refused connection holds no slot, but is open until released.
	if e.lim.Open() != 2 || e.srv.Open() != 3 {
		t.Fatalf("counted %d, open %d", e.lim.Open(), e.srv.Open())
	}
	if g := testutil.ToFloat64(e.metrics.ClientConns.WithLabelValues("http")); g != 2 {
		t.Errorf("egressd_client_connections %v, want 2", g)
	}
	refused.Close()
	first.Close()
	e.dial(directIP)
	if c := e.next(); c.Limit != "" {
		t.Fatalf("refused after a connection closed: %q", c.Limit)
	}
}

// Behind a load balancer a connection counts against the client its
// header names.
func TestPerClientBehindLoadBalancer(t *testing.T) {
	e := newEnv(t, Options{ProxyProtocol: true}, limits.Limits{MaxConnectionsPerClient: 1})
	alice := "PROXY TCP4 203.0.113.7 10.0.0.1 51000 3128\r\n"
	io.WriteString(e.dial(lbIP), alice)
	a := e.next()
	io.WriteString(e.dial(lbIP), "PROXY TCP4 203.0.113.8 10.0.0.1 51000 3128\r\n")
	if b := e.next(); b.Limit != "" {
		t.Fatalf("bob refused: %q", b.Limit)
	}
	io.WriteString(e.dial(lbIP), alice)
	if again := e.next(); again.Limit != accesslog.LimitMaxConnectionsPerClient || again.Client.Addr() != a.Client.Addr() {
		t.Fatalf("alice's second connection: Limit %q client %v", again.Limit, again.Client)
	}
}

// Past MaxRefusing refusals in progress the front end gets a refused
// connection with its socket already closed.
func TestMaxRefusing(t *testing.T) {
	e := newEnvHold(t, Options{MaxRefusing: 1}, limits.Limits{MaxConnections: 1}, true)
	e.dial(directIP)
	e.next() // holds the one slot
	e.dial(directIP)
	first := e.next() // a refusal in progress, until the test releases it
	e.dial(directIP)
	second := e.next()
	if first.Limit == "" || second.Limit == "" {
		t.Fatal("not refused")
	}
	if _, err := first.Write([]byte("x")); err != nil {
		t.Fatalf("the first refusal's socket: %v", err)
	}
	if _, err := second.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("the refusal past MaxRefusing: write %v, want its socket closed", err)
	}
}

// Shutdown waits for every connection to be released; Close cuts those
// still open, including ones in their PROXY header, and ends every
// goroutine (goleak).
func TestShutdownAndClose(t *testing.T) {
	e := newEnv(t, Options{ProxyProtocol: true, HeaderTimeout: time.Minute}, limits.Limits{})
	io.WriteString(e.dial(lbIP), "PROXY TCP4 203.0.113.9 10.0.0.1 1 2\r\n")
	held := e.next()
	inHeader := e.dial(lbIP)
	io.WriteString(inHeader, "PROXY TCP4 ")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := e.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with open conns: %v", err)
	}
	done := make(chan error)
	go func() { done <- e.srv.Shutdown(context.Background()) }()
	held.Close()
	e.srv.Close() // cuts the one in its header
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	closedByServer(t, inHeader)
	if _, err := net.Dial("tcp", e.srv.Addr().String()); err == nil {
		t.Fatal("still accepting after Close")
	}
}

type panicky struct{ calls atomic.Int32 }

func (p *panicky) Serve(c *Conn) {
	p.calls.Add(1)
	panic("front end bug")
}

func TestPanicRecovered(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var panics atomic.Int32
	p := &panicky{}
	srv := Serve(ln, p, Options{OnPanic: func() { panics.Add(1) }})
	defer srv.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	closedByServer(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil || panics.Load() != 1 {
		t.Fatalf("after the panic: Shutdown %v, OnPanic called %d times", err, panics.Load())
	}
}
