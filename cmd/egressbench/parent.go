package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

// parentProxy is the upstream proxy of the egressd-chain runs: a minimal
// CONNECT proxy, run as a process of its own (egressbench parent) that
// bench.sh pins to the load tool's CPU, so that its CPU is not the proxy's
// under test (whose upstream_proxies name it), and its goroutines do not
// queue behind the load tool's. It resolves bench names to the origins' IP
// itself, as a corporate parent resolves names the proxy does not.
type parentProxy struct {
	ln       net.Listener
	originIP netip.Addr
	timeout  time.Duration
	wg       sync.WaitGroup
	conns    connSet
}

// parentMain is the parent subcommand: serve until SIGINT or SIGTERM.
func parentMain(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("parent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "", "loopback address to serve CONNECT on (required)")
	originIP := fs.String("origin-ip", "127.0.0.1", "loopback IP bench names resolve to")
	timeout := fs.Duration("timeout", 10*time.Second, "bound on reading a request and on each dial")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := loopbackOnly(*listen); err != nil {
		return fmt.Errorf("-listen: %w", err)
	}
	ip, err := netip.ParseAddr(*originIP)
	if err != nil || !ip.IsLoopback() {
		return fmt.Errorf("-origin-ip %q: want a loopback IP", *originIP)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	p, err := startParent(*listen, ip, *timeout)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "egressbench: parent proxy %s\n", p.Addr())
	<-ctx.Done()
	p.Close()
	return nil
}

func startParent(addr string, originIP netip.Addr, timeout time.Duration) (*parentProxy, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	p := &parentProxy{ln: ln, originIP: originIP, timeout: timeout}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

func (p *parentProxy) Addr() string { return p.ln.Addr().String() }

// Close stops the parent and cuts its tunnels.
func (p *parentProxy) Close() {
	p.ln.Close()
	p.conns.closeAll()
	p.wg.Wait()
}

func (p *parentProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.conns.add(c) {
			c.Close()
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.conns.remove(c)
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
	if !p.conns.add(up) {
		up.Close()
		return
	}
	defer p.conns.remove(up)
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
