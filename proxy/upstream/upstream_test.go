package upstream

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeParent is a parent proxy on loopback that reads one CONNECT per
// connection and answers with whatever answer returns (written in the
// given pieces), then echoes the tunnel.
type fakeParent struct {
	ln   net.Listener
	addr netip.AddrPort
	wg   sync.WaitGroup

	mu   sync.Mutex
	reqs []*http.Request
}

func newFakeParent(t *testing.T, answer func(r *http.Request) []string) *fakeParent {
	t.Helper()
	return fakeParentOn(t, "127.0.0.1:0", answer)
}

// fakeParentOn is a fake parent listening on addr.
func fakeParentOn(t *testing.T, addr string, answer func(r *http.Request) []string) *fakeParent {
	t.Helper()
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	p := &fakeParent{ln: ln, addr: ln.Addr().(*net.TCPAddr).AddrPort()}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				r, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				p.mu.Lock()
				p.reqs = append(p.reqs, r)
				p.mu.Unlock()
				for _, piece := range answer(r) {
					if piece == "" {
						return // close without (more of) an answer
					}
					if _, err := io.WriteString(c, piece); err != nil {
						return
					}
				}
				io.Copy(c, br) // the tunnel: echo
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.wg.Wait()
	})
	return p
}

func (p *fakeParent) requests() []*http.Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*http.Request(nil), p.reqs...)
}

// deadAddr is a loopback port nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

type counts struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *counts) observe(proxy, result string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	c.m[proxy+" "+result]++
}

func (c *counts) get() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for k, v := range c.m {
		out[k] = v
	}
	return out
}

func newDialer(ps ...Parent) (*Dialer, *counts) {
	var c counts
	d := &Dialer{Observe: c.observe}
	d.Store(NewSet(ps))
	return d, &c
}

const established = "HTTP/1.1 200 Connection established\r\n\r\n"

