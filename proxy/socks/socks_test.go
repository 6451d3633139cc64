package socks

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/proxy"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accesslog"
	"github.com/egressd/egressd/proxy/egress"
	"github.com/egressd/egressd/proxy/upstream"
)

// Wire helpers: RFC 1928 and 1929 messages, built by hand so tests control
// every byte.
func greeting(methods ...byte) []byte { return append([]byte{5, byte(len(methods))}, methods...) }

func userPass(user, pass string) []byte {
	b := []byte{1, byte(len(user))}
	b = append(b, user...)
	b = append(b, byte(len(pass)))
	return append(b, pass...)
}

func reqDomain(cmd byte, host string, port uint16) []byte {
	b := []byte{5, cmd, 0, 3, byte(len(host))}
	b = append(b, host...)
	return binary.BigEndian.AppendUint16(b, port)
}

func reqIP(cmd byte, ip string, port uint16) []byte {
	a := netip.MustParseAddr(ip)
	atyp := byte(1)
	if a.Is6() {
		atyp = 4
	}
	b := append([]byte{5, cmd, 0, atyp}, a.AsSlice()...)
	return binary.BigEndian.AppendUint16(b, port)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// replyOf returns the first reply's code from a server's output after a
// no-auth method selection, or -1 when there is none.
func replyOf(out []byte, skip int) int {
	if len(out) < skip+2 || out[skip] != 5 {
		return -1
	}
	return int(out[skip+1])
}

// TestReplies: every request kind gets the RFC 1928 reply the contract
// names, and the connection is closed afterwards (exchange reads to EOF).
func TestReplies(t *testing.T) {
	e := newEnv(t, envOptions{})
	port := e.origin.addr().Port()
	noAuth := greeting(0)
	cases := []struct {
		name  string
		in    []byte
		want  []byte // the server's whole output
		reply int    // or just the reply code after the method selection (-1: none)
	}{
		{name: "domain allowed, echoed", in: cat(noAuth, reqDomain(cmdConnect, "allowed.test", port), []byte("ping")), reply: 0},
		{name: "ipv4 allowed", in: cat(noAuth, reqIP(cmdConnect, "127.0.0.1", port), []byte("ping")), reply: 0},
		{name: "ipv6 no rule", in: cat(noAuth, reqIP(cmdConnect, "::1", port)), reply: 2},
		{name: "domain denied", in: cat(noAuth, reqDomain(cmdConnect, "other.test", port)), reply: 2},
		{name: "port denied", in: cat(noAuth, reqDomain(cmdConnect, "allowed.test", 1)), reply: 2},
		{name: "port zero", in: cat(noAuth, reqDomain(cmdConnect, "allowed.test", 0)), reply: 2},
		{name: "name does not resolve", in: cat(noAuth, reqDomain(cmdConnect, "nx.test", port)), reply: 4},
		{name: "connection refused", in: cat(noAuth, reqDomain(cmdConnect, "refused.test", e.refused)), reply: 5},
		{name: "bind", in: cat(noAuth, reqDomain(cmdBind, "allowed.test", port)), reply: 7},
		{name: "udp associate", in: cat(noAuth, reqIP(cmdAssociate, "0.0.0.0", 0)), reply: 7},
		{name: "unknown command", in: cat(noAuth, reqDomain(9, "allowed.test", port)), reply: 7},
		{name: "unknown address type", in: cat(noAuth, []byte{5, 1, 0, 9, 1, 2, 3, 4, 0, 80}), reply: 8},
		{name: "socks4", in: []byte{4, 1, 0, 80, 127, 0, 0, 1, 0}, want: []byte{}},
		{name: "http to the socks port", in: []byte("GET / HTTP/1.1\r\n\r\n"), want: []byte{}},
		{name: "no methods", in: []byte{5, 0}, want: []byte{5, 0xFF}},
		{name: "only gssapi", in: greeting(1), want: []byte{5, 0xFF}},
		{name: "truncated greeting", in: []byte{5, 3, 0}, want: []byte{}},
		{name: "version byte only", in: []byte{5}, want: []byte{}},
		{name: "truncated request", in: cat(noAuth, []byte{5, 1, 0, 3, 20, 'a'}), want: []byte{5, 0}},
		{name: "request version 4", in: cat(noAuth, []byte{4, 1, 0, 1, 127, 0, 0, 1, 0, 80}), want: []byte{5, 0}},
		{name: "empty", in: nil, want: []byte{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := e.exchange(tc.in)
			if tc.want != nil {
				if diff := cmp.Diff(tc.want, out); diff != "" && !(len(tc.want) == 0 && len(out) == 0) {
					t.Fatalf("output (-want +got):\n%s", diff)
				}
				return
			}
			if got := replyOf(out, 2); got != tc.reply {
				t.Fatalf("reply %d, want %d (output % x)", got, tc.reply, out)
			}
			if tc.reply == 0 && !bytes.HasSuffix(out, []byte("ping")) {
				t.Fatalf("tunnel did not echo: % x", out)
			}
		})
	}
	e.close()
	lines := e.accessLines()
	if missing := matchLines(lines, []map[string]string{
		{"listener": "socks5", "host": "allowed.test", "decision": "allow", "rule": "echo", "status": "0", "bytes_up": "4", "bytes_down": "4", "client": "127.0.0.1", "ip": "127.0.0.1"},
		{"listener": "socks5", "host": "127.0.0.1", "decision": "allow", "rule": "echo", "status": "0"},
		{"listener": "socks5", "host": "::1", "decision": "deny", "reason": "not_allowed", "status": "2"},
		{"listener": "socks5", "host": "other.test", "decision": "deny", "reason": "not_allowed", "status": "2"},
		{"listener": "socks5", "host": "allowed.test", "port": "1", "decision": "deny", "reason": "port_not_allowed"},
		{"listener": "socks5", "host": "nx.test", "reason": "dns_error", "status": "4"},
		{"listener": "socks5", "host": "refused.test", "reason": "dial_error", "status": "5"},
		{"listener": "socks5", "host": "allowed.test", "decision": "deny", "status": "7"},
		{"listener": "socks5", "host": "0.0.0.0", "decision": "deny", "status": "7"},
	}); len(missing) > 0 {
		t.Errorf("no access line for %v in:\n%v", missing, lines)
	}
	// Garbage that never became a request leaves no access line.
	if n := len(lines); n != 10 {
		t.Errorf("%d access lines, want one per request (10):\n%v", n, lines)
	}
}

// TestAuth: RFC 1929 username and password; users drive group membership.
func TestAuth(t *testing.T) {
	check := func(user, pass string) bool {
		return user == "alice" && pass == "secret" || user == "bob" && pass == "builder"
	}
	port := uint16(0)
	t.Run("required", func(t *testing.T) {
		e := newEnv(t, envOptions{auth: check, authRequired: true})
		port = e.origin.addr().Port()
		cases := []struct {
			name string
			in   []byte
			want []byte // output prefix
		}{
			{"no credentials offered", cat(greeting(0), reqDomain(cmdConnect, "allowed.test", port)), []byte{5, 0xFF}},
			{"right password", cat(greeting(0, 2), userPass("alice", "secret"), reqDomain(cmdConnect, "allowed.test", port)), []byte{5, 2, 1, 0, 5, 0}},
			{"wrong password", cat(greeting(2), userPass("alice", "nope"), reqDomain(cmdConnect, "allowed.test", port)), []byte{5, 2, 1, 1}},
			{"unknown user", cat(greeting(2), userPass("mallory", "secret"), reqDomain(cmdConnect, "allowed.test", port)), []byte{5, 2, 1, 1}},
			{"group by user", cat(greeting(2), userPass("alice", "secret"), reqDomain(cmdConnect, "admin.test", port)), []byte{5, 2, 1, 0, 5, 0}},
			{"user not in the group", cat(greeting(2), userPass("bob", "builder"), reqDomain(cmdConnect, "admin.test", port)), []byte{5, 2, 1, 0, 5, 2}},
			{"bad auth version", cat(greeting(2), []byte{5, 1, 'a', 1, 'b'}), []byte{5, 2}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				out := e.exchange(tc.in)
				if !bytes.HasPrefix(out, tc.want) {
					t.Fatalf("output % x, want prefix % x", out, tc.want)
				}
				if len(tc.want) == 2 || tc.want[3] == 1 {
					if len(out) != len(tc.want) {
						t.Fatalf("output % x goes on after the refusal", out)
					}
				}
			})
		}
		e.close()
		lines := e.accessLines()
		want := []map[string]string{
			{"user": "", "reason": "auth_required", "status": "255"},
			{"user": "alice", "host": "allowed.test", "decision": "allow"},
			{"user": "alice", "host": "", "reason": "auth_required", "status": "1"},
			{"user": "mallory", "host": "", "reason": "auth_required", "status": "1"},
			{"user": "alice", "host": "admin.test", "decision": "allow", "group": "admins", "rule": "admins"},
			{"user": "bob", "host": "admin.test", "decision": "deny", "reason": "not_allowed"},
		}
		if len(lines) != len(want) {
			t.Fatalf("%d access lines, want %d:\n%v", len(lines), len(want), lines)
		}
		// Lines are written as connections end, in no fixed order.
		if missing := matchLines(lines, want); len(missing) > 0 {
			t.Errorf("no access line for %v in:\n%v", missing, lines)
		}
		for _, l := range lines {
			for _, v := range l {
				if strings.Contains(v, "secret") || strings.Contains(v, "nope") {
					t.Errorf("access line logs a password: %v", l)
				}
			}
		}
	})
	t.Run("optional", func(t *testing.T) {
		e := newEnv(t, envOptions{auth: check})
		port = e.origin.addr().Port()
		// Anonymous clients are served; admin.test needs the user.
		if out := e.exchange(cat(greeting(0), reqDomain(cmdConnect, "allowed.test", port))); replyOf(out, 2) != 0 {
			t.Errorf("anonymous: % x", out)
		}
		if out := e.exchange(cat(greeting(0), reqDomain(cmdConnect, "admin.test", port))); replyOf(out, 2) != 2 {
			t.Errorf("anonymous to a users-only rule: % x", out)
		}
		// Offered credentials are checked, and wrong ones refused.
		if out := e.exchange(cat(greeting(2, 0), userPass("alice", "nope"), reqDomain(cmdConnect, "allowed.test", port))); !bytes.Equal(out, []byte{5, 2, 1, 1}) {
			t.Errorf("wrong password: % x", out)
		}
		if out := e.exchange(cat(greeting(2, 0), userPass("alice", "secret"), reqDomain(cmdConnect, "admin.test", port))); replyOf(out, 4) != 0 {
			t.Errorf("alice: % x", out)
		}
		// curl and x/net/proxy offer "no authentication" first: the server
		// still picks username/password, so the user's groups apply.
		if out := e.exchange(cat(greeting(0, 1, 2), userPass("alice", "secret"), reqDomain(cmdConnect, "admin.test", port))); !bytes.HasPrefix(out, []byte{5, 2, 1, 0, 5, 0}) {
			t.Errorf("alice offering 0, 1, 2: % x", out)
		}
		e.close()
		alice := map[string]string{"user": "alice", "group": "admins", "host": "admin.test", "decision": "allow"}
		if missing := matchLines(e.accessLines(), []map[string]string{alice, alice}); len(missing) > 0 {
			t.Errorf("want two lines %v in:\n%v", alice, e.accessLines())
		}
	})
}

