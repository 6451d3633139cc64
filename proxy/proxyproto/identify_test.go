package proxyproto

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

// The tests trust 127.0.0.2: conns dialed from it are the "load
// balancer"; conns from 127.0.0.1 are direct clients.
const (
	lbIP     = "127.0.0.2"
	directIP = "127.0.0.1"
)

// pair is one loopback connection: the client's end, dialed from a given
// source address, and the server's, as accepted.
type pair struct {
	client, server *net.TCPConn
}

// listen returns a loopback listener closed at the end of the test.
func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// connect dials ln from ip and accepts the connection.
func connect(t *testing.T, ln net.Listener, ip string) pair {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return pair{client: c.(*net.TCPConn), server: s.(*net.TCPConn)}
}

// identify runs Identify on p's server end as egressd does: the trust of
// the source is lbIP's.
func (p pair) identify(timeout time.Duration) (netip.AddrPort, error) {
	peer := p.server.RemoteAddr().(*net.TCPAddr).AddrPort()
	return Identify(p.server, peer, peer.Addr() == netip.MustParseAddr(lbIP), timeout)
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

func TestTrustedHeaders(t *testing.T) {
	client4 := netip.MustParseAddrPort("203.0.113.7:51000")
	client6 := netip.MustParseAddrPort("[2001:db8::7]:51000")
	front := netip.MustParseAddrPort("10.0.0.1:3128")
	front6 := netip.MustParseAddrPort("[2001:db8::1]:3128")
	cases := []struct {
		name   string
		header []byte
		want   netip.AddrPort // zero: the socket peer
	}{
		{"v1", []byte("PROXY TCP4 203.0.113.7 10.0.0.1 51000 3128\r\n"), client4},
		{"v1 tcp6", []byte("PROXY TCP6 2001:db8::7 2001:db8::1 51000 3128\r\n"), client6},
		{"v1 mapped", []byte("PROXY TCP6 ::ffff:203.0.113.7 2001:db8::1 51000 3128\r\n"), client4},
		{"v1 unknown", []byte("PROXY UNKNOWN\r\n"), netip.AddrPort{}},
		{"v2", v2Inet(client4, front), client4},
		{"v2 tcp6 with tlv", v2Inet(client6, front6, 0x04, 0x00, 0x02, 0, 0), client6},
		{"v2 local", v2(0x20, 0x00), netip.AddrPort{}},
	}
	ln := listen(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := connect(t, ln, lbIP)
			payload := "\x05\x01\x00 and more client bytes"
			if _, err := p.client.Write(append(append([]byte(nil), tc.header...), payload...)); err != nil {
				t.Fatal(err)
			}
			got, err := p.identify(5 * time.Second)
			if err != nil {
				t.Fatalf("Identify: %v", err)
			}
			want := tc.want
			if !want.IsValid() {
				want = p.server.RemoteAddr().(*net.TCPAddr).AddrPort()
			}
			if got != want {
				t.Errorf("client %v, want %v", got, want)
			}
			if s := readExactly(t, p.server, len(payload)); s != payload {
				t.Errorf("front end read %q, want exactly the client's bytes %q", s, payload)
			}
			// Echo back: the conn is fully usable, no deadline left over.
			if _, err := p.server.Write([]byte("ok")); err != nil {
				t.Fatal(err)
			}
			if s := readExactly(t, p.client, 2); s != "ok" {
				t.Fatalf("client read %q", s)
			}
		})
	}
}