func TestConnect(t *testing.T) {
	// The answer and the parent's first tunnel bytes in one write: none
	// of them may be lost to egressd's reading of the answer.
	parent := newFakeParent(t, func(*http.Request) []string { return []string{established + "SSH-2.0-banner\r\n"} })
	d, c := newDialer(Parent{Name: "corp", Addrs: []string{parent.addr.String()}, Username: "egress", Password: "s3cret"})
	conn, early, addr, err := d.Connect(context.Background(), "corp", "app.partner.example", 443, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if addr != parent.addr {
		t.Errorf("addr %v, want %v", addr, parent.addr)
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	// The banner came in the answer's segment: read with it, it is early.
	banner := make([]byte, len("SSH-2.0-banner\r\n"))
	if _, err := io.ReadFull(io.MultiReader(bytes.NewReader(early), conn), banner); err != nil || string(banner) != "SSH-2.0-banner\r\n" {
		t.Fatalf("first tunnel bytes %q, %v", banner, err)
	}
	if len(early) == 0 {
		t.Errorf("the banner written with the answer was left in the socket: the test no longer covers bytes read past the head")
	}
	io.WriteString(conn, "ping")
	echo := make([]byte, 4)
	if _, err := io.ReadFull(conn, echo); err != nil || string(echo) != "ping" {
		t.Fatalf("echo %q, %v", echo, err)
	}
	reqs := parent.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests", len(reqs))
	}
	r := reqs[0]
	if r.Method != http.MethodConnect || r.RequestURI != "app.partner.example:443" || r.Host != "app.partner.example:443" {
		t.Errorf("request %s %s Host %s", r.Method, r.RequestURI, r.Host)
	}
	if got := r.Header.Get("Proxy-Authorization"); got != "Basic ZWdyZXNzOnMzY3JldA==" {
		t.Errorf("Proxy-Authorization %q", got)
	}
	if diff := cmp.Diff(map[string]int{"corp ok": 1}, c.get()); diff != "" {
		t.Error(diff)
	}
}

func TestConnectIPv6AndNoCredentials(t *testing.T) {
	parent := newFakeParent(t, func(*http.Request) []string { return []string{"HTTP/1.0 200\r\n\r\n"} })
	d, _ := newDialer(Parent{Name: "corp", Addrs: []string{parent.addr.String()}})
	conn, _, _, err := d.Connect(context.Background(), "corp", "2001:db8::1", 8443, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	r := parent.requests()[0]
	if r.RequestURI != "[2001:db8::1]:8443" || r.Header.Get("Proxy-Authorization") != "" {
		t.Errorf("request %s, Proxy-Authorization %q", r.RequestURI, r.Header.Get("Proxy-Authorization"))
	}
}

// TestConnectAnswerInPieces: an answer that arrives a few bytes at a time
// (the end split across writes) is read whole and nothing past it.
func TestConnectAnswerInPieces(t *testing.T) {
	for _, pieces := range [][]string{
		{"HTTP/1.1 200 OK\r\n", "Via: 1.1 corp\r\n\r", "\nfirst"},
		{"HTTP/1.1 200 OK\r\nVia: x\r\n", "\r\n", "first"},
		{"HTTP/1.1 200 OK\n", "\nfirst"},
		{"H", "TTP/1.1 2", "00 OK\r\n\r\nfirst"},
	} {
		pieces := pieces
		// Each piece is its own write (TCP_NODELAY: its own segment);
		// the reader may see them apart or together.
		parent := newFakeParent(t, func(*http.Request) []string { return pieces })
		d, _ := newDialer(Parent{Name: "corp", Addrs: []string{parent.addr.String()}})
		conn, early, _, err := d.Connect(context.Background(), "corp", "a.example", 443, 2*time.Second)
		if err != nil {
			t.Fatalf("%q: %v", pieces, err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		first := make([]byte, 5)
		if _, err := io.ReadFull(io.MultiReader(bytes.NewReader(early), conn), first); err != nil || string(first) != "first" {
			t.Errorf("%q: tunnel starts %q, %v", pieces, first, err)
		}
		conn.Close()
	}
}

func TestConnectRefused(t *testing.T) {
	parent := newFakeParent(t, func(*http.Request) []string {
		return []string{"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"}
	})
	d, c := newDialer(Parent{Name: "corp", Addrs: []string{parent.addr.String()}, Username: "egress", Password: "s3cret"})
	_, _, _, err := d.Connect(context.Background(), "corp", "blocked.example", 443, time.Second)
	var pe *Error
	if !errors.As(err, &pe) || pe.Status != 403 || pe.Addr != parent.addr || pe.Result != ResultRefused || pe.Proxy != "corp" {
		t.Fatalf("err %#v", err)
	}
	if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "ZWdyZXNz") {
		t.Errorf("error shows credentials: %v", err)
	}
	if diff := cmp.Diff(map[string]int{"corp refused": 1}, c.get()); diff != "" {
		t.Error(diff)
	}
}

func TestConnectFailover(t *testing.T) {
	parent := newFakeParent(t, func(*http.Request) []string { return []string{established} })
	dead1, dead2 := deadAddr(t), deadAddr(t)
	d, c := newDialer(Parent{Name: "corp", Addrs: []string{dead1, dead2, parent.addr.String()}, ConnectTimeout: time.Second})
	conn, _, addr, err := d.Connect(context.Background(), "corp", "a.example", 443, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if addr != parent.addr {
		t.Errorf("addr %v", addr)
	}
	if diff := cmp.Diff(map[string]int{"corp down": 2, "corp ok": 1}, c.get()); diff != "" {
		t.Error(diff)
	}
}

func TestConnectAllDown(t *testing.T) {
	d, c := newDialer(Parent{Name: "corp", Addrs: []string{deadAddr(t), deadAddr(t)}, ConnectTimeout: time.Second})
	_, _, _, err := d.Connect(context.Background(), "corp", "a.example", 443, time.Second)
	var pe *Error
	if !errors.As(err, &pe) || pe.Result != ResultUnavailable || pe.Addr.IsValid() || pe.Status != 0 {
		t.Fatalf("err %#v", err)
	}
	if !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("error %q does not say why", err)
	}
	if diff := cmp.Diff(map[string]int{"corp down": 2, "corp unavailable": 1}, c.get()); diff != "" {
		t.Error(diff)
	}
}

// TestConnectSkipsDownURL: a URL that did not accept a connection is
// tried after the parent's others while it is marked down (10 s, doubling
// with each failure in a row up to 2 min), so a dead first URL costs the
// next connections nothing; when its time is up it is tried first again,
// and a parent whose every URL is down still has each tried once per
// connection.
func TestConnectSkipsDownURL(t *testing.T) {
	parent := newFakeParent(t, func(*http.Request) []string { return []string{established} })
	dead := deadAddr(t)
	d, c := newDialer(Parent{Name: "corp", Addrs: []string{dead, parent.addr.String()}, ConnectTimeout: time.Second})
	now := time.Unix(1_000_000, 0)
	d.now = func() time.Time { return now }
	connect := func(want map[string]int) {
		t.Helper()
		conn, _, addr, err := d.Connect(context.Background(), "corp", "a.example", 443, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
		if addr != parent.addr {
			t.Errorf("connected to %v", addr)
		}
		if diff := cmp.Diff(want, c.get()); diff != "" {
			t.Errorf("at +%v: %s", now.Sub(time.Unix(1_000_000, 0)), diff)
		}
	}
	connect(map[string]int{"corp down": 1, "corp ok": 1})
	now = now.Add(9 * time.Second)
	connect(map[string]int{"corp down": 1, "corp ok": 2}) // dead skipped
	now = now.Add(2 * time.Second)                        // 11 s after the failure
	connect(map[string]int{"corp down": 2, "corp ok": 3}) // tried again: failed twice in a row
	now = now.Add(19 * time.Second)
	connect(map[string]int{"corp down": 2, "corp ok": 4}) // still within 20 s
	now = now.Add(2 * time.Second)
	connect(map[string]int{"corp down": 3, "corp ok": 5})

	// The dead URL comes back: one success clears its failures.
	back := fakeParentOn(t, dead, func(*http.Request) []string { return []string{established} })
	now = now.Add(41 * time.Second)
	conn, _, addr, err := d.Connect(context.Background(), "corp", "a.example", 443, time.Second)
	if err != nil || addr != back.addr {
		t.Fatalf("after the first URL came back: %v, %v", addr, err)
	}
	conn.Close()
	u := d.set.Load().byName["corp"].urls[0]
	if u.health.failures.Load() != 0 || u.health.down(now) {
		t.Errorf("a URL that accepted is still counted down: %d failures", u.health.failures.Load())
	}

	// Connections that fail together while a URL is up count once.
	h := &urlHealth{}
	for range 100 {
		h.failed(now, false)
	}
	if h.failures.Load() != 1 || !h.down(now.Add(9*time.Second)) || h.down(now.Add(11*time.Second)) {
		t.Errorf("a burst of failures: %d in a row", h.failures.Load())
	}

	// A connect cut short by the caller (its context) does not mark the
	// URL down: the failure is not the URL's.
	d3, _ := newDialer(Parent{Name: "corp", Addrs: []string{deadAddr(t)}, ConnectTimeout: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, _, err := d3.Connect(ctx, "corp", "a.example", 443, time.Second); err == nil {
		t.Fatal("connected with a canceled context")
	}
	if u := d3.set.Load().byName["corp"].urls[0]; u.health.failures.Load() != 0 {
		t.Error("a canceled connect marked the URL down")
	}

	// Every URL down: each is still tried once per connection.
	d2, c2 := newDialer(Parent{Name: "corp", Addrs: []string{deadAddr(t), deadAddr(t)}, ConnectTimeout: time.Second})
	d2.now = func() time.Time { return now }
	for i := 1; i <= 3; i++ {
		if _, _, _, err := d2.Connect(context.Background(), "corp", "a.example", 443, time.Second); err == nil {
			t.Fatal("connected to dead URLs")
		}
		if diff := cmp.Diff(map[string]int{"corp down": 2 * i, "corp unavailable": i}, c2.get()); diff != "" {
			t.Errorf("connection %d: %s", i, diff)
		}
	}
}

func TestConnectNoUsableAnswer(t *testing.T) {
	tests := []struct {
		name   string
		answer []string
		want   string
	}{
		{"closed", []string{""}, "EOF"},
		{"not HTTP", []string{"SSH-2.0-OpenSSH\r\n\r\n"}, "not an HTTP/1.x status line"},
		{"too large", []string{"HTTP/1.1 200 OK\r\nX: " + strings.Repeat("a", maxHead) + "\r\n\r\n"}, "larger than 8 KiB"},
		{"cut short", []string{"HTTP/1.1 200 OK\r\n", ""}, "EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent := newFakeParent(t, func(*http.Request) []string { return tt.answer })
			d, c := newDialer(Parent{Name: "corp", Addrs: []string{parent.addr.String()}})
			_, _, _, err := d.Connect(context.Background(), "corp", "a.example", 443, 2*time.Second)
			var pe *Error
			if !errors.As(err, &pe) || pe.Result != ResultError || pe.Status != 0 || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
			if diff := cmp.Diff(map[string]int{"corp error": 1}, c.get()); diff != "" {
				t.Error(diff)
			}
		})
	}
}

func TestConnectReplyTimeout(t *testing.T) {
	release := make(chan struct{})
	parent := newFakeParent(t, func(*http.Request) []string {
		<-release
		return []string{""}
	})
	defer close(release)
	d, _ := newDialer(Parent{Name: "corp", Addrs: []string{parent.addr.String()}})
	_, _, _, err := d.Connect(context.Background(), "corp", "a.example", 443, 100*time.Millisecond)
	var pe *Error
	if !errors.As(err, &pe) || pe.Result != ResultError || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err %v", err)
	}
}

func TestUnknownParent(t *testing.T) {
	d, c := newDialer()
	_, _, _, err := d.Connect(context.Background(), "gone", "a.example", 443, time.Second)
	var pe *Error
	if !errors.As(err, &pe) || pe.Result != ResultUnavailable || !errors.Is(err, errNoParent) {
		t.Fatalf("err %v", err)
	}
	var zero Dialer
	if _, _, err := zero.Dial(context.Background(), "gone"); !errors.As(err, &pe) {
		t.Fatalf("zero Dialer: %v", err)
	}
	if diff := cmp.Diff(map[string]int{"gone unavailable": 1}, c.get()); diff != "" {
		t.Error(diff)
	}
}

type fakeResolver map[string][]netip.Addr

func (f fakeResolver) LookupNetIP(_ context.Context, host string) ([]netip.Addr, error) {
	if a, ok := f[host]; ok {
		return a, nil
	}
	return nil, errors.New("no such host")
}

// TestParentByName: a URL by name is resolved through the Resolver, its
// addresses tried in order (a private address is fine: parents are
// configuration).
func TestParentByName(t *testing.T) {
	parent := newFakeParent(t, func(*http.Request) []string { return []string{established} })
	// 127.0.0.2 on the parent's port: nothing listens there.
	d, c := newDialer(Parent{Name: "corp", Addrs: []string{"nx.corp.example:3128", net.JoinHostPort("proxy.corp.example", strconv.Itoa(int(parent.addr.Port())))}})
	d.Resolver = fakeResolver{"proxy.corp.example": {netip.MustParseAddr("127.0.0.2"), parent.addr.Addr()}}
	conn, addr, err := d.Dial(context.Background(), "corp")
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if addr != parent.addr || d.Auth("corp") != "" {
		t.Errorf("addr %v auth %q", addr, d.Auth("corp"))
	}
	if diff := cmp.Diff(map[string]int{"corp down": 1, "corp ok": 1}, c.get()); diff != "" {
		t.Error(diff)
	}
}

func TestDialAuth(t *testing.T) {
	parent := newFakeParent(t, func(*http.Request) []string { return nil })
	d, _ := newDialer(Parent{Name: "corp", Addrs: []string{parent.addr.String()}, Username: "egress", Password: "s3cret"})
	conn, _, err := d.Dial(context.Background(), "corp")
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if auth := d.Auth("corp"); auth != "Basic ZWdyZXNzOnMzY3JldA==" {
		t.Errorf("auth %q", auth)
	}
	if d.Auth("other") != "" || (*Dialer)(nil).Auth("corp") != "" {
		t.Error("auth of no parent")
	}
}

func TestParseStatus(t *testing.T) {
	for in, want := range map[string]int{
		"HTTP/1.1 200 Connection established\r\n": 200,
		"HTTP/1.0 200\r\n":                        200,
		"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n": 407,
		"HTTP/1.1 200 OK":      200,
		"HTTP/2 200\r\n":       0,
		"HTTP/1.1 20 OK\r\n":   0,
		"HTTP/1.1 2000 OK\r\n": 0,
		"HTTP/1.1 099 x\r\n":   0,
		"http/1.1 200 OK\r\n":  0,
		"":                     0,
	} {
		got, err := ParseStatus([]byte(in))
		if got != want || (want == 0) != (err != nil) {
			t.Errorf("%q: %d, %v; want %d", in, got, err, want)
		}
	}
}
