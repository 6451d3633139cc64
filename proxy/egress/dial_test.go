package egress

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/policy"
)

// listen returns a loopback listener that accepts and closes conns.
func listen(t *testing.T, network, addr string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("no %s loopback: %v", network, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// refusedAddr is a loopback port nothing listens on.
func refusedAddr(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp4", testIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	ap := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	return ap
}

func TestDialRefusesWithoutPassingDecision(t *testing.T) {
	open := listen(t, "tcp4", testIP+":0")
	var d Dialer
	for _, dec := range []policy.Decision{
		{}, // zero value: Deny
		{Verdict: policy.Deny, Addrs: []netip.AddrPort{open}}, // denied, even with an address
		{Verdict: policy.Allow},                               // allowed, nothing pinned
		{Verdict: policy.Report},                              // report, nothing pinned
	} {
		c, _, _, err := d.Dial(context.Background(), dec)
		if !errors.Is(err, ErrNoDecision) {
			t.Fatalf("%+v: err %v", dec, err)
		}
		if c != nil {
			c.Close()
			t.Fatal("got a conn")
		}
	}
}

func TestDialTriesAddressesInOrder(t *testing.T) {
	open := listen(t, "tcp4", testIP+":0")
	refused := refusedAddr(t)
	var d Dialer
	for _, v := range []policy.Verdict{policy.Allow, policy.Report} {
		c, _, got, err := d.Dial(context.Background(), policy.Decision{Verdict: v, Host: "a.test", Addrs: []netip.AddrPort{refused, open}})
		if err != nil {
			t.Fatal(err)
		}
		if got != open || c.RemoteAddr().(*net.TCPAddr).AddrPort() != open {
			t.Fatalf("connected to %v (%v), want %v", got, c.RemoteAddr(), open)
		}
		c.Close()
	}
}

func TestDialIPv6AndMapped(t *testing.T) {
	open6 := listen(t, "tcp6", "[::1]:0")
	var d Dialer
	c, _, got, err := d.Dial(context.Background(), policy.Decision{Verdict: policy.Allow, Addrs: []netip.AddrPort{open6}})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if got != open6 {
		t.Fatalf("got %v", got)
	}
	// An IPv4-mapped pin dials the IPv4 address.
	open4 := listen(t, "tcp4", testIP+":0")
	mapped := netip.AddrPortFrom(netip.AddrFrom16(open4.Addr().As16()), open4.Port())
	c, _, got, err = d.Dial(context.Background(), policy.Decision{Verdict: policy.Allow, Addrs: []netip.AddrPort{mapped}})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if got != mapped {
		t.Fatalf("got %v", got)
	}
}

func TestDialErrorKeepsSyscallError(t *testing.T) {
	a, b := refusedAddr(t), refusedAddr(t)
	var d Dialer
	_, _, _, err := d.Dial(context.Background(), policy.Decision{Verdict: policy.Allow, Host: "down.test", Addrs: []netip.AddrPort{a, b}})
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("errors.Is ECONNREFUSED false for %v", err)
	}
	msg := err.Error()
	for _, want := range []string{"down.test", "connection refused", a.String(), b.String()} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("multi-line error %q", msg)
	}
	var op *net.OpError
	if !errors.As(err, &op) {
		t.Errorf("no *net.OpError in %v", err)
	}
}

func TestDialInvalidAddress(t *testing.T) {
	var d Dialer
	_, _, _, err := d.Dial(context.Background(), policy.Decision{Verdict: policy.Allow, Addrs: []netip.AddrPort{{}, netip.MustParseAddrPort("127.0.0.1:0")}})
	if err == nil || !strings.Contains(err.Error(), "invalid address") {
		t.Fatalf("err %v", err)
	}
}

// TestPinnedControl checks the socket-level guard directly: only the
// address being tried, and only when the decision holds it.
func TestPinnedControl(t *testing.T) {
	a := netip.MustParseAddrPort("127.0.0.1:443")
	b := netip.MustParseAddrPort("127.0.0.2:443")
	allowed := []netip.AddrPort{a}
	for _, tc := range []struct {
		name    string
		target  netip.AddrPort
		address string
		ok      bool
	}{
		{"the target", a, "127.0.0.1:443", true},
		{"another address", a, "127.0.0.2:443", false},
		{"another port", a, "127.0.0.1:80", false},
		{"target not in decision", b, "127.0.0.2:443", false},
		{"mapped spelling of target", a, "[::ffff:127.0.0.1]:443", true},
		{"a name", a, "localhost:443", false},
		{"garbage", a, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := pinned(tc.target, allowed)(context.Background(), "tcp4", tc.address, nil)
			if (err == nil) != tc.ok {
				t.Fatalf("err %v", err)
			}
			if err != nil && !errors.Is(err, errNotPinned) {
				t.Fatalf("err %v", err)
			}
		})
	}
}

func TestDialContextCanceled(t *testing.T) {
	open := listen(t, "tcp4", testIP+":0")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d := Dialer{Timeout: time.Second}
	_, _, _, err := d.Dial(ctx, policy.Decision{Verdict: policy.Allow, Addrs: []netip.AddrPort{open, open}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
	if n := strings.Count(err.Error(), "operation was canceled"); n != 1 {
		t.Fatalf("tried %d addresses after cancel: %v", n, err)
	}
}

func TestDialerSetTimeout(t *testing.T) {
	d := &Dialer{Timeout: 5 * time.Second}
	if got := d.attemptTimeout(); got != 5*time.Second {
		t.Fatalf("start: %v", got)
	}
	d.SetTimeout(7 * time.Second)
	if got := d.attemptTimeout(); got != 7*time.Second {
		t.Fatalf("after SetTimeout(7s): %v", got)
	}
	d.SetTimeout(0) // a reload to 0 means the default, not the start value
	if got := d.attemptTimeout(); got != DefaultDialTimeout {
		t.Fatalf("after SetTimeout(0): %v, want %v", got, DefaultDialTimeout)
	}
}
