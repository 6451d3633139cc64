package socks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	socks5 "github.com/armon/go-socks5"
	"go.uber.org/zap/zaptest/observer"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/egress"
)

// library is the oracle: github.com/armon/go-socks5's Server, built here
// and only here, asking the same Decider and dialing through the same
// Dialer as the state machine. Where go-socks5's defaults differ from what
// egressd promises, it is configured to agree: names reach the policy
// unresolved (passThrough), commands other than CONNECT reach go-socks5's
// own 0x07 (allowRefused), and with users the greeting is reordered so
// username/password wins (preferUserPass). It relays with its own copy
// loops, so the twins compare with the SNI guard off (no TLS ports).
type library struct {
	ln   net.Listener
	srv  *socks5.Server
	auth bool
	wg   sync.WaitGroup // the accept loop and every connection
	mu   sync.Mutex
	open int
}

func serveLibrary(ln net.Listener, decider policy.Decider, dialer *egress.Dialer, auth func(user, pass string) bool, required bool) *library {
	l := &library{ln: ln, auth: auth != nil}
	conf := &socks5.Config{
		Resolver: passThrough{},
		Rules:    libraryRules{decider},
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			d, _ := ctx.Value(decisionKey{}).(decided)
			if d.err != nil {
				return nil, d.err
			}
			c, _, _, err := dialer.Dial(ctx, d.dec)
			if err != nil {
				return nil, err
			}
			return c, nil
		},
		Logger: log.New(io.Discard, "", 0),
	}
	if auth != nil {
		conf.AuthMethods = []socks5.Authenticator{socks5.UserPassAuthenticator{Credentials: credentials(auth)}}
		if !required {
			conf.AuthMethods = append(conf.AuthMethods, socks5.NoAuthAuthenticator{})
		}
	}
	var err error
	if l.srv, err = socks5.New(conf); err != nil {
		panic(err)
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

func (l *library) acceptLoop() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.mu.Lock()
		l.open++
		l.mu.Unlock()
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer func() {
				l.mu.Lock()
				l.open--
				l.mu.Unlock()
			}()
			defer c.Close()
			tc := c.(*net.TCPConn)
			tc.SetDeadline(time.Now().Add(2 * time.Second))
			var conn net.Conn = tc
			if l.auth {
				g, err := preferUserPass(tc)
				if err != nil {
					return
				}
				conn = &replayConn{TCPConn: tc, head: g}
			}
			l.srv.ServeConn(conn)
		}()
	}
}

// idle reports whether no connection is being served.
func (l *library) idle() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open == 0
}

func (l *library) close() {
	l.ln.Close()
	l.wg.Wait()
}

// passThrough is go-socks5's Resolver: it resolves nothing, so the name
// reaches the policy as the client sent it (go-socks5 request.go
// handleRequest resolves before its RuleSet runs).
type passThrough struct{}

func (passThrough) Resolve(ctx context.Context, _ string) (context.Context, net.IP, error) {
	return ctx, nil, nil
}

type decisionKey struct{}

type decided struct {
	dec policy.Decision
	err error
}

// libraryRules is go-socks5's RuleSet: the same Decider, with the user
// go-socks5 authenticated.
type libraryRules struct{ decider policy.Decider }

func (r libraryRules) Allow(ctx context.Context, req *socks5.Request) (context.Context, bool) {
	if req.Command != socks5.ConnectCommand {
		return ctx, true // go-socks5 answers 0x07 itself, after its RuleSet allowed the command
	}
	var user string
	if req.AuthContext != nil {
		user = req.AuthContext.Payload["Username"]
	}
	host := destHost(req.DestAddr)
	if req.DestAddr.Port == 0 {
		return ctx, false
	}
	client, _ := netip.ParseAddrPort(req.RemoteAddr.String())
	dec, err := r.decider.Decide(ctx, policy.Request{
		Listener: policy.ListenerSOCKS5,
		Client:   policy.Client{Addr: client.Addr().Unmap(), User: user},
		Host:     host,
		Port:     uint16(req.DestAddr.Port),
	})
	if err == nil && !dec.Verdict.Passes() {
		return ctx, false
	}
	return context.WithValue(ctx, decisionKey{}, decided{dec, err}), true
}

// destHost is go-socks5's destination as the state machine spells it: the
// name as sent, or the IP literal's canonical form.
func destHost(a *socks5.AddrSpec) string {
	if a.FQDN != "" {
		return a.FQDN
	}
	if ip, ok := netip.AddrFromSlice(a.IP); ok {
		return ip.Unmap().String()
	}
	return ""
}

// credentials adapts an Auth function to go-socks5's CredentialStore.
type credentials func(user, pass string) bool

func (c credentials) Valid(user, pass string) bool { return c(user, pass) }

// preferUserPass reads the client's greeting and returns it with
// username/password moved to the front when it is offered: go-socks5
// (auth.go authenticate) takes the first method in the client's order.
// A greeting that is not SOCKS5 is returned as read, for go-socks5 to
// refuse.
func preferUserPass(r io.Reader) ([]byte, error) {
	var head [2]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return nil, err
	}
	if head[0] != 5 {
		return head[:], nil
	}
	g := make([]byte, 2+int(head[1]))
	copy(g, head[:])
	if _, err := io.ReadFull(r, g[2:]); err != nil {
		return nil, err
	}
	for i, m := range g[2:] {
		if m == methodUserPass {
			copy(g[3:3+i], g[2:2+i])
			g[2] = methodUserPass
			break
		}
	}
	return g, nil
}

