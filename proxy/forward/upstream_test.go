package forward

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/egressd/egressd/policy"
)

func aps(s ...string) []netip.AddrPort {
	var out []netip.AddrPort
	for _, a := range s {
		out = append(out, netip.MustParseAddrPort(a))
	}
	return out
}

// TestSetKey: a pool is keyed by the set of pinned addresses: order,
// duplicates and IPv4-mapped spellings do not matter; any other difference
// does.
func TestSetKey(t *testing.T) {
	key := func(s ...string) string { return string(setKey(nil, aps(s...))) }
	same := [][2]string{
		{key("10.0.0.1:80", "10.0.0.2:80"), key("10.0.0.2:80", "10.0.0.1:80")},
		{key("10.0.0.1:80"), key("10.0.0.1:80", "10.0.0.1:80")},
		{key("10.0.0.1:80"), key("[::ffff:10.0.0.1]:80")},
	}
	for i, p := range same {
		if p[0] != p[1] {
			t.Errorf("pair %d: keys differ", i)
		}
	}
	differ := [][2]string{
		{key("10.0.0.1:80", "10.0.0.2:80"), key("10.0.0.1:80")},
		{key("10.0.0.1:80"), key("10.0.0.1:81")},
		{key("10.0.0.1:80"), key("[2001:db8::1]:80")},
	}
	for i, p := range differ {
		if p[0] == p[1] {
			t.Errorf("pair %d: keys equal", i)
		}
	}
	many := make([]string, 20) // more than setKey's stack arrays hold
	for i := range many {
		many[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 443).String()
	}
	if got := len(key(many...)); got != 20*keyAddrLen {
		t.Errorf("20 addresses: key of %d bytes", got)
	}
}

// TestUpstreams: one pool per set; a retired pool serves no new request.
func TestUpstreams(t *testing.T) {
	built := 0
	u := newUpstreams(func(string) *http.Transport { built++; return &http.Transport{} })
	a, b := aps("10.0.0.1:80", "10.0.0.2:80"), aps("10.0.0.2:80")
	p1 := u.get(a)
	p2 := u.get(aps("10.0.0.2:80", "10.0.0.1:80"))
	p3 := u.get(b)
	if p1 != p2 || p1 == p3 || built != 2 {
		t.Fatalf("pools: same set %v, other set %v, built %d", p1 == p2, p1 == p3, built)
	}
	u.release(p1)
	u.release(p2)
	u.release(p3)
	u.retireAll()
	if !p1.retired.Load() || !p3.retired.Load() {
		t.Fatal("retireAll left a pool serving")
	}
	if p := u.get(a); p == p1 || p.retired.Load() {
		t.Fatal("a retired pool served a new request")
	}
	if testing.AllocsPerRun(100, func() { u.release(u.get(a)) }) != 0 {
		t.Error("taking and releasing an existing pool allocates")
	}
}

// FuzzNormalizedAuthority: the authority a forwarded request goes out with
// carries exactly the host the policy normalized, and the URI's port.
func FuzzNormalizedAuthority(f *testing.F) {
	for _, s := range []string{"example.com", "EXAMPLE.com:8080", "bücher.test", "b\u00fccher.test:81", "[::1]:80",
		"[::ffff:127.0.0.1]", "2130706433:80", "0x7f.1", "a.", "[fe80::1%25eth0]:80", ":80", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, authority string) {
		host, port, err := net.SplitHostPort(authority)
		hasPort := err == nil
		if !hasPort {
			host = trimBrackets(authority)
		}
		norm, _, _, err := policy.NormalizeHost(host)
		if err != nil {
			return
		}
		out := normalizedAuthority(authority, policy.Decision{Host: norm})
		if hasPort {
			h, p, err := net.SplitHostPort(out)
			if err != nil || h != norm || p != port {
				t.Fatalf("%q -> %q: host %q port %q (%v), want %q %q", authority, out, h, p, err, norm, port)
			}
			return
		}
		if trimBrackets(out) != norm || strings.Contains(norm, ":") != (len(out) > 0 && out[0] == '[') {
			t.Fatalf("%q -> %q, want host %q", authority, out, norm)
		}
		if bytes.ContainsAny([]byte(trimBrackets(out)), "[]") {
			t.Fatalf("%q -> %q: stray brackets", authority, out)
		}
	})
}

// writerToBody is a request body that writes itself (as DLP's held bodies
// do), recording the writes.
type writerToBody struct {
	data   []byte
	writes int
}

func (b *writerToBody) Read(p []byte) (int, error) { panic("read instead of WriteTo") }

func (b *writerToBody) WriteTo(w io.Writer) (int64, error) {
	var n int64
	for p := b.data; len(p) > 0; {
		m, err := w.Write(p[:min(len(p), 1000)])
		b.writes++
		n += int64(m)
		p = p[m:]
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// TestUpstreamReadFrom: a body that writes itself goes to the origin
// through its own writes, never past the length net/http hands it over
// with; any other body is copied.
func TestUpstreamReadFrom(t *testing.T) {
	var idle atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	read := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			read <- nil
			return
		}
		b, _ := io.ReadAll(c)
		c.Close()
		read <- b
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	up := &upstreamConn{c: c.(*net.TCPConn), idle: &idle}
	data := bytes.Repeat([]byte("0123456789"), 500)
	body := &writerToBody{data: data}
	if n, err := io.Copy(up, &io.LimitedReader{R: body, N: int64(len(data))}); err != nil || n != int64(len(data)) || body.writes != 5 {
		t.Fatalf("held body: %d bytes, %v, %d writes", n, err, body.writes)
	}
	long := &writerToBody{data: data}
	lr := &io.LimitedReader{R: long, N: 2500}
	if n, err := io.Copy(up, lr); !errors.Is(err, errBodyTooLong) || n != 2500 || lr.N != 0 {
		t.Fatalf("body past its length: %d bytes, %v, %d left", n, err, lr.N)
	}
	if n, err := io.Copy(up, &io.LimitedReader{R: struct{ io.Reader }{strings.NewReader("tail")}, N: 4}); err != nil || n != 4 {
		t.Fatalf("plain body: %d, %v", n, err)
	}
	up.Close()
	want := append(append(bytes.Clone(data), data[:2500]...), "tail"...)
	if got := <-read; !bytes.Equal(got, want) {
		t.Fatalf("the listener read %d bytes, want %d", len(got), len(want))
	}
}

// TestUpstreamConnEarlyBytes: the bytes a parent sent past its answer to
// CONNECT, read with it (egress.Dialer.Dial's early bytes), come out of
// an upstreamConn before anything the socket holds, in order, in reads
// as small as the caller's buffer.
func TestUpstreamConnEarlyBytes(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		io.WriteString(c, " and the rest")
		c.Close()
	}()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	var idle atomic.Int64
	up := &upstreamConn{c: c.(*net.TCPConn), early: []byte("banner"), idle: &idle}
	defer up.Close()
	first := make([]byte, 4)
	if n, err := up.Read(first); err != nil || string(first[:n]) != "bann" {
		t.Fatalf("first read %q, %v", first[:n], err)
	}
	rest, err := io.ReadAll(up)
	if err != nil || string(rest) != "er and the rest" {
		t.Fatalf("then %q, %v", rest, err)
	}
	<-done
}
