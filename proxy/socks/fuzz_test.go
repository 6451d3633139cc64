package socks

import (
	"bytes"
	"testing"
)

// FuzzHandshake drives the whole SOCKS5 path end to end in-process: the
// fuzzer's bytes go over a real loopback connection to a Server (go-socks5's
// handshake parsing, our RuleSet, the policy engine, the pinned dialer, the
// first-bytes guard on port 443 and the splice relay to an echo origin),
// the client half-closes and reads until the server closes. For every
// input: no panic (the recover boundary would log at error level, which
// env.close reports), every connection goroutine returns on its own
// (env.close waits without closing anything), and no file descriptor is
// left open. goleak in TestMain checks the whole run.
func FuzzHandshake(f *testing.F) {
	ok := func(user, pass string) bool { return user == "alice" && pass == "secret" }
	hello := []byte{0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00}
	for _, s := range [][]byte{
		nil,
		{5},
		{5, 0},
		{4, 1, 0, 80, 127, 0, 0, 1, 0},
		greeting(0),
		cat(greeting(0), reqDomain(cmdConnect, "allowed.test", 80), []byte("ping")),
		cat(greeting(0), reqIP(cmdConnect, "127.0.0.1", 80), []byte("ping")),
		cat(greeting(0), reqIP(cmdConnect, "::1", 80)),
		cat(greeting(0), reqIP(cmdConnect, "::ffff:127.0.0.1", 80), []byte("x")),
		cat(greeting(0), reqDomain(cmdConnect, "allowed.test", 443), hello),
		cat(greeting(0), reqDomain(cmdConnect, "allowed.test", 443), []byte("GET / HTTP/1.1\r\n\r\n")),
		cat(greeting(0), reqDomain(cmdConnect, "other.test", 80)),
		cat(greeting(0), reqDomain(cmdConnect, "nx.test", 80)),
		cat(greeting(0), reqDomain(cmdConnect, "ALLOWED.test.", 80)),
		cat(greeting(0), reqDomain(cmdBind, "allowed.test", 80)),
		cat(greeting(0), reqIP(cmdAssociate, "0.0.0.0", 0)),
		cat(greeting(0), []byte{5, 1, 0, 9}),
		cat(greeting(2), userPass("alice", "secret"), reqDomain(cmdConnect, "admin.test", 80), []byte("hi")),
		cat(greeting(2), userPass("alice", "wrong")),
		cat(greeting(2, 0), []byte{1, 0, 0}),
		bytes.Repeat([]byte{5, 255}, 64),
	} {
		f.Add(s)
	}
	// Warm up the runtime's poller so the descriptor count is stable.
	newEnv(f, envOptions{pin: true, auth: ok}).close()
	f.Fuzz(func(t *testing.T, in []byte) {
		before := openFDs(t)
		e := newEnv(t, envOptions{pin: true, auth: ok})
		e.exchange(in)
		e.close()
		if after := openFDs(t); after > before {
			t.Fatalf("%d descriptors open after the exchange, %d before", after, before)
		}
	})
}
