package testenv

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// Connect is the tests' one CONNECT client for raw connections: it writes
// "CONNECT target HTTP/1.1" with Host: target and header's fields on c and
// reads egressd's answer. A 200 must end exactly where the tunnel begins:
// bytes that came with it are an error, so nothing of the tunnel is ever
// consumed or lost and c is positioned at its first byte. Any other answer
// is returned with its body read into memory (resp.Body reads it again).
// c's deadlines are the caller's.
func Connect(c net.Conn, target string, header http.Header) (*http.Response, error) {
	var req bytes.Buffer
	fmt.Fprintf(&req, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n", target, target)
	if err := header.Write(&req); err != nil {
		return nil, err
	}
	req.WriteString("\r\n")
	if _, err := c.Write(req.Bytes()); err != nil {
		return nil, fmt.Errorf("CONNECT %s: %w", target, err)
	}
	return ReadConnectResponse(c, target)
}

// ReadConnectResponse reads egressd's answer to a CONNECT for target that
// the caller wrote on c itself (a head split across segments, say): a 200
// must end exactly where the tunnel begins, any other answer comes with its
// body read; see [Connect].
func ReadConnectResponse(c net.Conn, target string) (*http.Response, error) {
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return nil, fmt.Errorf("CONNECT %s: %w", target, err)
	}
	if resp.StatusCode == http.StatusOK {
		if n := br.Buffered(); n > 0 {
			return resp, fmt.Errorf("CONNECT %s: %d unexpected bytes after the status", target, n)
		}
		return resp, nil
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil {
		return resp, fmt.Errorf("CONNECT %s: %s, body: %w", target, resp.Status, err)
	}
	return resp, nil
}

// ConnectTunnel is [Connect] for callers that want a tunnel: any answer but
// a 200 is an error naming the status and egressd's X-Egress-Denied and
// X-Egress-Error headers.
func ConnectTunnel(c net.Conn, target string, header http.Header) error {
	resp, err := Connect(c, target, header)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("CONNECT %s: %s (%s%s)", target, resp.Status,
			resp.Header.Get("X-Egress-Denied"), resp.Header.Get("X-Egress-Error"))
	}
	return nil
}

// ConnDeadline bounds a connection from [Proc.Connect] as a whole.
const ConnDeadline = 30 * time.Second

// Connect opens a connection to egressd's HTTP listener from its namespace
// and sends CONNECT target on it (see the package function [Connect]). The
// connection has a deadline ConnDeadline away and is closed on cleanup; a
// failure to dial or to read an answer fails the test.
func (p *Proc) Connect(t testing.TB, target string, header http.Header) (net.Conn, *http.Response) {
	t.Helper()
	c := p.Dial(t, p.HTTPAddr)
	c.SetDeadline(time.Now().Add(ConnDeadline))
	resp, err := Connect(c, target, header)
	if err != nil {
		t.Fatal(err)
	}
	return c, resp
}

// DialFrom opens a TCP connection to addr from the local address from
// (an IP, "" for any) inside n (nil: the host namespace), with a deadline
// ConnDeadline away; it is closed on cleanup.
func (n *Netns) DialFrom(t testing.TB, from, addr string) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := n.DialFromContext(ctx, "tcp", from, addr)
	if err != nil {
		t.Fatalf("dial %s from %q: %v", addr, from, err)
	}
	c.SetDeadline(time.Now().Add(ConnDeadline))
	t.Cleanup(func() { c.Close() })
	return c
}
