package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Client kinds: how the load tool reaches an origin.
const (
	kindDirect  = "direct"  // no proxy: the limit
	kindConnect = "connect" // HTTP CONNECT tunnels
	kindSOCKS5  = "socks5"  // SOCKS5 CONNECT (username/password with -proxy-auth)
	kindHTTP    = "http"    // absolute-URI HTTP forwarding (tunnels use CONNECT on the same port)
	kindCache   = "cache"   // absolute-URI HTTP to a proxy whose HTTP cache is on
	kindInspect = "inspect" // CONNECT to a proxy that terminates TLS (TLS inspection) and reads the requests inside
)

// tunnelKind is how a kind opens its tunnels.
func tunnelKind(kind string) string {
	if kind == kindInspect {
		return kindConnect
	}
	return kind
}

// target is one destination with its proxy handshakes built in advance, so
// that the measured loops do not format strings.
type target struct {
	Host   string // name or IP literal, as sent to the proxy
	Port   uint16
	direct string // ip:port that the direct kind dials

	connectReq []byte
	socksHello []byte // the greeting: no authentication, or username/password only
	socksAuth  []byte // the RFC 1929 request; nil without credentials
	socksReq   []byte
}

// proxyAuth is the username and password the load tool presents to the
// proxy (-proxy-auth): HTTP Basic on CONNECT and forwarded requests, RFC 1929
// on SOCKS5. The zero value presents none.
type proxyAuth struct{ User, Password string }

func (a proxyAuth) set() bool { return a.User != "" || a.Password != "" }

// parseProxyAuth reads -proxy-auth's USER:PASSWORD.
func parseProxyAuth(s string) (proxyAuth, error) {
	if s == "" {
		return proxyAuth{}, nil
	}
	u, p, ok := strings.Cut(s, ":")
	switch {
	case !ok || u == "":
		return proxyAuth{}, errors.New("want USER:PASSWORD")
	case len(u) > 255 || len(p) > 255:
		return proxyAuth{}, errors.New("user and password are at most 255 bytes each (RFC 1929)")
	}
	return proxyAuth{User: u, Password: p}, nil
}

// header is the Proxy-Authorization header line, or "" without credentials.
func (a proxyAuth) header() string {
	if !a.set() {
		return ""
	}
	return "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(a.User+":"+a.Password)) + "\r\n"
}

// newTarget builds the handshakes for host:port. directIP is where the
// direct kind connects, standing in for the proxy's resolution of host.
func newTarget(host string, port uint16, directIP netip.Addr, auth proxyAuth) (*target, error) {
	hp := net.JoinHostPort(host, strconv.Itoa(int(port)))
	t := &target{
		Host:       host,
		Port:       port,
		direct:     netip.AddrPortFrom(directIP, port).String(),
		connectReq: []byte("CONNECT " + hp + " HTTP/1.1\r\nHost: " + hp + "\r\n" + auth.header() + "\r\n"),
		socksHello: []byte{5, 1, 0},
	}
	if auth.set() {
		t.socksHello = []byte{5, 1, 2}
		t.socksAuth = append([]byte{1, byte(len(auth.User))}, auth.User...)
		t.socksAuth = append(append(t.socksAuth, byte(len(auth.Password))), auth.Password...)
	}
	req := []byte{5, 1, 0}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Is4() {
			req = append(req, 1)
		} else {
			req = append(req, 4)
		}
		req = append(req, ip.AsSlice()...)
	} else {
		if len(host) > 255 {
			return nil, fmt.Errorf("socks5: host name %q too long", host)
		}
		req = append(req, 3, byte(len(host)))
		req = append(req, host...)
	}
	t.socksReq = binary.BigEndian.AppendUint16(req, port)
	return t, nil
}

// dialer opens tunnels of one kind.
type dialer struct {
	kind    string
	proxy   string        // host:port of the proxy; unused for direct
	timeout time.Duration // bound on connecting plus the proxy handshake
	nd      net.Dialer    // with Timeout set to timeout; shared by all workers, read only
}

// tunnel returns a byte stream to t: a direct connection, or a connection to
// the proxy on which the CONNECT or SOCKS5 handshake has succeeded.
func (d *dialer) tunnel(t *target) (net.Conn, error) {
	if d.kind == kindDirect {
		return d.nd.Dial("tcp", t.direct)
	}
	c, err := d.nd.Dial("tcp", d.proxy)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(d.timeout))
	var tc net.Conn
	switch d.kind {
	case kindConnect, kindHTTP, kindCache:
		tc, err = connectHandshake(c, t)
	case kindSOCKS5:
		tc, err = socksHandshake(c, t)
	default:
		err = fmt.Errorf("unknown kind %q", d.kind)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return tc, nil
}

