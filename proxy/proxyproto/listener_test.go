package proxyproto

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

// The test listener trusts 127.0.0.2: conns dialed from it are the "load
// balancer"; conns from 127.0.0.1 are direct clients.
const (
	lbIP     = "127.0.0.2"
	directIP = "127.0.0.1"
)

func newTestListener(t *testing.T, timeout time.Duration) *Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewListener(ln, Options{Trusted: []netip.Prefix{netip.MustParsePrefix(lbIP + "/32")}, Timeout: timeout})
	t.Cleanup(func() { l.Close() })
	return l
}

func dialFrom(t *testing.T, l *Listener, ip string) *net.TCPConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

type accepted struct {
	c   net.Conn
	err error
}

// acceptAsync runs one Accept in the background; the result arrives on the
// channel. The test's cleanup closes the listener, which ends the Accept.
func acceptAsync(l *Listener) <-chan accepted {
	ch := make(chan accepted, 1)
	go func() {
		c, err := l.Accept()
		ch <- accepted{c, err}
	}()
	return ch
}

func acceptNext(t *testing.T, ch <-chan accepted) net.Conn {
	t.Helper()
	select {
	case a := <-ch:
		if a.err != nil {
			t.Fatalf("Accept: %v", a.err)
		}
		t.Cleanup(func() { a.c.Close() })
		return a.c
	case <-time.After(10 * time.Second):
		t.Fatal("Accept did not return")
		return nil
	}
}

// readExactly reads n bytes from c (with a deadline) and returns them.
func readExactly(t *testing.T, c net.Conn, n int) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, n)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	return string(buf)
}

// assertRefused checks that the listener closed c without a byte.
func assertRefused(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 1))
	if n != 0 || err == nil || errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		t.Fatalf("conn not closed by the listener: n=%d err=%v", n, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestTrustedHeaders(t *testing.T) {
	client4 := netip.MustParseAddrPort("203.0.113.7:51000")
	client6 := netip.MustParseAddrPort("[2001:db8::7]:51000")
	front := netip.MustParseAddrPort("10.0.0.1:3128")
	front6 := netip.MustParseAddrPort("[2001:db8::1]:3128")
	cases := []struct {
		name   string
		header []byte
		want   netip.Addr
	}{
		{"v1", []byte("PROXY TCP4 203.0.113.7 10.0.0.1 51000 3128\r\n"), client4.Addr()},
		{"v1 tcp6", []byte("PROXY TCP6 2001:db8::7 2001:db8::1 51000 3128\r\n"), client6.Addr()},
		{"v1 mapped", []byte("PROXY TCP6 ::ffff:203.0.113.7 2001:db8::1 51000 3128\r\n"), client4.Addr()},
		{"v1 unknown", []byte("PROXY UNKNOWN\r\n"), netip.MustParseAddr(lbIP)},
		{"v2", v2Inet(client4, front), client4.Addr()},
		{"v2 tcp6 with tlv", v2Inet(client6, front6, 0x04, 0x00, 0x02, 0, 0), client6.Addr()},
		{"v2 local", v2(0x20, 0x00), netip.MustParseAddr(lbIP)},
	}
	l := newTestListener(t, 5*time.Second)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ch := acceptAsync(l)
			c := dialFrom(t, l, lbIP)
			payload := "\x05\x01\x00 and more client bytes"
			if _, err := c.Write(append(append([]byte(nil), tc.header...), payload...)); err != nil {
				t.Fatal(err)
			}
			got := acceptNext(t, ch)
			if _, ok := got.(*net.TCPConn); !ok {
				t.Fatalf("Accept returned %T, want the *net.TCPConn itself (splice)", got)
			}
			if a := l.Client(got); a != tc.want {
				t.Errorf("Client = %v, want %v", a, tc.want)
			}
			if a := l.Client(got); a != netip.MustParseAddr(lbIP) {
				t.Errorf("second Client = %v, want the socket peer (the address is handed out once)", a)
			}
			if s := readExactly(t, got, len(payload)); s != payload {
				t.Errorf("front end read %q, want exactly the client's bytes %q", s, payload)
			}
			// Echo back: the conn is fully usable, no deadline left over.
			if _, err := got.Write([]byte("ok")); err != nil {
				t.Fatal(err)
			}
			if s := readExactly(t, c, 2); s != "ok" {
				t.Fatalf("client read %q", s)
			}
		})
	}
}

// TestHeaderInPieces: a header that arrives in several segments is waited
// for (no spinning, no partial parse), and the payload is left intact.
func TestHeaderInPieces(t *testing.T) {
	l := newTestListener(t, 5*time.Second)
	for _, hdr := range [][]byte{
		[]byte("PROXY TCP4 203.0.113.7 10.0.0.1 51000 3128\r\n"),
		v2Inet(netip.MustParseAddrPort("203.0.113.7:1"), netip.MustParseAddrPort("10.0.0.1:2")),
	} {
		ch := acceptAsync(l)
		c := dialFrom(t, l, lbIP)
		c.SetNoDelay(true)
		for i := 0; i < len(hdr); i += 5 {
			if _, err := c.Write(hdr[i:min(i+5, len(hdr))]); err != nil {
				t.Fatal(err)
			}
		}
		c.Write([]byte("GET"))
		got := acceptNext(t, ch)
		if a := l.Client(got); a != netip.MustParseAddr("203.0.113.7") {
			t.Fatalf("Client = %v", a)
		}
		if s := readExactly(t, got, 3); s != "GET" {
			t.Fatalf("payload %q", s)
		}
	}
}