// replayConn reads head first, then the socket.
type replayConn struct {
	*net.TCPConn
	head []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.head) > 0 {
		n := copy(p, c.head)
		c.head = c.head[n:]
		return n, nil
	}
	return c.TCPConn.Read(p)
}

// twin is two servers in front of one origin: the state machine, and
// go-socks5. Every client byte sequence must get the same bytes back from
// both.
type twin struct {
	machine, lib *env
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
	o := envOptions{pin: true, tlsPorts: []int{}, auth: auth, authRequired: required}
	machine := newEnv(t, o)
	o.library, o.share = true, machine
	lib := newEnv(t, o)
	return &twin{machine: machine, lib: lib}
}

func (tw *twin) close() {
	tw.lib.close()
	tw.machine.close()
}

// run sends the segments to one server (pausing between them, so that the
// server's reads see them apart), half-closes, reads everything until the
// server closes, waits for the connection (and its tunnel) to end, and
// returns the output and the access lines the exchange added.
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
	return maskBindPort(out), lineStrings(e.access.All()[before:])
}

// waitConns waits until the server has finished every connection: the
// state machine released it (its tunnel ended), or go-socks5's ServeConn
// returned.
func (e *env) waitConns() {
	e.t.Helper()
	for start := time.Now(); ; time.Sleep(time.Millisecond) {
		if e.lib != nil && e.lib.idle() || e.acc != nil && e.acc.Open() == 0 {
			return
		}
		if time.Since(start) > 10*time.Second {
			e.t.Fatalf("socks5 connections still open 10s after the client left")
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
	if bytes.HasPrefix(out, []byte{5, methodUserPass, userPassVersion, 0}) {
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
// difference a client could see. The state machine's access lines are its
// own (go-socks5 writes none); each connection has at most one.
func (tw *twin) compare(t testing.TB, segments [][]byte, pause time.Duration) {
	t.Helper()
	out, lines := tw.machine.run(segments, pause)
	libOut, _ := tw.lib.run(segments, pause)
	if !bytes.Equal(out, libOut) {
		t.Errorf("input % x: the state machine answered\n% x\ngo-socks5 answered\n% x", bytes.Join(segments, nil), out, libOut)
	}
	if len(lines) > 1 {
		t.Errorf("input % x: %d access lines for one connection:\n%s", bytes.Join(segments, nil), len(lines), strings.Join(lines, "\n"))
	}
}

var clientHello = []byte{0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00}

// oracleInputs are the handshakes both tests start from: what clients
// send, and what they should not.
func oracleInputs() [][]byte {
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

// TestStateMachineMatchesLibrary: in each authentication mode, for each
// input, sent at once, split into the greeting and the rest, and one byte
// at a time, the state machine answers exactly what go-socks5 answers.
func TestStateMachineMatchesLibrary(t *testing.T) {
	for _, mode := range authModes {
		t.Run(mode.name, func(t *testing.T) {
			tw := newTwin(t, mode.auth, mode.required)
			defer tw.close()
			for _, in := range oracleInputs() {
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
			if n := tw.machine.access.Len(); n == 0 {
				t.Fatal("no access lines at all")
			}
		})
	}
}

// FuzzStateMachineMatchesLibrary: any byte sequence gets the same answer
// from the state machine as from go-socks5, and at most one access line.
func FuzzStateMachineMatchesLibrary(f *testing.F) {
	for _, in := range oracleInputs() {
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
		tw.machine.t, tw.lib.t = t, t
		defer func() { tw.machine.t, tw.lib.t = f, f }()
		tw.compare(t, [][]byte{in}, 0)
	})
}

// TestCommandsRefused: BIND, UDP ASSOCIATE and unknown commands, with and
// without username/password, are answered 0x07 and the connection closed.
// BIND and UDP ASSOCIATE are logged as denials with status 7; an unknown
// address type gets 0x08.
func TestCommandsRefused(t *testing.T) {
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
					if tc.reply == 7 && e.diag.FilterMessage("socks5 command refused").Len() != refusedBefore+1 {
						t.Fatal("no diagnostic for the refused command")
					}
					if tc.line == nil {
						// With users, the credential check has a line of
						// its own; none names the request.
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

// FuzzParseRequest holds the state machine's request parser to go-socks5's
// NewRequest: a request it accepts go-socks5 reads as the same command,
// host and port from the same bytes; one it waits on is one go-socks5
// cannot finish either; one it declines go-socks5 refuses, for the same
// reason (another version, or an unknown address type, which both answer
// 0x08).
func FuzzParseRequest(f *testing.F) {
	for _, in := range oracleInputs() {
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
				t.Fatalf("parseRequest waits for more than % x, go-socks5 parsed %+v", b, lib.DestAddr)
			}
		case requestNotSOCKS5:
			if err == nil {
				t.Fatalf("parseRequest declined % x as not SOCKS5, go-socks5 parsed %+v", b, lib)
			}
		case requestBadAddrType:
			if err == nil || err.Error() != "Unrecognized address type" {
				t.Fatalf("parseRequest found an unknown address type in % x, go-socks5: %v", b, err)
			}
		default:
			if err != nil {
				t.Fatalf("parseRequest parsed %+v (%d bytes), go-socks5: %v", req, n, err)
			}
			if lib.Command != req.cmd || destHost(lib.DestAddr) != req.host || lib.DestAddr.Port != int(req.port) {
				t.Fatalf("parseRequest parsed %+v, go-socks5 %d %q %d", req, lib.Command, destHost(lib.DestAddr), lib.DestAddr.Port)
			}
			if used := len(b) - r.Len(); used != n {
				t.Fatalf("parseRequest took %d bytes, go-socks5 %d", n, used)
			}
		}
	})
}
