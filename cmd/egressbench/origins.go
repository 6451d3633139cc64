package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/egressd/egressd/test/testnet"
)

// Bulk protocol: the client sends a 16-byte header, then for an upload the
// payload. Byte 0 is the operation, bytes 8..15 the payload length (big
// endian). An upload is acknowledged with one byte once the origin has read
// all of it; a download is answered with the payload, after which the origin
// waits for the client to close. Neither direction relies on half-close,
// which not every proxy forwards.
const (
	bulkHeaderLen = 16
	bulkUpload    = 'U'
	bulkDownload  = 'D'
	bulkAck       = 'K'
)

// benchDomain is the zone the in-process DNS server answers for.
const benchDomain = "bench.test."

// originBody is what the HTTP and HTTPS origins answer: small, fixed, with a
// Content-Length so that no proxy needs chunked encoding.
var originBody = []byte(strings.Repeat("egressbench origin body.\n", 4))

// Object sizes of the cache scenarios, and their bodies: /cache/1k/... and
// /cache/1m/... on the HTTP origin answer with them, cacheable.
const (
	cacheSmall = 1 << 10
	cacheLarge = 1 << 20
)

var cacheBodies = map[string][]byte{
	"1k": bytes.Repeat([]byte("c"), cacheSmall),
	"1m": bytes.Repeat([]byte("C"), cacheLarge),
}

// cachePath is the path prefix of a cache scenario's objects of size.
func cachePath(size int) string {
	if size == cacheLarge {
		return "/cache/1m/"
	}
	return "/cache/1k/"
}

// cacheBody returns the body the HTTP origin answers path with when it is
// a cache scenario's object.
func cacheBody(path string) ([]byte, bool) {
	rest, ok := strings.CutPrefix(path, "/cache/")
	if !ok {
		return nil, false
	}
	size, _, _ := strings.Cut(rest, "/")
	b, ok := cacheBodies[size]
	return b, ok
}

// originConfig says where the origins listen. Empty addresses mean a free
// port on IP.
type originConfig struct {
	IP                                    netip.Addr
	BulkAddr, EchoAddr, HTTPAddr, TLSAddr string
	DNSAddr                               string
	Name                                  string        // the TLS origin's host name, under bench.test
	copyBuf                               int           // bulk sink buffer size
	dnsTTL                                uint32        // TTL of DNS answers, seconds
	handshake                             time.Duration // bound on reading a request or header
	pki                                   *benchPKI     // nil: a fresh origin CA
}

// origins are the servers the benchmark sends its traffic to. Each accepted
// connection is tracked so that Close ends it, and every goroutine is counted
// in wg so that Close returns only when all of them have.
type origins struct {
	cfg originConfig

	bulk, echo, httpL, tlsL net.Listener
	dns                     *testnet.DNSServer
	httpSrv, tlsSrv         *http.Server

	// CAPool holds the test CA that signed the TLS origin's certificate.
	CAPool *x509.CertPool

	zero    []byte    // read-only fallback source for downloads
	src     *payload  // sendfile source for downloads
	bufPool sync.Pool // *[]byte fallback sink buffers
	wg      sync.WaitGroup
	conns   connSet
}