// TestGuardOnTLSPorts: a SOCKS5 tunnel to a TLS port must start with a
// ClientHello, as a CONNECT tunnel must.
func TestGuardOnTLSPorts(t *testing.T) {
	e := newEnv(t, envOptions{pin: true, tlsPorts: []int{443}})
	out := e.exchange(cat(greeting(0), reqDomain(cmdConnect, "allowed.test", 443), []byte("GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n")))
	if replyOf(out, 2) != 0 || len(out) != 12 {
		t.Fatalf("output % x: want the success reply and nothing from the origin", out)
	}
	e.close()
	lines := e.accessLines()
	if len(lines) != 1 || lines[0]["reason"] != "protocol_mismatch" || lines[0]["decision"] != "deny" || lines[0]["bytes_up"] != "0" {
		t.Fatalf("access lines: %v", lines)
	}
}

// TestGarbageLeavesNothing: malformed handshakes close the connection and
// leave no goroutine (env.close checks) and no descriptor behind.
func TestGarbageLeavesNothing(t *testing.T) {
	newEnv(t, envOptions{}).close() // warm up the runtime's poller
	before := openFDs(t)
	e := newEnv(t, envOptions{})
	inputs := [][]byte{
		nil, {5}, {4, 1}, {5, 255}, []byte("GET / HTTP/1.1\r\n\r\n"), {0x16, 3, 1, 0, 5},
		cat(greeting(0), []byte{5, 1}), cat(greeting(0), []byte{5, 1, 0, 3, 200}), cat(greeting(2), []byte{1, 5, 'a'}),
		cat(greeting(0), []byte{5, 1, 0, 7}), bytes.Repeat([]byte{5}, 600),
	}
	for range 20 {
		for _, in := range inputs {
			e.exchange(in)
		}
	}
	if out := e.exchange(cat(greeting(0), reqIP(cmdConnect, "127.0.0.1", e.origin.addr().Port()), []byte("ok"))); !bytes.HasSuffix(out, []byte("ok")) {
		t.Fatalf("not serving after the garbage: % x", out)
	}
	e.close() // fails the test if a connection goroutine is left
	if after := openFDs(t); after > before {
		t.Fatalf("%d descriptors open after the garbage, %d before", after, before)
	}
}

