package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// ParentOptions configure a [Parent].
type ParentOptions struct {
	// Hosts are the names the parent resolves, to IPs: the on-premises
	// names egressd itself cannot resolve. IP literals are dialed as they
	// are; any other name gets 502.
	Hosts map[string]string
	// Credentials, when set ("user:password"), are required as Basic
	// Proxy-Authorization; a request without them gets 407.
	Credentials string
	// Refuse, when set, returns the status (403, 503, ...) the parent
	// answers instead of serving target (CONNECT's host:port, or the
	// absolute URI's host:port); 0 serves it.
	Refuse func(target string) int
	// AnswerWithFirstBytes, when it returns true for a CONNECT target,
	// makes the parent wait for the destination's first bytes (a
	// server-first protocol's banner) and write its 200 and those bytes
	// in one write: one segment, which the proxy reads in one go.
	AnswerWithFirstBytes func(target string) bool
}

// ParentRequest is one request a [Parent] received.
type ParentRequest struct {
	Method string // CONNECT, GET, ...
	// Target is CONNECT's authority (host:port) or the absolute URI.
	Target string
	// ProxyAuthorization is the header as received ("" when absent).
	ProxyAuthorization string
	Status             int // what the parent answered
	// TunnelUp counts the bytes the client sent through a CONNECT tunnel
	// after the parent's 200; final once Done.
	TunnelUp int64
	Done     bool // the tunnel (or request) is over
}

// Parent is a recording HTTP proxy, a parent for egressd's
// upstream_proxies: CONNECT tunnels and absolute-URI requests, over
// keep-alive connections, resolving only its Hosts. It records every
// request with its Proxy-Authorization and the bytes each tunnel carried.
type Parent struct {
	ns   *Netns
	o    ParentOptions
	ln   net.Listener
	tr   *http.Transport
	wg   sync.WaitGroup
	mu   sync.Mutex
	reqs []*ParentRequest
	// changed is closed and replaced whenever a request is added or ends.
	changed chan struct{}
	conns   atomic.Int64
	closing atomic.Bool
	live    map[net.Conn]struct{}
}

// NewParentIn starts a recording parent proxy on ip:0 inside ns (nil: the
// host namespace). It stops on cleanup.
func NewParentIn(t testing.TB, ns *Netns, ip string, o ParentOptions) *Parent {
	t.Helper()
	ln, err := ns.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("parent listen on %s: %v", ip, err)
	}
	p := &Parent{ns: ns, o: o, ln: ln, changed: make(chan struct{}), live: map[net.Conn]struct{}{}}
	p.tr = &http.Transport{DialContext: p.dial, Proxy: nil, DisableCompression: true}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

// Addr returns the parent's "ip:port".
func (p *Parent) Addr() string { return p.ln.Addr().String() }

// URL returns "http://ip:port", for upstream_proxies.NAME.urls.
func (p *Parent) URL() string { return "http://" + p.Addr() }

// Conns returns how many TCP connections the parent accepted.
func (p *Parent) Conns() int { return int(p.conns.Load()) }

// Requests returns a copy of every request received so far, in order.
func (p *Parent) Requests() []ParentRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]ParentRequest, len(p.reqs))
	for i, r := range p.reqs {
		out[i] = *r
	}
	return out
}

// WaitDone waits up to 10 s until n requests were received and every one
// of them is over (tunnels closed), and returns them.
func (p *Parent) WaitDone(t testing.TB, n int) []ParentRequest {
	t.Helper()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	for {
		p.mu.Lock()
		ch := p.changed
		done := len(p.reqs) >= n
		for _, r := range p.reqs {
			done = done && r.Done
		}
		p.mu.Unlock()
		if done {
			return p.Requests()
		}
		select {
		case <-ch:
		case <-timer.C:
			t.Fatalf("parent: want %d finished requests, have %+v", n, p.Requests())
		}
	}
}

func (p *Parent) record(r *ParentRequest, update func()) {
	p.mu.Lock()
	if update != nil {
		update()
	} else {
		p.reqs = append(p.reqs, r)
	}
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

func (p *Parent) close() {
	p.closing.Store(true)
	p.ln.Close()
	p.mu.Lock()
	for c := range p.live {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	p.tr.CloseIdleConnections()
}

func (p *Parent) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.conns.Add(1)
		p.mu.Lock()
		if p.closing.Load() {
			p.mu.Unlock()
			c.Close()
			return
		}
		p.live[c] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer func() {
				p.mu.Lock()
				delete(p.live, c)
				p.mu.Unlock()
				c.Close()
			}()
			p.conn(c)
		}()
	}
}