// startOrigins starts every origin and the DNS server, and returns once all
// of them accept.
func startOrigins(cfg originConfig) (_ *origins, err error) {
	o := &origins{cfg: cfg, zero: make([]byte, 1<<20)}
	o.bufPool.New = func() any { b := make([]byte, cfg.copyBuf); return &b }
	defer func() {
		if err != nil {
			o.Close()
		}
	}()
	if o.src, err = newPayload(len(o.zero)); err != nil {
		return nil, err
	}
	listen := func(addr string) (net.Listener, error) {
		if addr == "" {
			addr = net.JoinHostPort(cfg.IP.String(), "0")
		}
		if err := loopbackOnly(addr); err != nil {
			return nil, err
		}
		return net.Listen("tcp", addr)
	}
	if o.bulk, err = listen(cfg.BulkAddr); err != nil {
		return nil, fmt.Errorf("bulk origin: %w", err)
	}
	if o.echo, err = listen(cfg.EchoAddr); err != nil {
		return nil, fmt.Errorf("echo origin: %w", err)
	}
	if o.httpL, err = listen(cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("http origin: %w", err)
	}
	if o.tlsL, err = listen(cfg.TLSAddr); err != nil {
		return nil, fmt.Errorf("tls origin: %w", err)
	}
	o.serveRaw(o.bulk, o.serveBulk)
	o.serveRaw(o.echo, o.serveEcho)

	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// POST bodies are read whole: a proxy that cut one gets 400.
		if n, err := io.Copy(io.Discard, r.Body); err != nil || r.ContentLength >= 0 && n != r.ContentLength {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		hd := w.Header()
		if n, ok := bulkBodyLen(r.URL.Path); ok {
			// A large body (inspect_bulk), never cacheable.
			hd["Content-Type"] = []string{"application/octet-stream"}
			hd["Cache-Control"] = []string{"no-store"}
			hd["Content-Length"] = []string{strconv.FormatInt(n, 10)}
			for n > 0 {
				k := min(n, int64(len(o.zero)))
				if _, err := w.Write(o.zero[:k]); err != nil {
					return
				}
				n -= k
			}
			return
		}
		if body, ok := cacheBody(r.URL.Path); ok {
			// Cacheable for an hour by any shared cache (cache scenarios).
			hd["Content-Type"] = []string{"application/octet-stream"}
			hd["Cache-Control"] = []string{"public, max-age=3600"}
			hd["Content-Length"] = []string{strconv.Itoa(len(body))}
			_, _ = w.Write(body)
			return
		}
		hd["Content-Type"] = []string{"text/plain"}
		hd["Content-Length"] = []string{strconv.Itoa(len(originBody))}
		_, _ = w.Write(originBody)
	})
	newServer := func() *http.Server {
		return &http.Server{
			Handler:           h,
			ReadHeaderTimeout: cfg.handshake,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          log.New(io.Discard, "", 0),
			// HTTP/1.1 only: the benchmark measures proxies, not h2 framing.
			TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		}
	}
	o.httpSrv = newServer()
	o.tlsSrv = newServer()
	tlsCfg, pool, err := newTestPKI(cfg.Name, cfg.IP, cfg.pki)
	if err != nil {
		return nil, err
	}
	o.CAPool = pool
	o.wg.Add(2)
	go func() { defer o.wg.Done(); _ = o.httpSrv.Serve(o.httpL) }()
	go func() { defer o.wg.Done(); _ = o.tlsSrv.Serve(tls.NewListener(o.tlsL, tlsCfg)) }()

	if err := o.startDNS(); err != nil {
		return nil, err
	}
	return o, nil
}

// Addr returns the listening address of the named origin: bulk, echo, http
// or tls.
func (o *origins) Addr(which string) netip.AddrPort {
	var l net.Listener
	switch which {
	case "bulk":
		l = o.bulk
	case "echo":
		l = o.echo
	case "http":
		l = o.httpL
	case "tls":
		l = o.tlsL
	default:
		panic("unknown origin " + which)
	}
	return l.Addr().(*net.TCPAddr).AddrPort()
}

// DNSAddr returns the address the DNS server listens on (UDP and TCP).
func (o *origins) DNSAddr() string { return o.dns.Addr() }

// DNSQueries returns how many questions the DNS server has answered.
func (o *origins) DNSQueries() int64 { return int64(o.dns.TotalQueries()) }

// serveRaw runs an accept loop for a raw TCP origin.
func (o *origins) serveRaw(l net.Listener, serve func(net.Conn)) {
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				return
			}
			if !o.conns.add(c) {
				c.Close()
				return
			}
			o.wg.Add(1)
			go func() {
				defer o.wg.Done()
				defer o.conns.remove(c)
				serve(c)
			}()
		}
	}()
}