// matchLines pairs each wanted field set with a distinct access line that
// has those fields, and returns the wanted sets left without one.
func matchLines(lines []map[string]string, want []map[string]string) (missing []map[string]string) {
	used := make([]bool, len(lines))
	for _, w := range want {
		found := false
		for i, l := range lines {
			if used[i] {
				continue
			}
			ok := true
			for k, v := range w {
				ok = ok && l[k] == v
			}
			if ok {
				used[i], found = true, true
				break
			}
		}
		if !found {
			missing = append(missing, w)
		}
	}
	return missing
}

// TestLimitRefusal: a connection past a limit is refused in SOCKS5 itself:
// a client that offers "no authentication" gets it, then the general
// failure (0x01) for its request (golang.org/x/net/proxy reports "general
// SOCKS server failure"); one that does not gets 0xFF; a greeting that is
// not SOCKS5 gets nothing. Each is logged and counted once, with reason
// limit, and nothing is dialed.
func TestLimitRefusal(t *testing.T) {
	e := newEnv(t, envOptions{maxConns: 1, auth: aliceOnly, authRequired: true})
	held := e.dial() // takes the one slot
	defer held.Close()
	waitUntil(t, func() bool { return e.acc.Open() == 1 })

	d, err := proxy.SOCKS5("tcp", e.ln.Addr().String(), nil, &net.Dialer{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Dial("tcp", fmt.Sprintf("allowed.test:%d", e.origin.addr().Port())); err == nil ||
		!strings.Contains(err.Error(), "general SOCKS server failure") {
		t.Fatalf("x/net/proxy through a full server: %v", err)
	}
	if out := e.exchange(greeting(2)); !bytes.Equal(out, []byte{5, 0xFF}) {
		t.Fatalf("username/password only: % x", out)
	}
	if out := e.exchange([]byte("GET / HTTP/1.1\r\n\r\n")); len(out) != 0 {
		t.Fatalf("not SOCKS5: % x", out)
	}
	held.Close()
	e.close()
	lines := e.accessLines()
	want := []map[string]string{
		{"reason": "limit", "decision": "deny", "host": "allowed.test", "status": "1"},
		{"reason": "limit", "decision": "deny", "host": "", "status": "0"},
		{"reason": "limit", "decision": "deny", "host": "", "status": "0"},
	}
	if len(lines) != len(want) {
		t.Fatalf("access lines %v, want %d", lines, len(want))
	}
	if missing := matchLines(lines, want); len(missing) > 0 {
		t.Errorf("no access line for %v in:\n%v", missing, lines)
	}
	if n := testutil.ToFloat64(e.metrics.LimitRejects.WithLabelValues("socks5", accesslog.LimitMaxConnections)); n != 3 {
		t.Errorf("egressd_limit_rejections_total{socks5,max_connections} %v, want 3", n)
	}
}

// waitUntil polls cond for up to 10s, for state another goroutine changes.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for start := time.Now(); !cond(); time.Sleep(time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatal("timed out")
		}
	}
}

