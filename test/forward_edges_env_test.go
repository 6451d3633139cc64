package test

// Shared setup of the forwarded-path edge tests (issue 14): egressd in a
// namespace of its own with a DNS server, origins each test builds for
// itself, and a policy each test writes.

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/test/testenv"
)

// Client addresses of the edge tests: groupAIP is in group a; anything else
// (127.0.0.1) is not.
const groupAIP = "127.0.0.77"

type edgeEnv struct {
	ns   *testenv.Netns
	dns  *testenv.DNSServer
	proc *testenv.Proc
}

func newEdgeEnv(t *testing.T) *edgeEnv {
	t.Helper()
	e := &edgeEnv{ns: testenv.NewNetns(t)}
	e.dns = testenv.NewDNSServerIn(t, e.ns, "127.0.0.53")
	return e
}

// config is egressd's config with timeouts.idle and rules. Group a is
// groupAIP. There is no SOCKS5 listener.
func (e *edgeEnv) config(t *testing.T, idle time.Duration, rules ...testenv.Rule) *testenv.Config {
	t.Helper()
	c := testenv.NewConfig(t)
	if e.proc != nil {
		c.Listen.HTTP, c.Listen.Admin = e.proc.HTTPAddr, e.proc.AdminAddr
	} else {
		c.Listen.HTTP, c.Listen.Admin = e.ns.FreeAddr(t, "127.0.0.1"), e.ns.FreeAddr(t, "127.0.0.1")
	}
	c.DNS.Servers = []string{e.dns.Addr()}
	c.Timeouts.Handshake = 3 * time.Second
	c.Timeouts.Connect = 2 * time.Second
	c.Timeouts.Idle = idle
	c.Policy.Mode = "enforce"
	c.Policy.DenyRanges = []string{"default"}
	c.Policy.Groups = map[string]testenv.Group{"a": {CIDRs: []string{groupAIP + "/32"}}}
	c.Policy.Rules = rules
	return c
}

func (e *edgeEnv) start(t *testing.T, idle time.Duration, rules ...testenv.Rule) *testenv.Proc {
	t.Helper()
	e.proc = (&testenv.Egressd{Netns: e.ns}).StartConfig(t, e.config(t, idle, rules...))
	return e.proc
}

// reload rewrites the config file, sends SIGHUP and waits until egressd
// counted the reload.
func (e *edgeEnv) reload(t *testing.T, idle time.Duration, rules ...testenv.Rule) {
	t.Helper()
	before := reloads(t, e.ns, e.proc.AdminAddr, "success")
	writeFile(t, e.proc.ConfigPath, testenv.YAML(t, e.config(t, idle, rules...)))
	if err := e.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, func() bool { return reloads(t, e.ns, e.proc.AdminAddr, "success") > before },
		func() string { return "reload not counted:\n" + e.proc.Stderr() })
}

