package socks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	socks5 "github.com/armon/go-socks5"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap/zaptest/observer"
)

// twin is two servers in front of one origin: the fast path on, and
// go-socks5 alone. Every client byte sequence must get the same bytes back
// and the same access lines from both.
type twin struct {
	fast, lib *env
}

// authModes are the server configurations the twins run in: no users,
// optional username/password, and required username/password.
var authModes = []struct {
	name     string
	auth     func(user, pass string) bool
	required bool
}{
	{"no auth", nil, false},
	{"optional auth", aliceOnly, false},
	{"required auth", aliceOnly, true},
}

func aliceOnly(user, pass string) bool { return user == "alice" && pass == "secret" }

func newTwin(t testing.TB, auth func(user, pass string) bool, required bool) *twin {
	o := envOptions{pin: true, tlsPorts: []int{443}, auth: auth, authRequired: required}
	fast := newEnv(t, o)
	o.libraryOnly, o.share = true, fast
	lib := newEnv(t, o)
	return &twin{fast: fast, lib: lib}
}

func (tw *twin) close() {
	tw.lib.close()
	tw.fast.close()
}

// run sends the segments to one server (pausing between them, so that the
// server's reads see them apart), half-closes, reads everything until the
// server closes, waits for every goroutine and tunnel of the exchange to
// end, and returns the output and the access lines the exchange added.
func (e *env) run(segments [][]byte, pause time.Duration) ([]byte, []string) {
	e.t.Helper()
	before := e.access.Len()
	c := e.dial()
	defer c.Close()
	for i, s := range segments {
		if i > 0 {
			time.Sleep(pause)
		}
		if _, err := c.Write(s); err != nil {
			break // the server answered and closed early: fine
		}
	}
	c.CloseWrite()
	out, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		e.t.Fatalf("read: %v (server did not close within the deadline?)", err)
	}
	e.waitConns()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.tunnels.Wait(ctx); err != nil {
		e.t.Fatalf("tunnel still open 10s after its client left")
	}
	return maskBindPort(out), lineStrings(e.access.All()[before:])
}

// waitConns waits until no connection is in its handshake: its goroutine
// has finished the exchange (serveConn has returned). Unlike waitIdle it
// can run while Serve accepts.
func (e *env) waitConns() {
	e.t.Helper()
	for start := time.Now(); ; time.Sleep(time.Millisecond) {
		e.srv.mu.Lock()
		n := len(e.srv.conns)
		e.srv.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Since(start) > 10*time.Second {
			e.t.Fatalf("%d socks5 connections still in their handshake 10s after the client left", n)
		}
	}
}

// maskBindPort zeroes the port of a success reply's bound address (the
// upstream conn's local port), the one byte pair the two servers may
// legitimately answer differently. The reply follows the method selection
// and, with username/password, the RFC 1929 success.
func maskBindPort(out []byte) []byte {
	out = bytes.Clone(out)
	at := 2
	if bytes.HasPrefix(out, []byte{5, methodUserPass, userPassVer, 0}) {
		at = 4
	}
	r := out[min(at, len(out)):]
	if len(r) >= 10 && r[0] == 5 && r[1] == 0 {
		switch r[3] {
		case atypIPv4:
			r[8], r[9] = 0, 0
		case atypIPv6:
			if len(r) >= 22 {
				r[20], r[21] = 0, 0
			}
		}
	}
	return out
}

// lineStrings renders access lines without their time fields, sorted: a
// tunnel's line is written when it ends.
func lineStrings(entries []observer.LoggedEntry) []string {
	var out []string
	for _, l := range entries {
		fields := lineFields(l)
		delete(fields, "ts")
		delete(fields, "duration_ms")
		var b strings.Builder
		for _, k := range slices.Sorted(maps.Keys(fields)) {
			fmt.Fprintf(&b, "%s=%s ", k, fields[k])
		}
		out = append(out, b.String())
	}
	slices.Sort(out)
	return out
}

// compare runs the segments through both servers and fails on any
// difference a client or a log reader could see.
func (tw *twin) compare(t testing.TB, segments [][]byte, pause time.Duration) {
	t.Helper()
	fastOut, fastLines := tw.fast.run(segments, pause)
	libOut, libLines := tw.lib.run(segments, pause)
	if !bytes.Equal(fastOut, libOut) {
		t.Errorf("input % x: fast path answered\n% x\ngo-socks5 answered\n% x", bytes.Join(segments, nil), fastOut, libOut)
	}
	if diff := cmp.Diff(libLines, fastLines); diff != "" {
		t.Errorf("input % x: access lines (-go-socks5 +fast path):\n%s", bytes.Join(segments, nil), diff)
	}
}