// TestDialReply: a failed dial's reply comes from the syscall error the
// dialer kept (RFC 1928 section 6), whichever attempt of several failed how.
func TestDialReply(t *testing.T) {
	opErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: "tcp4", Err: os.NewSyscallError("connect", err)}
	}
	// A real refused connection, through the real dialer.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	_, _, _, refused := (&egress.Dialer{Timeout: 2 * time.Second}).Dial(context.Background(), policy.Decision{
		Verdict: policy.Allow, Host: "refused.test", Port: closed.Port(), Addrs: []netip.AddrPort{closed},
	})
	if refused == nil {
		t.Fatal("dial to a closed port succeeded")
	}
	cases := []struct {
		name string
		err  error
		want replyCode
	}{
		{"connection refused (real)", refused, replyConnectionRefused},
		{"connection refused", opErr(syscall.ECONNREFUSED), replyConnectionRefused},
		{"network unreachable", opErr(syscall.ENETUNREACH), replyNetworkUnreachable},
		{"network down", opErr(syscall.ENETDOWN), replyNetworkUnreachable},
		{"host unreachable", opErr(syscall.EHOSTUNREACH), replyHostUnreachable},
		{"connect timed out", opErr(syscall.ETIMEDOUT), replyHostUnreachable},
		{"dial timeout", &net.OpError{Op: "dial", Net: "tcp4", Err: os.ErrDeadlineExceeded}, replyHostUnreachable},
		{"context deadline", fmt.Errorf("dial a.test: %w", context.DeadlineExceeded), replyHostUnreachable},
		{"refused after a timeout", fmt.Errorf("dial a.test: %w", errors.Join(opErr(syscall.ETIMEDOUT), opErr(syscall.ECONNREFUSED))), replyConnectionRefused},
		{"out of descriptors", opErr(syscall.EMFILE), replyGeneralFailure},
		{"no decision", egress.ErrNoDecision, replyGeneralFailure},
		// A parent proxy's failure is the parent's, whatever it wraps: a
		// parent that refused the connection is not the destination
		// refusing it.
		{"parent down", &upstream.Error{Proxy: "corp", Result: upstream.ResultUnavailable, Err: opErr(syscall.ECONNREFUSED)}, replyGeneralFailure},
		{"parent 403", fmt.Errorf("dial: %w", &upstream.Error{Proxy: "corp", Status: 403, Result: upstream.ResultRefused, Err: errors.New("403 Forbidden")}), replyNotAllowed},
		{"parent 407", &upstream.Error{Proxy: "corp", Status: 407, Result: upstream.ResultRefused, Err: errors.New("407")}, replyGeneralFailure},
		{"parent 502", &upstream.Error{Proxy: "corp", Status: 502, Result: upstream.ResultRefused, Err: errors.New("502")}, replyHostUnreachable},
		{"parent 504", &upstream.Error{Proxy: "corp", Status: 504, Result: upstream.ResultRefused, Err: errors.New("504")}, replyHostUnreachable},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := dialReply(tc.err); got != tc.want {
				t.Errorf("dialReply(%v) = %#x, want %#x", tc.err, got, tc.want)
			}
		})
	}
}
