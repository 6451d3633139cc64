package inspect

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accesslog"
)

// harness runs a Server behind a loopback listener: every connection it
// accepts is a tunnel allowed by dec, handed to Serve as proxy/tunnel does
// after the guard.
type harness struct {
	t     *testing.T
	s     *Server
	ln    net.Listener
	roots *x509.CertPool
	wg    sync.WaitGroup
	lines chan *accesslog.Record // each tunnel's record, once done ran

	mu       sync.Mutex
	failures int // client handshakes that failed

	// frontEndDeadline, when set, is a deadline the front end left on the
	// connection before handing it over.
	frontEndDeadline atomic.Int64
	accepted         atomic.Int32 // connections (tunnels) taken
}

func startHarness(t *testing.T, dec policy.Decision, sni string) *harness {
	t.Helper()
	ca := testCA(t)
	m, err := Load(Config{CACert: ca.CertFile, CAKey: ca.KeyFile, Bypass: []string{"pinned.example.com"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, roots: ca.Pool, lines: make(chan *accesslog.Record, 200)}
	chain := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tun := TunnelFrom(r.Context())
		if tun == nil {
			http.Error(w, "no tunnel", http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "%s %s %s name=%s port=%d tls=%v listener=%s", r.Proto, r.Method, r.URL.Path, tun.Name, tun.Port, tun.TLS, tun.Listener)
	})
	h.s = New(m, Options{
		Chain:     chain,
		Handshake: 5 * time.Second,
		Idle:      time.Minute,
		HandshakeResult: func(r string) {
			if r == HandshakeFailed {
				h.mu.Lock()
				h.failures++
				h.mu.Unlock()
			}
		},
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.ln = ln
	h.wg.Add(2)
	go func() {
		defer h.wg.Done()
		if err := h.s.Run(); err != nil {
			t.Error(err)
		}
	}()
	go func() {
		defer h.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.accepted.Add(1)
			rec := &accesslog.Record{Listener: policy.ListenerConnect, Client: netip.MustParseAddr("127.0.0.1"), SNI: sni}
			h.wg.Add(1)
			go func() {
				defer h.wg.Done()
				if d := time.Duration(h.frontEndDeadline.Load()); d > 0 {
					c.SetDeadline(time.Now().Add(d))
				}
				h.s.Serve(c.(*net.TCPConn), nil, dec, rec, 0, func() { h.lines <- rec })
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		h.s.Close()
		h.wg.Wait()
	})
	return h
}

func decision(t *testing.T, host string, port uint16) policy.Decision {
	t.Helper()
	p, err := policy.Compile(policy.Config{TLSPorts: []int{443}, Rules: []policy.Rule{{Name: "r", Hosts: []string{"example.com", "*.example.com"}, Ports: []int{443, 80}, Inspect: true}}})
	if err != nil {
		t.Fatal(err)
	}
	return policy.Decision{Verdict: policy.Allow, Host: host, Port: port, Inspect: true, Policy: p}
}

// client reaches the harness as name, trusting the test root or not,
// offering h2 or not.
func (h *harness) client(name string, trust, h2 bool) *http.Client {
	cfg := &tls.Config{ServerName: name}
	if trust {
		cfg.RootCAs = h.roots
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", h.ln.Addr().String())
		},
		TLSClientConfig:   cfg,
		ForceAttemptHTTP2: h2,
	}
	h.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func get(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestServeHTTP1AndHTTP2(t *testing.T) {
	h := startHarness(t, decision(t, "upload.example.com", 443), "upload.example.com")
	for _, tt := range []struct {
		h2    bool
		proto string
	}{{false, "HTTP/1.1"}, {true, "HTTP/2.0"}} {
		c := h.client("upload.example.com", true, tt.h2)
		for i := range 3 {
			got := get(t, c, fmt.Sprintf("https://upload.example.com/p%d", i))
			want := fmt.Sprintf("%s GET /p%d name=upload.example.com port=443 tls=true listener=connect", tt.proto, i)
			if got != want {
				t.Fatalf("got %q, want %q", got, want)
			}
		}
		c.Transport.(*http.Transport).CloseIdleConnections()
		rec := <-h.lines // one tunnel: three requests on one connection
		if rec.Up.Load() == 0 || rec.Down.Load() == 0 {
			t.Fatalf("tunnel bytes up %d down %d, want the TLS bytes counted", rec.Up.Load(), rec.Down.Load())
		}
	}
	if n := h.s.Material().Issuer().Issued(); n != 1 {
		t.Fatalf("issued %d leaves for one name over two tunnels, want 1", n)
	}
}

// TestServeOutlivesFrontEndDeadline: a deadline the front end set for its
// own handshake does not cut the inspected session later (on a plain-HTTP
// port net/http sets no deadline of its own to replace it).
func TestServeOutlivesFrontEndDeadline(t *testing.T) {
	h := startHarness(t, decision(t, "upload.example.com", 80), "")
	const deadline = 100 * time.Millisecond
	h.frontEndDeadline.Store(int64(deadline))
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", h.ln.Addr().String())
	}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	get(t, c, "http://upload.example.com/first")
	time.Sleep(3 * deadline) // past the front end's deadline, on one kept-alive connection
	if got := get(t, c, "http://upload.example.com/second"); !strings.HasSuffix(got, "GET /second name=upload.example.com port=80 tls=false listener=connect") {
		t.Fatalf("second request: %q", got)
	}
	if n := h.accepted.Load(); n != 1 {
		t.Fatalf("%d tunnels for two requests on a kept-alive connection: the first was cut", n)
	}
}

// TestUntrustedClientFailsCleanly: a client that does not trust the CA
// gets a certificate error of its own, the tunnel ends and is logged, and
// nothing reaches the chain.
func TestUntrustedClientFailsCleanly(t *testing.T) {
	h := startHarness(t, decision(t, "upload.example.com", 443), "upload.example.com")
	_, err := h.client("upload.example.com", false, false).Get("https://upload.example.com/")
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Fatalf("error %v, want x509.UnknownAuthorityError", err)
	}
	<-h.lines
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failures != 1 {
		t.Fatalf("%d handshake failures counted, want 1", h.failures)
	}
}

// TestHundredFirstConnections: 100 parallel first TLS connections to one
// name make one leaf.
func TestHundredFirstConnections(t *testing.T) {
	h := startHarness(t, decision(t, "burst.example.com", 443), "burst.example.com")
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := tls.Dial("tcp", h.ln.Addr().String(), &tls.Config{ServerName: "burst.example.com", RootCAs: h.roots})
			if err != nil {
				errs <- err
				return
			}
			conn.Close()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for range 100 {
		<-h.lines
	}
	if n := h.s.Material().Issuer().Issued(); n != 1 {
		t.Fatalf("100 parallel first connections issued %d leaves, want 1", n)
	}
}

// TestMinimumTLS12: a client that offers only TLS 1.1 is refused.
func TestMinimumTLS12(t *testing.T) {
	h := startHarness(t, decision(t, "upload.example.com", 443), "upload.example.com")
	_, err := tls.Dial("tcp", h.ln.Addr().String(), &tls.Config{ServerName: "upload.example.com", RootCAs: h.roots, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	if err == nil || !strings.Contains(err.Error(), "protocol version") {
		t.Fatalf("TLS 1.1 client: %v, want a protocol version alert", err)
	}
	<-h.lines
}

// TestPlainPort: an inspected tunnel to a port outside tls_ports carries
// plain HTTP, served by the same chain.
func TestPlainPort(t *testing.T) {
	h := startHarness(t, decision(t, "upload.example.com", 80), "")
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", h.ln.Addr().String())
	}}
	defer tr.CloseIdleConnections()
	got := get(t, &http.Client{Transport: tr}, "http://upload.example.com/x")
	if want := "HTTP/1.1 GET /x name=upload.example.com port=80 tls=false listener=connect"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestInspects(t *testing.T) {
	s := New(nil, Options{Chain: http.NotFoundHandler()})
	d := decision(t, "upload.example.com", 443)
	if s.Inspects(d) {
		t.Fatal("inspects without a CA")
	}
	ca := testCA(t)
	m, err := Load(Config{CACert: ca.CertFile, CAKey: ca.KeyFile, Bypass: []string{"pinned.example.com", "*.bank.example.com"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Store(m)
	for host, want := range map[string]bool{"upload.example.com": true, "pinned.example.com": false, "www.bank.example.com": false} {
		d.Host = host
		if got := s.Inspects(d); got != want {
			t.Errorf("Inspects(%s) = %v, want %v", host, got, want)
		}
	}
	d.Host, d.Inspect = "upload.example.com", false
	if s.Inspects(d) {
		t.Fatal("inspects a rule without inspect")
	}
	if m, err := Load(Config{}, nil); m != nil || err != nil {
		t.Fatalf("empty config: %v %v, want inspection off", m, err)
	}
}