// client is a Go HTTP client whose proxy is egressd, dialing from the
// local address from ("" for 127.0.0.1).
func (e *edgeEnv) client(t *testing.T, from string) *http.Client {
	t.Helper()
	tr := &http.Transport{
		Proxy: http.ProxyURL(e.proc.ProxyURL()),
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if from == "" {
				return e.ns.DialContext(ctx, network, addr)
			}
			return e.ns.DialFromContext(ctx, network, from, addr)
		},
		ForceAttemptHTTP2: false,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// dialProxy opens a raw connection to egressd's HTTP listener.
func (e *edgeEnv) dialProxy(t *testing.T) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := e.ns.DialContext(ctx, "tcp", e.proc.HTTPAddr)
	if err != nil {
		t.Fatalf("dial proxy: %v", err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

// rawRequest sends req on a new connection and reads one response, its
// body read whole.
func (e *edgeEnv) rawRequest(t *testing.T, req string) (*http.Response, string) {
	t.Helper()
	c := e.dialProxy(t)
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatalf("write: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response to %q: %v", firstLine(req), err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

// scriptOrigin is a raw TCP origin in the namespace: each connection is
// handed to serve, so a test can answer as no well-behaved server would.
type scriptOrigin struct {
	ln    net.Listener
	serve func(c net.Conn)
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	total int
}

func newScriptOrigin(t *testing.T, ns *testenv.Netns, ip string, serve func(c net.Conn)) *scriptOrigin {
	t.Helper()
	ln, err := ns.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	o := &scriptOrigin{ln: ln, serve: serve, conns: map[net.Conn]struct{}{}}
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			o.mu.Lock()
			o.conns[c] = struct{}{}
			o.total++
			o.mu.Unlock()
			o.wg.Add(1)
			go func() {
				defer o.wg.Done()
				defer func() {
					c.Close()
					o.mu.Lock()
					delete(o.conns, c)
					o.mu.Unlock()
				}()
				c.SetDeadline(time.Now().Add(60 * time.Second))
				o.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		o.mu.Lock()
		for c := range o.conns {
			c.Close()
		}
		o.mu.Unlock()
		o.wg.Wait()
	})
	return o
}

func (o *scriptOrigin) Port() int { return portOf(o.ln.Addr()) }

// Conns is how many connections the origin accepted.
func (o *scriptOrigin) Conns() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.total
}

// readHead reads one request head (through the blank line) from br.
func readHead(br *bufio.Reader) (string, error) {
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			return b.String(), err
		}
		if line == "\r\n" || line == "\n" {
			return b.String(), nil
		}
	}
}

// twinOrigin is one plain HTTP origin on the same port of several
// addresses (one name, several A records). It counts, per address, the
// connections it accepted and the requests it answered, by the client
// named in their X-Client header. GET /hold waits for Release.
type twinOrigin struct {
	port    int
	mu      sync.Mutex
	conns   map[string]int      // address -> connections accepted
	open    map[string]int      // address -> connections open now
	clients map[string][]string // address -> X-Client of each request
	arrived chan string         // the address of each /hold request
	release chan struct{}
	once    sync.Once
}

func newTwinOrigin(t *testing.T, ns *testenv.Netns, ips ...string) *twinOrigin {
	t.Helper()
	o := &twinOrigin{conns: map[string]int{}, open: map[string]int{}, clients: map[string][]string{},
		arrived: make(chan string, 16), release: make(chan struct{})}
	for i, ip := range ips {
		ln, err := ns.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(o.port)))
		if err != nil {
			t.Fatalf("origin on %s: %v", ip, err)
		}
		if i == 0 {
			o.port = portOf(ln.Addr())
		}
		srv := &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				o.mu.Lock()
				o.clients[ip] = append(o.clients[ip], r.Header.Get("X-Client"))
				o.mu.Unlock()
				if r.URL.Path == "/hold" {
					o.arrived <- ip
					select {
					case <-o.release:
					case <-r.Context().Done():
					}
				}
				io.WriteString(w, ip)
			}),
			ConnState: func(_ net.Conn, s http.ConnState) {
				o.mu.Lock()
				defer o.mu.Unlock()
				switch s {
				case http.StateNew:
					o.conns[ip]++
					o.open[ip]++
				case http.StateClosed, http.StateHijacked:
					o.open[ip]--
				}
			},
		}
		go srv.Serve(ln)
		t.Cleanup(func() {
			o.Release()
			srv.Close()
		})
	}
	return o
}

// Release lets every /hold request answer.
func (o *twinOrigin) Release() { o.once.Do(func() { close(o.release) }) }

func (o *twinOrigin) stats(ip string) (conns, open int, clients []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.conns[ip], o.open[ip], append([]string(nil), o.clients[ip]...)
}

// scrape reads egressd's /metrics (from inside the namespace).
func (e *edgeEnv) scrape(t *testing.T) metrics {
	t.Helper()
	tr := &http.Transport{DialContext: e.ns.DialContext, DisableKeepAlives: true, Proxy: nil}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("http://" + e.proc.AdminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return parseMetrics(t, resp.Body)
}