var clientHello = []byte{0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00}

// fastPathInputs are the handshakes both tests start from: what clients
// send, and what they should not.
func fastPathInputs() [][]byte {
	noAuth := greeting(0)
	allMethods := make([]byte, 255)
	for i := range allMethods {
		allMethods[i] = byte(255 - i) // 0 comes last
	}
	return [][]byte{
		cat(noAuth, reqDomain(cmdConnect, "allowed.test", 80), []byte("ping")),
		cat(noAuth, reqIP(cmdConnect, "127.0.0.1", 80), []byte("ping")),
		cat(noAuth, reqIP(cmdConnect, "::1", 80)),
		cat(noAuth, reqIP(cmdConnect, "::ffff:127.0.0.1", 80), []byte("x")),
		cat(noAuth, reqDomain(cmdConnect, "ALLOWED.test.", 80), []byte("x")),
		cat(noAuth, reqDomain(cmdConnect, "allowed.test\x00", 80)),
		cat(noAuth, reqDomain(cmdConnect, "", 80)),
		cat(noAuth, reqDomain(cmdConnect, "127.1", 80)),
		cat(noAuth, reqDomain(cmdConnect, "other.test", 80)),
		cat(noAuth, reqDomain(cmdConnect, "allowed.test", 1)),
		cat(noAuth, reqDomain(cmdConnect, "allowed.test", 0)),
		cat(noAuth, reqDomain(cmdConnect, "nx.test", 80)),
		cat(noAuth, reqDomain(cmdConnect, "admin.test", 80)),
		cat(noAuth, reqDomain(cmdConnect, "allowed.test", 443), clientHello),
		cat(noAuth, reqDomain(cmdConnect, "allowed.test", 443), []byte("GET / HTTP/1.1\r\n\r\n")),
		cat(noAuth, reqDomain(cmdConnect, "allowed.test", 443)),
		cat(noAuth, reqDomain(cmdConnect, "allowed.test", 80), noAuth, reqDomain(cmdConnect, "allowed.test", 80)),
		cat(greeting(1, 0), reqDomain(cmdConnect, "allowed.test", 80), []byte("ping")),
		cat(greeting(allMethods...), reqDomain(cmdConnect, "allowed.test", 80), []byte("ping")),
		cat(noAuth, []byte{5, 1, 0xEE, 1, 127, 0, 0, 1, 0, 80}, []byte("reserved byte set")),
		cat(noAuth, reqDomain(cmdBind, "allowed.test", 80)),
		cat(noAuth, reqIP(cmdAssociate, "0.0.0.0", 0)),
		cat(noAuth, reqDomain(9, "allowed.test", 80)),
		cat(noAuth, []byte{5, 1, 0, 9, 1, 2, 3, 4, 0, 80}),
		cat(noAuth, []byte{4, 1, 0, 1, 127, 0, 0, 1, 0, 80}),
		cat(noAuth, []byte{5, 1, 0, 3, 20, 'a'}),
		cat(noAuth, []byte{5, 1, 0}),
		cat(noAuth, []byte{5}),
		noAuth,
		{4, 1, 0, 80, 127, 0, 0, 1, 0},
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		{5, 0},
		greeting(1),
		greeting(2),
		{5, 3, 0},
		{5},
		nil,
		// Username and password (RFC 1929).
		cat(greeting(2), userPass("alice", "secret"), reqDomain(cmdConnect, "allowed.test", 80), []byte("ping")),
		cat(greeting(2), userPass("alice", "secret"), reqDomain(cmdConnect, "admin.test", 80)),
		cat(greeting(0, 2), userPass("alice", "secret"), reqDomain(cmdConnect, "allowed.test", 80), []byte("ping")),
		cat(greeting(0, 1, 2), userPass("alice", "secret"), reqIP(cmdConnect, "127.0.0.1", 80), []byte("x")),
		cat(greeting(2), userPass("alice", "wrong"), reqDomain(cmdConnect, "allowed.test", 80)),
		cat(greeting(2, 0), userPass("mallory", "secret"), reqDomain(cmdConnect, "allowed.test", 80)),
		cat(greeting(2), userPass("", ""), reqDomain(cmdConnect, "allowed.test", 80)),
		cat(greeting(2), []byte{5, 1, 'a', 1, 'b'}),
		cat(greeting(2), []byte{1, 5, 'a', 'l'}),
		cat(greeting(2), []byte{1}),
		cat(greeting(2), userPass("alice", "secret"), reqDomain(cmdBind, "allowed.test", 80)),
		cat(greeting(0, 2), userPass("alice", "secret"), reqDomain(9, "allowed.test", 80)),
		cat(greeting(2), userPass("alice", "secret"), []byte{5, 1, 0, 9, 1, 2, 3, 4, 0, 80}),
		cat(greeting(2), userPass("alice", "secret"), []byte{5, 1, 0, 3}),
		cat(greeting(1, 2, 0), userPass("alice", "secret"), reqDomain(cmdConnect, "allowed.test", 443), clientHello),
	}
}