func TestDirectClients(t *testing.T) {
	l := newTestListener(t, 5*time.Second)
	for _, first := range []string{"\x05", "GET / HTTP/1.1\r\n\r\n", "P", "POST / HTTP/1.1\r\n"} {
		ch := acceptAsync(l)
		c := dialFrom(t, l, directIP)
		// "P" alone cannot decide (PROXY or POST?): the listener waits
		// for the next bytes.
		if _, err := c.Write([]byte(first)); err != nil {
			t.Fatal(err)
		}
		if first == "P" {
			c.Write([]byte("UT / HTTP/1.1\r\n"))
			first = "PUT / HTTP/1.1\r\n"
		}
		got := acceptNext(t, ch)
		if a := l.Client(got); a != netip.MustParseAddr(directIP) {
			t.Errorf("Client = %v, want the socket peer", a)
		}
		if s := readExactly(t, got, len(first)); s != first {
			t.Errorf("read %q, want %q: nothing may be consumed from a direct client", s, first)
		}
	}
}

// TestRefused: a trusted source without a header, a direct client with a
// (forged) header, and malformed or truncated headers are closed and never
// returned by Accept; a good conn after them is.
func TestRefused(t *testing.T) {
	l := newTestListener(t, 5*time.Second)
	cases := []struct {
		name, from string
		send       []byte
		closeWrite bool
	}{
		{"trusted without header", lbIP, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), false},
		{"trusted socks5 without header", lbIP, []byte{5, 1, 0}, false},
		{"forged v1 from a direct client", directIP, []byte("PROXY TCP4 10.0.1.7 10.0.0.1 1 2\r\nGET / HTTP/1.1\r\n\r\n"), false},
		{"forged v2 from a direct client", directIP, v2Inet(netip.MustParseAddrPort("10.0.1.7:1"), netip.MustParseAddrPort("10.0.0.1:2")), false},
		{"forged partial signature then EOF", directIP, []byte("PROX"), true},
		{"malformed v1", lbIP, []byte("PROXY TCP4 10.0.1.7 10.0.0.1 1\r\nGET"), false},
		{"v1 without CRLF", lbIP, []byte("PROXY TCP4 10.0.1.7 10.0.0.1 1 2 " + string(make([]byte, 120))), false},
		{"v2 udp", lbIP, v2(0x21, 0x12, make([]byte, 12)...), false},
		{"truncated v2 then EOF", lbIP, v2Inet(netip.MustParseAddrPort("10.0.1.7:1"), netip.MustParseAddrPort("10.0.0.1:2"))[:20], true},
		{"nothing then EOF", lbIP, nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialFrom(t, l, tc.from)
			c.Write(tc.send)
			if tc.closeWrite {
				c.CloseWrite()
			}
			assertRefused(t, c)
		})
	}
	// The refused conns never reached Accept: the next one is a good one.
	ch := acceptAsync(l)
	c := dialFrom(t, l, lbIP)
	c.Write([]byte("PROXY TCP4 203.0.113.9 10.0.0.1 1 2\r\n"))
	if a := l.Client(acceptNext(t, ch)); a != netip.MustParseAddr("203.0.113.9") {
		t.Fatalf("Client = %v", a)
	}
}

// TestSlowHeaderDoesNotBlockAccept: a load balancer conn that sends nothing
// is cut at the timeout, and meanwhile other conns are accepted.
func TestSlowHeaderDoesNotBlockAccept(t *testing.T) {
	l := newTestListener(t, 500*time.Millisecond)
	slow := dialFrom(t, l, lbIP)
	slowDirect := dialFrom(t, l, directIP)
	start := time.Now()
	ch := acceptAsync(l)
	c := dialFrom(t, l, lbIP)
	c.Write([]byte("PROXY TCP4 203.0.113.9 10.0.0.1 1 2\r\n"))
	if a := l.Client(acceptNext(t, ch)); a != netip.MustParseAddr("203.0.113.9") {
		t.Fatalf("Client = %v", a)
	}
	assertRefused(t, slow)
	assertRefused(t, slowDirect)
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Fatalf("silent conns cut after %v, before the timeout", d)
	}
}

// TestCloseWithPendingHeaders: Close ends conns still in their header and
// every goroutine (goleak in TestMain checks), and Accept returns
// net.ErrClosed.
func TestCloseWithPendingHeaders(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewListener(ln, Options{Trusted: []netip.Prefix{netip.MustParsePrefix(lbIP + "/32")}, Timeout: time.Minute})
	var conns []*net.TCPConn
	for i := 0; i < 5; i++ {
		c := dialFrom(t, l, lbIP)
		c.Write([]byte("PROXY TCP4 "))
		conns = append(conns, c)
	}
	// A finished conn that nobody accepted is closed too.
	done := dialFrom(t, l, lbIP)
	done.Write([]byte("PROXY TCP4 203.0.113.9 10.0.0.1 1 2\r\n"))
	ch := acceptAsync(l)
	first := acceptNext(t, ch)
	if first == nil {
		t.Fatal("no conn")
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
	for _, c := range conns {
		assertRefused(t, c)
	}
}

func TestNilListenerClient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var l *Listener
	if a := l.Client(c); a != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("nil listener Client = %v", a)
	}
}
