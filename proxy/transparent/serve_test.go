package transparent

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accept"
	"github.com/egressd/egressd/proxy/accesslog"
	"github.com/egressd/egressd/proxy/forward"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// served is one connection a FrontEnd serves: a loopback listener's (not
// redirected: its original destination is the listener itself, so a dial
// of the destination would be accepted by ln), its client's side, and
// done, closed when Serve returned.
type served struct {
	ln     net.Listener
	client net.Conn
	done   chan struct{}
}

// serveOne accepts one connection on a loopback listener, sets its limit,
// and serves it with the front end newFront builds for the listener's
// port, in a goroutine the test's end waits for.
func serveOne(t *testing.T, limit string, newFront func(port uint16) *FrontEnd) *served {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := accept.NewConn(sc.(*net.TCPConn))
	c.Limit = limit
	f := newFront(uint16(ln.Addr().(*net.TCPAddr).Port))
	s := &served{ln: ln, client: client, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		f.Serve(c)
	}()
	t.Cleanup(func() { client.Close(); <-s.done })
	return s
}

// assertNothingDialed: the destination (the listener itself) got no
// connection besides the client's.
func (s *served) assertNothingDialed(t *testing.T) {
	t.Helper()
	s.ln.(*net.TCPListener).SetDeadline(time.Now())
	if c, err := s.ln.Accept(); err == nil {
		c.Close()
		t.Errorf("the original destination was dialed")
	} else if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("accept: %v", err)
	}
}

// ports returns a Policy func whose policy has http_ports and tls_ports.
func ports(t *testing.T, httpPorts, tlsPorts []int) func() *policy.Policy {
	t.Helper()
	pol, err := policy.Compile(policy.Config{HTTPPorts: httpPorts, TLSPorts: tlsPorts})
	if err != nil {
		t.Fatal(err)
	}
	return func() *policy.Policy { return pol }
}

// TestServeRefusals: a connection past a limit on a port that is not one
// of http_ports (a tls_ports port: there is no protocol to answer in), and
// one whose original destination is the listener itself, are closed
// without an answer, with an access line (limit; bad_request) and nothing
// decided or dialed (the front end has no decider or dialer to reach for).
func TestServeRefusals(t *testing.T) {
	for _, tc := range []struct {
		name, limit string
		reason      policy.Reason
	}{
		{"limit", accesslog.LimitMaxConnectionsPerClient, policy.ReasonLimit},
		{"loop", "", policy.ReasonBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core, lines := observer.New(zapcore.InfoLevel)
			m := accesslog.NewMetrics(prometheus.NewRegistry())
			log := accesslog.NewLogger(zap.New(core), m)
			s := serveOne(t, tc.limit, func(port uint16) *FrontEnd {
				return New(Options{Log: log, Policy: ports(t, []int{80}, []int{int(port)})})
			})
			// A request head (as if it were HTTP) changes nothing.
			io.WriteString(s.client, "GET / HTTP/1.1\r\nHost: example.test\r\n\r\n")
			s.client.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := s.client.Read(make([]byte, 1)); err == nil {
				t.Errorf("the refused connection got %d bytes", n)
			}
			<-s.done
			all := lines.All()
			if len(all) != 1 {
				t.Fatalf("%d access lines, want 1", len(all))
			}
			l := all[0].ContextMap()
			if l["listener"] != "transparent" || l["reason"] != string(tc.reason) || l["decision"] != "deny" {
				t.Errorf("line %v", l)
			}
			if od, _ := l["orig_dst"].(string); od != s.ln.Addr().String() {
				t.Errorf("orig_dst %v, want %v", l["orig_dst"], s.ln.Addr())
			}
			want := 0.0
			if tc.limit != "" {
				want = 1
			}
			if n := testutil.ToFloat64(m.LimitRejects.WithLabelValues("transparent", accesslog.LimitMaxConnectionsPerClient)); n != want {
				t.Errorf("egressd_limit_rejections_total{listener=transparent} %v, want %v", n, want)
			}
			s.assertNothingDialed(t)
		})
	}
}

// TestServeLimitHTTP: a connection past a limit on one of http_ports is
// answered as listen.http answers one (503, X-Egress-Error: limit; its
// client believes it talks to the origin), after forward read the request
// head for the access line: the transparent listener's, with orig_dst and
// the request's Host, method and path. Nothing is decided or dialed.
func TestServeLimitHTTP(t *testing.T) {
	core, lines := observer.New(zapcore.InfoLevel)
	m := accesslog.NewMetrics(prometheus.NewRegistry())
	log := accesslog.NewLogger(zap.New(core), m)
	// No decider, dialer or runner: a decision or a dial would panic.
	h := forward.New(forward.Options{Log: log, RefuseTimeout: 5 * time.Second})
	defer h.Close()
	s := serveOne(t, accesslog.LimitMaxConnectionsPerClient, func(port uint16) *FrontEnd {
		return New(Options{Log: log, HTTP: h, Policy: ports(t, []int{80, int(port)}, []int{443})})
	})
	s.client.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(s.client, "GET /page?q=secret HTTP/1.1\r\nHost: example.test\r\nUser-Agent: inline-test\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(s.client), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("X-Egress-Error") != "limit" || !resp.Close {
		t.Errorf("answer %s %v", resp.Status, resp.Header)
	}
	if string(body) != "egressd: refused: limit\n" {
		t.Errorf("body %q", body)
	}
	s.client.Close()
	<-s.done

	all := lines.All()
	if len(all) != 1 {
		t.Fatalf("%d access lines, want 1", len(all))
	}
	l := all[0].ContextMap()
	_, port, _ := net.SplitHostPort(s.ln.Addr().String())
	_, clientPort, _ := net.SplitHostPort(s.client.LocalAddr().String())
	for k, v := range map[string]string{
		"listener": "transparent", "decision": "deny", "reason": "limit", "status": "503",
		"orig_dst": s.ln.Addr().String(), "client": "127.0.0.1", "client_port": clientPort,
		"host": "example.test", "port": port, "method": "GET", "path": "/page", "user_agent": "inline-test",
	} {
		if got := fmt.Sprint(l[k]); got != v {
			t.Errorf("line %s = %q, want %q", k, got, v)
		}
	}
	if n := testutil.ToFloat64(m.LimitRejects.WithLabelValues("transparent", accesslog.LimitMaxConnectionsPerClient)); n != 1 {
		t.Errorf("egressd_limit_rejections_total{listener=transparent} %v, want 1", n)
	}
	if n := testutil.ToFloat64(m.LimitRejects.WithLabelValues("http", accesslog.LimitMaxConnectionsPerClient)); n != 0 {
		t.Errorf("egressd_limit_rejections_total{listener=http} %v, want 0", n)
	}
	s.assertNothingDialed(t)
}
