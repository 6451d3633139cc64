package test

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/test/testenv"
)

// TestConnectBothPaths: a CONNECT is answered by the HTTP listener's fast
// path when its head is plain, and by net/http and goproxy otherwise; a
// client must not be able to tell which, and every exchange is logged once.
func TestConnectBothPaths(t *testing.T) {
	f := newFarm(t, "enforce")

	// tunnelTLS writes head (and, with pipeline, the TLS ClientHello in the
	// same segment), reads the proxy's answer, then runs TLS with sni and
	// one request. It returns the CONNECT status and the HTTPS error.
	tunnelTLS := func(t *testing.T, head []string, sni string, pipeline bool) (int, error) {
		t.Helper()
		c := f.dialProxy(t)
		defer c.Close()
		for i, part := range head {
			if i > 0 {
				time.Sleep(50 * time.Millisecond) // a head split across segments
			}
			if pipeline && i == len(head)-1 {
				break
			}
			if _, err := io.WriteString(c, part); err != nil {
				t.Fatal(err)
			}
		}
		var tlsConn net.Conn = c
		if pipeline {
			tlsConn = &firstWritePrefixed{Conn: c, prefix: []byte(head[len(head)-1])}
		}
		if !pipeline {
			resp, err := testenv.ReadConnectResponse(c, sni)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusOK {
				return resp.StatusCode, nil
			}
		}
		// A pipelined ClientHello's answer is read behind the CONNECT's
		// (readerConn), from the same buffer.
		tc := tls.Client(&readerConn{Conn: tlsConn, r: bufio.NewReader(c), connect: pipeline}, &tls.Config{ServerName: sni, RootCAs: f.ca.CertPool()})
		if err := tc.Handshake(); err != nil {
			return 200, err
		}
		fmt.Fprintf(tc, "GET /both HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", sni)
		resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
		if err != nil {
			return 200, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return 200, fmt.Errorf("HTTPS status %d", resp.StatusCode)
		}
		return 200, nil
	}
	// once checks that the exchange since mark was logged in one line,
	// matching kv.
	mark := func() int { return len(f.proc.AccessLines()) }
	once := func(t *testing.T, from int, kv map[string]any) {
		t.Helper()
		f.waitLog(t, kv)
		time.Sleep(500 * time.Millisecond) // past the access log's flush interval
		if lines := f.proc.AccessLines()[from:]; len(lines) != 1 || !testenv.Fields(kv)(lines[0]) {
			t.Fatalf("access lines %v, want one matching %v", lines, kv)
		}
	}
	connectLine := func(host string) string {
		return fmt.Sprintf("CONNECT %s:%d HTTP/1.1\r\n", host, f.tlsPort)
	}

	const host = "allowed.test"
	t.Run("plain head", func(t *testing.T) {
		from := mark()
		if code, err := tunnelTLS(t, []string{connectLine(host) + "Host: " + host + "\r\n\r\n"}, host, false); code != 200 || err != nil {
			t.Fatalf("CONNECT %d, HTTPS %v", code, err)
		}
		once(t, from, map[string]any{"host": host, "listener": "connect", "decision": "allow", "sni": host, "status": 200})
	})
	t.Run("head split across segments", func(t *testing.T) {
		from := mark()
		if code, err := tunnelTLS(t, []string{"CONN", "ECT " + host + ":" + fmt.Sprint(f.tlsPort) + " HTTP/1.1\r\nHo", "st: " + host + "\r\n\r\n"},
			host, false); code != 200 || err != nil {
			t.Fatalf("CONNECT %d, HTTPS %v", code, err)
		}
		once(t, from, map[string]any{"host": host, "decision": "allow", "sni": host, "status": 200})
	})
	t.Run("ClientHello pipelined behind the head", func(t *testing.T) {
		// The fast path leaves what follows the head in the socket; the SNI
		// check must still see it.
		from := mark()
		if code, err := tunnelTLS(t, []string{connectLine(host) + "\r\n"}, host, true); code != 200 || err != nil {
			t.Fatalf("CONNECT %d, HTTPS %v", code, err)
		}
		once(t, from, map[string]any{"host": host, "decision": "allow", "sni": host, "status": 200})
		from = mark()
		if _, err := tunnelTLS(t, []string{connectLine(host) + "\r\n"}, "evil.test", true); err == nil {
			t.Fatal("a pipelined ClientHello for evil.test went through a CONNECT to " + host)
		}
		once(t, from, map[string]any{"host": host, "decision": "deny", "reason": "sni_mismatch", "sni": "evil.test"})
	})
	t.Run("unusual head takes the general path", func(t *testing.T) {
		// Non-ASCII header bytes: declined by the fast path, served by
		// net/http and goproxy, same tunnel, same line.
		from := mark()
		head := connectLine(host) + "Host: " + host + "\r\nX-Note: caf\xc3\xa9\r\n\r\n"
		if code, err := tunnelTLS(t, []string{head}, host, false); code != 200 || err != nil {
			t.Fatalf("CONNECT %d, HTTPS %v", code, err)
		}
		once(t, from, map[string]any{"host": host, "listener": "connect", "decision": "allow", "sni": host, "status": 200})
	})
	t.Run("refusal", func(t *testing.T) {
		from := mark()
		resp := f.rawRequest(t, connectLine("other.test")+"Host: other.test\r\n\r\n")
		if resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-Egress-Denied") != "not_allowed" {
			t.Fatalf("CONNECT other.test: %d %v", resp.StatusCode, resp.Header)
		}
		once(t, from, map[string]any{"host": "other.test", "listener": "connect", "decision": "deny", "reason": "not_allowed", "status": 403})
	})
	t.Run("absolute-URI request on the same listener", func(t *testing.T) {
		from := mark()
		resp := f.rawRequest(t, fmt.Sprintf("GET http://%s:%d/ HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host, f.httpPort, host))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET: %d", resp.StatusCode)
		}
		once(t, from, map[string]any{"host": host, "listener": "http", "method": "GET", "status": 200})
	})
	t.Run("head never finished", func(t *testing.T) {
		// timeouts.handshake is 3s: the connection is closed without an
		// answer, like net/http does with a slow head.
		c := f.dialProxy(t)
		io.WriteString(c, connectLine(host)+"Host: allo")
		c.SetReadDeadline(time.Now().Add(15 * time.Second))
		b, err := io.ReadAll(c)
		if len(b) != 0 || err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("half a head: read %q, %v; want a close without an answer", b, err)
		}
	})
}

// firstWritePrefixed sends prefix in the same write as the first bytes
// written (the TLS ClientHello), as a client that pipelines would.
type firstWritePrefixed struct {
	net.Conn
	prefix []byte
}

func (c *firstWritePrefixed) Write(p []byte) (int, error) {
	if c.prefix != nil {
		b := append(c.prefix, p...)
		c.prefix = nil
		if _, err := c.Conn.Write(b); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// readerConn reads through r; with connect set it first consumes the
// proxy's answer to a pipelined CONNECT and fails unless it is a 200.
type readerConn struct {
	net.Conn
	r       *bufio.Reader
	connect bool
}

func (c *readerConn) Read(p []byte) (int, error) {
	if c.connect {
		c.connect = false
		resp, err := http.ReadResponse(c.r, &http.Request{Method: http.MethodConnect})
		if err != nil {
			return 0, err
		}
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("CONNECT status %d", resp.StatusCode)
		}
	}
	return c.r.Read(p)
}
