package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// parentProxy is the upstream proxy of the egressd-chain runs: a minimal
// CONNECT proxy inside the load tool, so that its CPU is the tool's and
// not the proxy's under test (whose upstream_proxies name it). It resolves
// bench names to the origins' IP itself, as a corporate parent resolves
// names the proxy does not.
type parentProxy struct {
	ln       net.Listener
	originIP netip.Addr
	timeout  time.Duration
	wg       sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	done  bool
}

func startParent(addr string, originIP netip.Addr, timeout time.Duration) (*parentProxy, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	p := &parentProxy{ln: ln, originIP: originIP, timeout: timeout, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

func (p *parentProxy) Addr() string { return p.ln.Addr().String() }

// Close stops the parent and cuts its tunnels.
func (p *parentProxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	p.done = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *parentProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *parentProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *parentProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			c.Close()
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.untrack(c)
			p.tunnel(c.(*net.TCPConn))
		}()
	}
}

var errParentTarget = errors.New("parent: target outside the bench")

// tunnel serves one CONNECT: read the request, dial the target (a bench
// name or a loopback IP), answer 200, relay both ways (splice, through
// io.Copy between TCP conns).
func (p *parentProxy) tunnel(c *net.TCPConn) {
	c.SetReadDeadline(time.Now().Add(p.timeout))
	br := bufio.NewReaderSize(c, 1024)
	req, err := http.ReadRequest(br)
	if err != nil || req.Method != http.MethodConnect {
		return
	}
	c.SetReadDeadline(time.Time{})
	up, err := p.dial(req.Host)
	if err != nil {
		io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		return
	}
	if !p.track(up) {
		up.Close()
		return
	}
	defer p.untrack(up)
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	var src io.Reader = c
	if br.Buffered() > 0 {
		src = io.MultiReader(io.LimitReader(br, int64(br.Buffered())), c)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(c, up)
		c.CloseWrite()
	}()
	io.Copy(up, src)
	up.CloseWrite()
	<-done
}

func (p *parentProxy) dial(hostport string) (*net.TCPConn, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, err
	}
	ip, err := netip.ParseAddr(host)
	switch {
	case err == nil && ip.IsLoopback():
	case err != nil && (host+"." == benchDomain || strings.HasSuffix(host+".", "."+benchDomain)):
		ip = p.originIP
	default:
		return nil, errParentTarget
	}
	c, err := net.DialTimeout("tcp", net.JoinHostPort(ip.String(), port), p.timeout)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}