// serveBulk implements the origin side of the bulk protocol.
func (o *origins) serveBulk(c net.Conn) {
	var hdr [bulkHeaderLen]byte
	_ = c.SetReadDeadline(time.Now().Add(o.cfg.handshake))
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	n := int64(binary.BigEndian.Uint64(hdr[8:]))
	switch hdr[0] {
	case bulkUpload:
		bp := o.bufPool.Get().(*[]byte)
		_, err := discard(c, n, *bp)
		o.bufPool.Put(bp)
		if err != nil {
			return
		}
		_, _ = c.Write([]byte{bulkAck})
	case bulkDownload:
		if _, err := o.src.send(c, n, o.zero); err != nil {
			return
		}
	default:
		return
	}
	// Wait for the client to close, so the origin never closes first.
	var one [64]byte
	_ = c.SetReadDeadline(time.Now().Add(o.cfg.handshake))
	for {
		if _, err := c.Read(one[:]); err != nil {
			return
		}
	}
}

// serveEcho writes back whatever it reads, until the peer closes. Idle
// tunnels use it: one byte each way proves the tunnel is up end to end.
func (o *origins) serveEcho(c net.Conn) {
	var buf [64]byte
	for {
		n, err := c.Read(buf[:])
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// startDNS starts the DNS server (testnet's, which the end-to-end tests
// use too) on UDP and on TCP at the same address: every name under
// bench.test answers the origins' address (A for an IPv4 origin, AAAA for
// an IPv6 one, an empty answer for the other family), anything else
// NXDOMAIN.
func (o *origins) startDNS() error {
	addr := o.cfg.DNSAddr
	if addr == "" {
		addr = net.JoinHostPort(o.cfg.IP.String(), "0")
	}
	if err := loopbackOnly(addr); err != nil {
		return err
	}
	s, err := testnet.ListenDNS(addr, net.ListenPacket, net.Listen)
	if err != nil {
		return fmt.Errorf("dns server: %w", err)
	}
	s.SetDomain(benchDomain, o.cfg.dnsTTL, o.cfg.IP)
	o.dns = s
	return nil
}

// Close stops every origin, ends their connections, and waits for all their
// goroutines.
func (o *origins) Close() {
	o.conns.closeAll()
	for _, l := range []net.Listener{o.bulk, o.echo} {
		if l != nil {
			l.Close()
		}
	}
	for _, s := range []*http.Server{o.httpSrv, o.tlsSrv} {
		if s != nil {
			s.Close()
		}
	}
	// A listener that never reached Serve is not closed by Server.Close.
	for _, l := range []net.Listener{o.httpL, o.tlsL} {
		if l != nil {
			l.Close()
		}
	}
	if o.dns != nil {
		_ = o.dns.Close()
	}
	o.wg.Wait()
	if o.src != nil {
		o.src.Close()
	}
}

// newTestPKI creates a CA (testnet's, which the end-to-end tests use too)
// and a leaf certificate for name, every name under bench.test and ip. It
// returns the server's TLS config and a pool that trusts the CA.
func newTestPKI(name string, ip netip.Addr, pki *benchPKI) (*tls.Config, *x509.CertPool, error) {
	var ca *testnet.CA
	if pki != nil {
		// The origin CA every run shares (-pki), which proxies trust.
		ca = pki.origin
	} else {
		var err error
		if ca, err = testnet.NewCA("egressbench test CA"); err != nil {
			return nil, nil, err
		}
	}
	leaf, err := ca.Issue(name, "*."+strings.TrimSuffix(benchDomain, "."), ip.String())
	if err != nil {
		return nil, nil, err
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{leaf}, MinVersion: tls.VersionTLS12}
	return cfg, ca.CertPool(), nil
}

// loopbackOnly refuses any address that is not a loopback IP literal: the
// benchmark never listens on or dials anything else.
func loopbackOnly(hostport string) error {
	ap, err := netip.ParseAddrPort(hostport)
	if err != nil {
		return fmt.Errorf("%q: want a loopback ip:port: %w", hostport, err)
	}
	if !ap.Addr().IsLoopback() {
		return fmt.Errorf("%q: not a loopback address", hostport)
	}
	return nil
}