// conn serves one client connection's requests until it closes or turns
// into a tunnel.
func (p *Parent) conn(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		rec := &ParentRequest{Method: req.Method, Target: req.RequestURI, ProxyAuthorization: req.Header.Get("Proxy-Authorization")}
		p.record(rec, nil)
		finish := func(status int) {
			p.record(rec, func() { rec.Status, rec.Done = status, true })
		}
		target := req.Host
		if req.Method != http.MethodConnect {
			if req.URL.Port() == "" {
				target = net.JoinHostPort(req.URL.Hostname(), "80")
			} else {
				target = req.URL.Host
			}
		}
		status := 0
		switch {
		case p.o.Credentials != "" && req.Header.Get("Proxy-Authorization") != basicAuth(p.o.Credentials):
			status = http.StatusProxyAuthRequired
		case p.o.Refuse != nil:
			status = p.o.Refuse(target)
		}
		if status != 0 {
			resp := fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Length: 0\r\n", status, http.StatusText(status))
			if status == http.StatusProxyAuthRequired {
				resp += "Proxy-Authenticate: Basic realm=\"parent\"\r\n"
			}
			io.WriteString(c, resp+"\r\n")
			finish(status)
			if req.Body != nil {
				io.Copy(io.Discard, req.Body)
			}
			continue
		}
		if req.Method == http.MethodConnect {
			p.tunnel(c, br, rec, target)
			return
		}
		if !p.forward(c, req, rec) {
			return
		}
	}
}

func basicAuth(cred string) string {
	u, pw, _ := strings.Cut(cred, ":")
	r := http.Request{Header: http.Header{}}
	r.SetBasicAuth(u, pw)
	return r.Header.Get("Authorization")
}

// dial connects to target (host:port) by the parent's own names.
func (p *Parent) dial(ctx context.Context, _, target string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		return nil, err
	}
	if ip, ok := p.o.Hosts[host]; ok {
		host = ip
	} else if net.ParseIP(host) == nil {
		return nil, fmt.Errorf("parent: unknown host %s", host)
	}
	return p.ns.DialContext(ctx, "tcp", net.JoinHostPort(host, port))
}

func (p *Parent) tunnel(c net.Conn, br *bufio.Reader, rec *ParentRequest, target string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	up, err := p.dial(ctx, "tcp", target)
	cancel()
	if err != nil {
		io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		p.record(rec, func() { rec.Status, rec.Done = 502, true })
		return
	}
	defer up.Close()
	p.record(rec, func() { rec.Status = 200 })
	answer := []byte("HTTP/1.1 200 Connection established\r\n\r\n")
	if p.o.AnswerWithFirstBytes != nil && p.o.AnswerWithFirstBytes(target) {
		// A bound, not a synchronisation: the destination speaks first.
		up.SetReadDeadline(time.Now().Add(5 * time.Second))
		first := make([]byte, 4096)
		n, err := up.Read(first)
		up.SetReadDeadline(time.Time{})
		if err != nil {
			p.record(rec, func() { rec.Done = true })
			return
		}
		answer = append(answer, first[:n]...)
	}
	if _, err := c.Write(answer); err != nil {
		p.record(rec, func() { rec.Done = true })
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(c, up)
		if tc, ok := c.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	}()
	n, _ := io.Copy(up, br)
	if tc, ok := up.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	<-done
	p.record(rec, func() { rec.TunnelUp, rec.Done = n, true })
}

// forward serves an absolute-URI request; false ends the connection.
func (p *Parent) forward(c net.Conn, req *http.Request, rec *ParentRequest) bool {
	out := req.Clone(context.Background())
	out.RequestURI = ""
	out.Header.Del("Proxy-Authorization")
	out.Header.Del("Proxy-Connection")
	if out.URL.Scheme == "" || out.URL.Host == "" {
		io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
		p.record(rec, func() { rec.Status, rec.Done = 400, true })
		return false
	}
	resp, err := p.tr.RoundTrip(out)
	if err != nil {
		io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		p.record(rec, func() { rec.Status, rec.Done = 502, true })
		return !errors.Is(err, io.EOF)
	}
	defer resp.Body.Close()
	resp.Header.Add("Via", "1.1 parent")
	err = resp.Write(c)
	p.record(rec, func() { rec.Status, rec.Done = resp.StatusCode, true })
	return err == nil && !req.Close
}