// TestFastPathMatchesLibrary: in each authentication mode, for each input,
// sent at once, split into the greeting and the rest, and one byte at a
// time, the fast path answers exactly what go-socks5 answers and logs the
// same access lines.
func TestFastPathMatchesLibrary(t *testing.T) {
	for _, mode := range authModes {
		t.Run(mode.name, func(t *testing.T) {
			tw := newTwin(t, mode.auth, mode.required)
			defer tw.close()
			for _, in := range fastPathInputs() {
				t.Run(fmt.Sprintf("% x", in), func(t *testing.T) {
					tw.compare(t, [][]byte{in}, 0)
					if len(in) > 2 {
						g := min(2+int(in[1]), len(in))
						tw.compare(t, [][]byte{in[:g], in[g:]}, 5*time.Millisecond)
					}
					if len(in) <= 40 && !testing.Short() {
						var bytewise [][]byte
						for i := range in {
							bytewise = append(bytewise, in[i:i+1])
						}
						tw.compare(t, bytewise, time.Millisecond)
					}
				})
			}
			// compare checked every byte both servers sent: go-socks5's
			// hand-off dropped no reply and sent none twice.
			if n := tw.fast.access.Len(); n == 0 {
				t.Fatal("no access lines at all")
			}
		})
	}
}

// FuzzFastPathMatchesLibrary: any byte sequence gets the same answer and
// the same access lines from the fast path as from go-socks5.
func FuzzFastPathMatchesLibrary(f *testing.F) {
	for _, in := range fastPathInputs() {
		for mode := range authModes {
			f.Add(uint8(mode), in)
		}
	}
	twins := make([]*twin, len(authModes))
	for i, mode := range authModes {
		twins[i] = newTwin(f, mode.auth, mode.required)
		f.Cleanup(twins[i].close)
	}
	f.Fuzz(func(t *testing.T, mode uint8, in []byte) {
		tw := twins[int(mode)%len(twins)]
		tw.fast.t, tw.lib.t = t, t
		defer func() { tw.fast.t, tw.lib.t = f, f }()
		tw.compare(t, [][]byte{in}, 0)
	})
}

// TestFastPathServesConnect: with no authentication configured the fast
// path, not go-socks5, serves a CONNECT (go-socks5 logs at Debug on each
// conn it serves that ends in an error; the fast path's conns never reach
// it), and a request that is not version 5 still reaches go-socks5.
func TestFastPathServesConnect(t *testing.T) {
	e := newEnv(t, envOptions{})
	port := e.origin.addr().Port()
	out, _ := e.run([][]byte{cat(greeting(0), reqDomain(cmdConnect, "other.test", port))}, 0)
	if replyOf(out, 2) != 2 {
		t.Fatalf("denied CONNECT: % x", out)
	}
	if n := e.diag.FilterMessage("socks5 connection ended").Len(); n != 0 {
		t.Fatalf("go-socks5 served the CONNECT (%d debug lines)", n)
	}
	out, _ = e.run([][]byte{cat(greeting(0), []byte{4, 1, 0, 1, 127, 0, 0, 1, 0, 80})}, 0)
	if !bytes.Equal(out, []byte{5, 0}) {
		t.Fatalf("request version 4: % x", out)
	}
	if n := e.diag.FilterMessage("socks5 connection ended").Len(); n != 1 {
		t.Fatalf("a version 4 request did not reach go-socks5 (%d debug lines)", n)
	}
	e.close()
}