// connectHandshake sends CONNECT and reads the proxy's answer up to the end
// of its header. Bytes that arrived after the header stay readable from the
// returned conn.
func connectHandshake(c net.Conn, t *target) (net.Conn, error) {
	if _, err := c.Write(t.connectReq); err != nil {
		return nil, err
	}
	var buf [1024]byte
	n := 0
	for {
		m, err := c.Read(buf[n:])
		n += m
		if i := bytes.Index(buf[:n], []byte("\r\n\r\n")); i >= 0 {
			if err := connectStatus(buf[:i]); err != nil {
				return nil, err
			}
			if rest := buf[i+4 : n]; len(rest) > 0 {
				return &prefixConn{Conn: c, prefix: bytes.Clone(rest)}, nil
			}
			return c, nil
		}
		if err != nil {
			return nil, fmt.Errorf("connect: reading answer: %w", err)
		}
		if n == len(buf) {
			return nil, errors.New("connect: answer header too long")
		}
	}
}

// connectStatus checks that the status line of a CONNECT answer says 2xx.
func connectStatus(hdr []byte) error {
	line, _, _ := bytes.Cut(hdr, []byte("\r\n"))
	f := bytes.Fields(line)
	if len(f) < 2 || !bytes.HasPrefix(f[0], []byte("HTTP/1.")) {
		return fmt.Errorf("connect: malformed status line %q", line)
	}
	if len(f[1]) != 3 || f[1][0] != '2' {
		return fmt.Errorf("connect: proxy answered %q", line)
	}
	return nil
}

// socksHandshake runs a SOCKS5 greeting, the username/password exchange
// when the target has credentials (RFC 1929), and a CONNECT request
// (RFC 1928), each step waiting for the server's answer as clients do.
func socksHandshake(c net.Conn, t *target) (net.Conn, error) {
	if _, err := c.Write(t.socksHello); err != nil {
		return nil, err
	}
	var b [262]byte
	if _, err := io.ReadFull(c, b[:2]); err != nil {
		return nil, fmt.Errorf("socks5: greeting: %w", err)
	}
	if b[0] != 5 || b[1] != t.socksHello[2] {
		return nil, fmt.Errorf("socks5: server chose method %d (version %d), offered %d", b[1], b[0], t.socksHello[2])
	}
	if t.socksAuth != nil {
		if _, err := c.Write(t.socksAuth); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(c, b[:2]); err != nil {
			return nil, fmt.Errorf("socks5: username/password: %w", err)
		}
		if b[0] != 1 || b[1] != 0 {
			return nil, fmt.Errorf("socks5: username/password refused (version %d, status %d)", b[0], b[1])
		}
	}
	if _, err := c.Write(t.socksReq); err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(c, b[:4]); err != nil {
		return nil, fmt.Errorf("socks5: reply: %w", err)
	}
	if b[0] != 5 {
		return nil, fmt.Errorf("socks5: reply version %d", b[0])
	}
	if b[1] != 0 {
		return nil, fmt.Errorf("socks5: reply code %d", b[1])
	}
	var rest int
	switch b[3] {
	case 1:
		rest = 4 + 2
	case 4:
		rest = 16 + 2
	case 3:
		if _, err := io.ReadFull(c, b[:1]); err != nil {
			return nil, fmt.Errorf("socks5: reply: %w", err)
		}
		rest = int(b[0]) + 2
	default:
		return nil, fmt.Errorf("socks5: reply address type %d", b[3])
	}
	if _, err := io.ReadFull(c, b[:rest]); err != nil {
		return nil, fmt.Errorf("socks5: reply: %w", err)
	}
	return c, nil
}

// prefixConn is a conn whose first reads return bytes already read from it.
type prefixConn struct {
	net.Conn
	prefix []byte
}

// Read returns the buffered prefix first, then reads from the conn.
func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// roundTrip writes a request built in advance and reads the whole response.
// It reports whether the connection may carry another request.
func roundTrip(w io.Writer, br *bufio.Reader, req []byte) (keepAlive bool, err error) {
	keepAlive, _, err = roundTripN(w, br, req)
	return keepAlive, err
}

// roundTripN is roundTrip that also returns the response body's length.
func roundTripN(w io.Writer, br *bufio.Reader, req []byte) (keepAlive bool, n int64, err error) {
	if _, err := w.Write(req); err != nil {
		return false, 0, err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return false, 0, err
	}
	n, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return false, n, err
	}
	if resp.StatusCode != http.StatusOK {
		return false, n, fmt.Errorf("http: status %q", resp.Status)
	}
	return !resp.Close, n, nil
}

// getRequest builds a GET request. uri is "/" in origin form or an absolute
// URI for a forward proxy; closeConn asks the origin to close after the
// answer.
func getRequest(uri, host string, closeConn bool, auth proxyAuth) []byte {
	s := "GET " + uri + " HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: egressbench\r\n" + auth.header()
	if closeConn {
		s += "Connection: close\r\n"
	}
	return []byte(s + "\r\n")
}
