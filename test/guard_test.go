package test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/sni/snitest"
	"github.com/egressd/egressd/test/testenv"
)

// guardHandshake is timeouts.handshake in the guard tests: short, so the
// slow-hello cases end quickly.
const guardHandshake = 1 * time.Second

// guardEnv is egressd in front of a sink: a TCP origin on originIP, on a
// tls_ports port, that records every byte it receives. A rule allows the
// sink by address (cidrs) and by name (allowed.test).
type guardEnv struct {
	ns   *testenv.Netns
	sink *sink
	proc *testenv.Proc
}

// newGuardEnv starts the environment; configure, when set, changes the
// policy further.
func newGuardEnv(t *testing.T, configure func(p *policy.Config)) *guardEnv {
	t.Helper()
	e := &guardEnv{ns: testenv.NewNetns(t)}
	e.sink = newSink(t, e.ns, originIP)
	dns := testenv.NewDNSServerIn(t, e.ns, "127.0.0.53")
	dns.Set("allowed.test", 60, netip.MustParseAddr(originIP))
	c := testenv.NewConfig(t)
	c.Listen = testenv.Listeners(t, e.ns, "127.0.0.1")
	c.DNS.Servers = []string{dns.Addr()}
	c.Timeouts.Handshake = guardHandshake
	c.Timeouts.Connect = 2 * time.Second
	c.Policy.Mode = "enforce"
	c.Policy.DenyRanges = []string{"default"}
	c.Policy.RequireSNI = true
	c.Policy.TLSPorts = []int{e.sink.port}
	c.Policy.Rules = []testenv.Rule{
		{Name: "by-ip", CIDRs: []string{originIP + "/32"}, Ports: []int{e.sink.port}},
		{Name: "by-name", Hosts: []string{"allowed.test"}, Ports: []int{e.sink.port}, AllowRanges: []string{originIP + "/32"}},
	}
	if configure != nil {
		configure(&c.Policy)
	}
	e.proc = (&testenv.Egressd{Netns: e.ns}).StartConfig(t, c)
	return e
}