// TestCommandsRefusedBeforeLibrary: BIND, UDP ASSOCIATE and unknown
// commands, with and without username/password, are answered 0x07 by
// egressd's own code and the connection closed: go-socks5 never sees the
// request (it would log at Debug for an unknown command, and it answers
// BIND and UDP ASSOCIATE only through its RuleSet). BIND and UDP ASSOCIATE
// are logged as denials with status 7; an unknown address type gets 0x08.
func TestCommandsRefusedBeforeLibrary(t *testing.T) {
	for _, mode := range authModes {
		t.Run(mode.name, func(t *testing.T) {
			e := newEnv(t, envOptions{auth: mode.auth, authRequired: mode.required})
			defer e.close()
			port := e.origin.addr().Port()
			head, skip := greeting(0), 2
			if mode.auth != nil {
				head, skip = cat(greeting(2), userPass("alice", "secret")), 4
			}
			for _, tc := range []struct {
				name  string
				req   []byte
				reply int
				line  map[string]string // nil: no access line for the request
			}{
				{"bind", reqDomain(cmdBind, "allowed.test", port), 7,
					map[string]string{"host": "allowed.test", "port": fmt.Sprint(port), "decision": "deny", "reason": "not_allowed", "status": "7"}},
				{"udp associate", reqIP(cmdAssociate, "0.0.0.0", 0), 7,
					map[string]string{"host": "0.0.0.0", "port": "0", "decision": "deny", "reason": "not_allowed", "status": "7"}},
				{"bind to ipv6", reqIP(cmdBind, "::1", 9), 7,
					map[string]string{"host": "::1", "port": "9", "decision": "deny", "reason": "not_allowed", "status": "7"}},
				{"unknown command", reqDomain(9, "allowed.test", port), 7, nil},
				{"bind, unknown address type", []byte{5, cmdBind, 0, 9, 1, 2, 3, 4, 0, 80}, 8, nil},
			} {
				t.Run(tc.name, func(t *testing.T) {
					refusedBefore := e.diag.FilterMessage("socks5 command refused").Len()
					out, lines := e.run([][]byte{cat(head, tc.req, []byte("early bytes"))}, 0)
					if got := replyOf(out, skip); got != tc.reply || len(out) != skip+10 {
						t.Fatalf("output % x, want reply %d and the connection closed", out, tc.reply)
					}
					if n := e.diag.FilterMessage("socks5 connection ended").Len(); n != 0 {
						t.Fatalf("go-socks5 served the request (%d debug lines)", n)
					}
					if tc.reply == 7 && e.diag.FilterMessage("socks5 command refused").Len() != refusedBefore+1 {
						t.Fatal("not refused by the fast path")
					}
					if tc.line == nil {
						// With users, the credential check has a line of
						// its own (as with go-socks5); none names the request.
						for _, l := range lines {
							if !strings.Contains(l, " host= ") {
								t.Fatalf("access line %s, want none for the request", l)
							}
						}
						return
					}
					if len(lines) != 1 {
						t.Fatalf("access lines %v, want one", lines)
					}
					for k, v := range tc.line {
						if !strings.Contains(lines[0], k+"="+v+" ") {
							t.Errorf("access line %s lacks %s=%s", lines[0], k, v)
						}
					}
				})
			}
		})
	}
}

// FuzzParseRequest holds the fast path's request parser to go-socks5's
// NewRequest: a request it accepts go-socks5 reads as the same command,
// host and port from the same bytes; one it waits on is one go-socks5
// cannot finish either; one it declines go-socks5 refuses, for the same
// reason (another version, or an unknown address type, which both answer
// 0x08).
func FuzzParseRequest(f *testing.F) {
	for _, in := range fastPathInputs() {
		if len(in) > 3 && in[0] == 5 && len(in) > 2+int(in[1]) {
			f.Add(in[2+int(in[1]):])
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, n := parseRequest(b)
		r := bytes.NewReader(b)
		lib, err := socks5.NewRequest(r)
		switch n {
		case requestShort:
			if err == nil {
				t.Fatalf("fast path waits for more than % x, go-socks5 parsed %+v", b, lib.DestAddr)
			}
		case requestNotSOCKS5:
			if err == nil {
				t.Fatalf("fast path declined % x as not SOCKS5, go-socks5 parsed %+v", b, lib)
			}
		case requestBadAddrType:
			if err == nil || err.Error() != "Unrecognized address type" {
				t.Fatalf("fast path found an unknown address type in % x, go-socks5: %v", b, err)
			}
		default:
			if err != nil {
				t.Fatalf("fast path parsed %+v (%d bytes), go-socks5: %v", req, n, err)
			}
			if lib.Command != req.cmd || destHost(lib.DestAddr) != req.host || lib.DestAddr.Port != req.port {
				t.Fatalf("fast path parsed %+v, go-socks5 %d %q %d", req, lib.Command, destHost(lib.DestAddr), lib.DestAddr.Port)
			}
			if used := len(b) - r.Len(); used != n {
				t.Fatalf("fast path took %d bytes, go-socks5 %d", n, used)
			}
		}
	})
}