// TestHeaderInPieces: a header that arrives in several segments is waited
// for (no spinning, no partial parse), and the payload is left intact.
func TestHeaderInPieces(t *testing.T) {
	ln := listen(t)
	for _, hdr := range [][]byte{
		[]byte("PROXY TCP4 203.0.113.7 10.0.0.1 51000 3128\r\n"),
		v2Inet(netip.MustParseAddrPort("203.0.113.7:1"), netip.MustParseAddrPort("10.0.0.1:2")),
	} {
		p := connect(t, ln, lbIP)
		p.client.SetNoDelay(true)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; i < len(hdr); i += 5 {
				if _, err := p.client.Write(hdr[i:min(i+5, len(hdr))]); err != nil {
					return
				}
				time.Sleep(time.Millisecond) // apart, so the reads see them apart
			}
			p.client.Write([]byte("GET"))
		}()
		got, err := p.identify(5 * time.Second)
		<-done
		if err != nil || got.Addr() != netip.MustParseAddr("203.0.113.7") {
			t.Fatalf("client %v, %v", got, err)
		}
		if s := readExactly(t, p.server, 3); s != "GET" {
			t.Fatalf("payload %q", s)
		}
	}
}

func TestDirectClients(t *testing.T) {
	ln := listen(t)
	for _, first := range []string{"\x05", "GET / HTTP/1.1\r\n\r\n", "P", "POST / HTTP/1.1\r\n"} {
		p := connect(t, ln, directIP)
		// "P" alone cannot decide (PROXY or POST?): Identify waits for the
		// next bytes.
		if _, err := p.client.Write([]byte(first)); err != nil {
			t.Fatal(err)
		}
		if first == "P" {
			go func() {
				time.Sleep(10 * time.Millisecond)
				p.client.Write([]byte("UT / HTTP/1.1\r\n"))
			}()
			first = "PUT / HTTP/1.1\r\n"
		}
		got, err := p.identify(5 * time.Second)
		if err != nil || got != p.server.RemoteAddr().(*net.TCPAddr).AddrPort() {
			t.Errorf("client %v, %v; want the socket peer", got, err)
		}
		if s := readExactly(t, p.server, len(first)); s != first {
			t.Errorf("read %q, want %q: nothing may be consumed from a direct client", s, first)
		}
	}
}

// TestRefused: a trusted source without a header, a direct client with a
// (forged) header, malformed or truncated headers and silence are refused,
// each with its error.
func TestRefused(t *testing.T) {
	ln := listen(t)
	cases := []struct {
		name, from string
		send       []byte
		closeWrite bool
		want       error // nil: any error
	}{
		{"trusted without header", lbIP, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), false, ErrMissing},
		{"trusted socks5 without header", lbIP, []byte{5, 1, 0}, false, ErrMissing},
		{"forged v1 from a direct client", directIP, []byte("PROXY TCP4 10.0.1.7 10.0.0.1 1 2\r\nGET / HTTP/1.1\r\n\r\n"), false, ErrForged},
		{"forged v2 from a direct client", directIP, v2Inet(netip.MustParseAddrPort("10.0.1.7:1"), netip.MustParseAddrPort("10.0.0.1:2")), false, ErrForged},
		{"forged partial signature then EOF", directIP, []byte("PROX"), true, io.ErrUnexpectedEOF},
		{"malformed v1", lbIP, []byte("PROXY TCP4 10.0.1.7 10.0.0.1 1\r\nGET"), false, nil},
		{"v1 without CRLF", lbIP, []byte("PROXY TCP4 10.0.1.7 10.0.0.1 1 2 " + string(make([]byte, 120))), false, nil},
		{"v2 udp", lbIP, v2(0x21, 0x12, make([]byte, 12)...), false, nil},
		{"truncated v2 then EOF", lbIP, v2Inet(netip.MustParseAddrPort("10.0.1.7:1"), netip.MustParseAddrPort("10.0.0.1:2"))[:20], true, io.ErrUnexpectedEOF},
		{"nothing then EOF", lbIP, nil, true, io.EOF},
		{"silent trusted source", lbIP, nil, false, os.ErrDeadlineExceeded},
		{"silent direct client", directIP, nil, false, os.ErrDeadlineExceeded},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := connect(t, ln, tc.from)
			p.client.Write(tc.send)
			if tc.closeWrite {
				p.client.CloseWrite()
			}
			got, err := p.identify(300 * time.Millisecond)
			if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Identify = %v, %v; want error %v", got, err, tc.want)
			}
		})
	}
}