// open opens a tunnel to host:sink through listener ("connect" or
// "socks5") and returns the client conn once egressd confirmed it.
func (e *guardEnv) open(t *testing.T, listener, host string) net.Conn {
	t.Helper()
	target := net.JoinHostPort(host, fmt.Sprint(e.sink.port))
	if listener == "socks5" {
		_, err := netip.ParseAddr(host)
		c, res := socksRequest(t, e.ns, e.proc.SOCKSAddr, nil, socksConnect, host, e.sink.port, err == nil)
		if res.Reply != replySucceeded {
			t.Fatalf("socks5 %s: reply %d", target, res.Reply)
		}
		return c
	}
	c := e.ns.DialFrom(t, "", e.proc.HTTPAddr)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	resp, err := testenv.Connect(c, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Proto != "HTTP/1.1" {
		t.Fatalf("CONNECT %s: %s %s", target, resp.Proto, resp.Status)
	}
	c.SetDeadline(time.Time{})
	return c
}

// closedWithin reports whether egressd closed c (EOF or reset, no byte)
// within d.
func closedWithin(c net.Conn, d time.Duration) (bool, error) {
	c.SetReadDeadline(time.Now().Add(d))
	n, err := c.Read(make([]byte, 1))
	if n > 0 {
		return false, fmt.Errorf("got a byte from the tunnel")
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return false, nil
	}
	return true, nil
}

// TestGuardFailsClosed: on a tls_ports port, a ClientHello the guard cannot
// judge (too slow, malformed, too large, cut short) is denied with
// tls_hello_invalid and no byte of it reaches the origin, even for an IP
// destination, which may go without SNI. A clean hello without SNI to the
// IP is relayed, as before.
func TestGuardFailsClosed(t *testing.T) {
	e := newGuardEnv(t, nil)
	hello := snitest.HelloFor("denied.test")
	trailingDot := bytes.Replace(hello, []byte("denied.test"), []byte("denied.tes."), 1)
	nul := bytes.Replace(hello, []byte("denied.test"), []byte("denied\x00test"), 1)
	huge := hugeHello()
	noSNI := snitest.HelloFor("")

	type tcase struct {
		name string
		send func(t *testing.T, c net.Conn) // sends the first bytes; egressd must close c
	}
	cases := []tcase{
		{"slow hello", func(t *testing.T, c net.Conn) {
			// The first bytes of a hello for denied.test, then nothing
			// until past timeouts.handshake; the rest would follow.
			c.Write(hello[:3])
			closed, err := closedWithin(c, guardHandshake+10*time.Second)
			if !closed {
				c.Write(hello[3:])
				t.Fatalf("tunnel still open %v after the first 3 bytes of a hello (%v); the rest was sent", guardHandshake+10*time.Second, err)
			}
		}},
		{"trailing dot", func(t *testing.T, c net.Conn) { c.Write(trailingDot) }},
		{"nul in name", func(t *testing.T, c net.Conn) { c.Write(nul) }},
		{"too large", func(t *testing.T, c net.Conn) { c.Write(huge) }},
		{"cut short", func(t *testing.T, c net.Conn) {
			c.Write(hello[:len(hello)-10])
			c.(interface{ CloseWrite() error }).CloseWrite()
		}},
	}
	for _, listener := range []string{"connect", "socks5"} {
		for _, tc := range cases {
			t.Run(listener+"/"+tc.name, func(t *testing.T) {
				skip := len(e.proc.AccessLines())
				c := e.open(t, listener, originIP)
				tc.send(t, c)
				if closed, err := closedWithin(c, guardHandshake+10*time.Second); !closed {
					t.Fatalf("egressd did not close the tunnel: %v", err)
				}
				c.Close()
				if got := e.sink.next(t); len(got) != 0 {
					t.Fatalf("the origin received %d bytes: % x", len(got), got[:min(len(got), 16)])
				}
				waitLogAfter(t, e.proc, skip, map[string]any{"listener": listener, "host": originIP,
					"decision": "deny", "reason": "tls_hello_invalid", "sni": ""})
			})
		}
		t.Run(listener+"/clean hello without SNI to the IP", func(t *testing.T) {
			skip := len(e.proc.AccessLines())
			c := e.open(t, listener, originIP)
			c.Write(noSNI)
			c.Close()
			if got := e.sink.next(t); !bytes.Equal(got, noSNI) {
				t.Fatalf("the origin received %d bytes, want the %d of the hello", len(got), len(noSNI))
			}
			waitLogAfter(t, e.proc, skip, map[string]any{"listener": listener, "host": originIP, "decision": "allow", "sni": ""})
		})
	}
}

// TestGuardECH: with policy.ech deny, a ClientHello carrying Encrypted
// Client Hello is refused with ech_refused on both front ends, and nothing
// reaches the origin; with the default (allow) its outer SNI is judged and
// the line says ech.
func TestGuardECH(t *testing.T) {
	hello := snitest.Hello(&tls.Config{ServerName: "allowed.test", MinVersion: tls.VersionTLS13,
		EncryptedClientHelloConfigList: snitest.ECHConfigList(t, "allowed.test")})
	for _, ech := range []string{"deny", "allow"} {
		e := newGuardEnv(t, func(p *policy.Config) { p.ECH = ech })
		for _, listener := range []string{"connect", "socks5"} {
			t.Run(ech+"/"+listener, func(t *testing.T) {
				skip := len(e.proc.AccessLines())
				c := e.open(t, listener, "allowed.test")
				c.Write(hello)
				if ech == "deny" {
					if closed, err := closedWithin(c, 10*time.Second); !closed {
						t.Fatalf("egressd did not close the tunnel: %v", err)
					}
				}
				c.Close()
				got := e.sink.next(t)
				want := map[string]any{"listener": listener, "host": "allowed.test", "sni": "allowed.test", "ech": true}
				if ech == "deny" {
					if len(got) != 0 {
						t.Fatalf("the origin received %d bytes", len(got))
					}
					want["decision"], want["reason"] = "deny", "ech_refused"
				} else {
					if !bytes.Equal(got, hello) {
						t.Fatalf("the origin received %d bytes, want the %d of the hello", len(got), len(hello))
					}
					want["decision"] = "allow"
				}
				waitLogAfter(t, e.proc, skip, want)
			})
		}
	}
}

// hugeHello is the start of a ClientHello announcing a 70,000-byte message,
// past crypto/tls's (and the guard's) 64 KiB.
func hugeHello() []byte {
	const n = 70000
	return []byte{0x16, 0x03, 0x01, 0x40, 0x00, 0x01, n >> 16, n >> 8 & 0xff, n & 0xff, 0x03, 0x03}
}

// sink is a TCP origin that records the bytes of each connection it
// accepts, until the peer closes.
type sink struct {
	port    int
	mu      sync.Mutex
	done    [][]byte // bytes of each finished connection, in the order they ended
	taken   int
	changed chan struct{}
}

func newSink(t *testing.T, ns *testenv.Netns, ip string) *sink {
	t.Helper()
	ln, err := ns.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{port: ln.Addr().(*net.TCPAddr).Port, changed: make(chan struct{})}
	testenv.ServeConns(t, ln, func(c net.Conn) {
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(60 * time.Second))
		b, _ := io.ReadAll(c)
		s.mu.Lock()
		s.done = append(s.done, b)
		close(s.changed)
		s.changed = make(chan struct{})
		s.mu.Unlock()
	})
	return s
}

// next waits for the next connection to end and returns its bytes.
func (s *sink) next(t *testing.T) []byte {
	t.Helper()
	timer := time.NewTimer(20 * time.Second)
	defer timer.Stop()
	for {
		s.mu.Lock()
		if s.taken < len(s.done) {
			b := s.done[s.taken]
			s.taken++
			s.mu.Unlock()
			return b
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			t.Fatal("no origin connection ended within 20s")
		}
	}
}
