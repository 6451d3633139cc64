package icap

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Config configures a Client. URL and Timeout are required.
type Config struct {
	// URL is the REQMOD service: icap://host[:port]/path (port 1344 when
	// omitted).
	URL *url.URL
	// Timeout bounds one transaction: waiting for a pooled connection,
	// dialing, the OPTIONS it may need, writing the request and reading
	// the answer.
	Timeout time.Duration
	// MaxBody bounds an encapsulated body the service sends back (a
	// modified request's or a block page's). Zero: 1 MiB.
	MaxBody int64
	// MaxConnections bounds the pool while the service names no
	// Max-Connections in its OPTIONS. Zero: 64.
	MaxConnections int
	// IdleTimeout closes pooled connections unused this long. Zero: 30s.
	IdleTimeout time.Duration
	// Dial opens connections. Nil: a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Now is the clock for Options-TTL. Nil: time.Now.
	Now func() time.Time
}

// Request is the HTTP request the service is asked about.
type Request struct {
	Method string
	URL    *url.URL    // absolute (scheme and host set)
	Header http.Header // as it would be sent; Host, Content-Length and Transfer-Encoding are set by the client
	Body   []byte
	// Partial: Body is only the first part of the request's body (the
	// rest was not held). The service is told no length.
	Partial bool
	// ClientIP goes in X-Client-IP, User (base64) in X-Authenticated-User,
	// as Squid sends them; "" leaves them out.
	ClientIP string
	User     string
}

// Result is the service's answer. Both Request and Response nil: forward
// the request unmodified (204, or a 200 that returned it unchanged is the
// caller's to compare).
type Result struct {
	// Request is the modified request head (its Body unset: see Body).
	Request *http.Request
	// Response is the answer to give the client instead of forwarding (a
	// block page); its Body reads Body.
	Response *http.Response
	// Body is the encapsulated body of Request or Response.
	Body []byte
	// SameBody: the modified request's body is the request's own (Body
	// is then the Request's Body, not a copy).
	SameBody bool
	// Status is the ICAP status: 204 or 200.
	Status int
}

// ErrClosed is returned by a Client after Close.
var ErrClosed = errors.New("icap: client closed")

// Client is an ICAP REQMOD client with a pool of persistent connections.
// It is safe for concurrent use.
type Client struct {
	cfg    Config
	addr   string // host:port
	target string // the request-line URI
	host   string // the Host header
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	opts   *Options
	stale  bool          // a response carried another ISTag
	fetch  *optFetch     // the OPTIONS transaction running, if any
	idle   []*conn       // most recently used last
	open   int           // connections open, idle or busy (and dials under way)
	freed  chan struct{} // closed and replaced when a connection is released
	closed bool
	dialer net.Dialer
}

type optFetch struct {
	done chan struct{}
	opts *Options
	err  error
}

type conn struct {
	nc       net.Conn
	br       *bufio.Reader
	bw       *bufio.Writer
	idleFrom time.Time
}

// New returns a client of the service cfg.URL. It opens no connection
// until Start or the first request.
func New(cfg Config) (*Client, error) {
	u := cfg.URL
	if u == nil || u.Scheme != "icap" || u.Hostname() == "" {
		return nil, errors.New("icap: want a URL icap://host[:port]/service")
	}
	if cfg.Timeout <= 0 {
		return nil, errors.New("icap: timeout must be positive")
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 1 << 20
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = 64
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	port := u.Port()
	if port == "" {
		port = "1344"
	}
	c := &Client{cfg: cfg, addr: net.JoinHostPort(u.Hostname(), port), freed: make(chan struct{})}
	c.host = u.Host
	t := *u
	t.Host = c.addr
	c.target = t.String()
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if c.cfg.Dial == nil {
		c.cfg.Dial = c.dialer.DialContext
	}
	return c, nil
}

// Start fetches the service's OPTIONS in the background, so the first
// request finds them (a failure is retried by that request). Close waits
// for it.
func (c *Client) Start() {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ctx, cancel := context.WithTimeout(c.ctx, c.cfg.Timeout)
		defer cancel()
		c.Options(ctx)
	}()
}

// Close closes the idle connections and makes connections in use close
// when their transaction ends. Requests after Close fail with ErrClosed.
func (c *Client) Close() {
	c.cancel()
	c.mu.Lock()
	c.closed = true
	idle := c.idle
	c.idle = nil
	c.open -= len(idle)
	c.signalLocked()
	c.mu.Unlock()
	for _, cn := range idle {
		cn.nc.Close()
	}
	c.wg.Wait()
}

// Options returns the service's options, asking it when there are none,
// when they expired (Options-TTL) or when a response carried another
// ISTag. Concurrent callers share one OPTIONS transaction.
func (c *Client) Options(ctx context.Context) (*Options, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	if o := c.opts; o != nil && !c.stale && o.fresh(c.cfg.Now()) {
		c.mu.Unlock()
		return o, nil
	}
	f := c.fetch
	if f == nil {
		f = &optFetch{done: make(chan struct{})}
		c.fetch = f
		c.mu.Unlock()
		// The fetch serves every waiter: it runs under the client's
		// lifetime and timeout, not under the caller's context.
		fctx, cancel := context.WithTimeout(c.ctx, c.cfg.Timeout)
		f.opts, f.err = c.fetchOptions(fctx)
		cancel()
		c.mu.Lock()
		if f.err == nil {
			c.opts, c.stale = f.opts, false
		}
		c.fetch = nil
		close(f.done)
		c.mu.Unlock()
		return f.opts, f.err
	}
	c.mu.Unlock()
	select {
	case <-f.done:
		return f.opts, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *Client) fetchOptions(ctx context.Context) (*Options, error) {
	var o *Options
	err := c.transact(ctx, func(cn *conn) (bool, error) {
		fmt.Fprintf(cn.bw, "OPTIONS %s ICAP/1.0\r\nHost: %s\r\nAllow: 204\r\nEncapsulated: null-body=0\r\n\r\n", c.target, c.host)
		if err := cn.bw.Flush(); err != nil {
			return false, err
		}
		r, err := readResponse(cn.br, 64<<10, nil)
		if err != nil {
			return false, err
		}
		if o, err = parseOptions(r, c.cfg.Now()); err != nil {
			return false, err
		}
		return keepAlive(r), nil
	})
	if err != nil {
		return nil, fmt.Errorf("icap OPTIONS: %w", err)
	}
	if !o.supports("REQMOD") {
		return nil, fmt.Errorf("icap OPTIONS: the service does not list REQMOD in Methods")
	}
	return o, nil
}

// ReqMod asks the service about r (RFC 3507 section 4.8).
func (c *Client) ReqMod(ctx context.Context, r *Request) (*Result, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	opts, err := c.Options(ctx)
	if err != nil {
		return nil, err
	}
	head := c.httpHead(r)
	var res *Result
	err = c.transact(ctx, func(cn *conn) (bool, error) {
		out, keep, err := c.reqmod(cn, opts, r, head)
		res = out
		return keep, err
	})
	if err != nil {
		return nil, fmt.Errorf("icap REQMOD: %w", err)
	}
	return res, nil
}

// reqmod runs one REQMOD exchange on cn. keep reports whether cn can
// serve another transaction.
func (c *Client) reqmod(cn *conn, opts *Options, r *Request, head []byte) (*Result, bool, error) {
	bw := cn.bw
	hasBody := len(r.Body) > 0 || r.Partial
	preview := -1
	if hasBody && opts.Preview >= 0 {
		preview = min(opts.Preview, len(r.Body))
	}
	fmt.Fprintf(bw, "REQMOD %s ICAP/1.0\r\nHost: %s\r\nAllow: 204\r\n", c.target, c.host)
	if preview >= 0 {
		fmt.Fprintf(bw, "Preview: %d\r\n", preview)
	}
	if r.ClientIP != "" {
		fmt.Fprintf(bw, "X-Client-IP: %s\r\n", r.ClientIP)
	}
	if r.User != "" {
		fmt.Fprintf(bw, "X-Authenticated-User: %s\r\n", base64.StdEncoding.EncodeToString([]byte(r.User)))
	}
	if hasBody {
		fmt.Fprintf(bw, "Encapsulated: req-hdr=0, req-body=%d\r\n\r\n", len(head))
	} else {
		fmt.Fprintf(bw, "Encapsulated: req-hdr=0, null-body=%d\r\n\r\n", len(head))
	}
	bw.Write(head)
	if !hasBody {
		return c.finish(cn, r)
	}
	rest := r.Body
	if preview >= 0 {
		writeChunk(bw, r.Body[:preview])
		rest = r.Body[preview:]
		ieof := len(rest) == 0 && !r.Partial
		if ieof {
			bw.WriteString("0; ieof\r\n\r\n")
		} else {
			bw.WriteString("0\r\n\r\n")
		}
		if err := bw.Flush(); err != nil {
			return nil, false, err
		}
		resp, err := readResponse(cn.br, c.cfg.MaxBody, r.Body)
		if err != nil {
			return nil, false, err
		}
		if resp.status != StatusContinue {
			// The service decided on the preview.
			return c.result(resp, r)
		}
		if ieof {
			return nil, false, protoErr("100 Continue after the whole body")
		}
	}
	writeChunk(bw, rest)
	bw.WriteString("0\r\n\r\n")
	return c.finish(cn, r)
}

// finish flushes what is buffered and reads the final answer.
func (c *Client) finish(cn *conn, r *Request) (*Result, bool, error) {
	if err := cn.bw.Flush(); err != nil {
		return nil, false, err
	}
	resp, err := readResponse(cn.br, c.cfg.MaxBody, r.Body)
	if err != nil {
		return nil, false, err
	}
	if resp.status == StatusContinue {
		return nil, false, protoErr("100 Continue without a preview")
	}
	return c.result(resp, r)
}

// result interprets a final REQMOD answer to r.
func (c *Client) result(resp *response, r *Request) (*Result, bool, error) {
	c.noteISTag(resp.header.Get("Istag"))
	res, err := interpret(resp)
	if err != nil {
		return nil, false, err
	}
	if res.SameBody {
		res.Body = r.Body
	}
	return res, keepAlive(resp), nil
}

// interpret turns a final REQMOD response into a Result.
func interpret(resp *response) (*Result, error) {
	res := &Result{Status: resp.status}
	switch resp.status {
	case StatusNoContent:
		return res, nil
	case StatusOK:
	default:
		return nil, fmt.Errorf("icap: the service answered %d", resp.status)
	}
	res.Body = resp.body
	res.SameBody = resp.sameBody
	switch {
	case resp.resHdr != nil:
		hr, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(resp.resHdr)), nil)
		if err != nil {
			return nil, protoErr("bad encapsulated response header")
		}
		if hr.StatusCode < 100 || hr.StatusCode > 999 {
			return nil, protoErr("bad encapsulated status")
		}
		hr.Body = io.NopCloser(bytes.NewReader(res.Body))
		hr.ContentLength = int64(len(res.Body))
		hr.TransferEncoding = nil
		hr.Header.Del("Content-Length")
		hr.Header.Del("Transfer-Encoding")
		res.Response = hr
	case resp.reqHdr != nil:
		hr, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(resp.reqHdr)))
		if err != nil {
			return nil, protoErr("bad encapsulated request header")
		}
		hr.Body = nil
		hr.ContentLength = int64(len(res.Body))
		hr.TransferEncoding = nil
		hr.Header.Del("Content-Length")
		hr.Header.Del("Transfer-Encoding")
		res.Request = hr
	default:
		return nil, protoErr("200 without an encapsulated message")
	}
	return res, nil
}

// keepAlive reports whether the service keeps the connection open.
func keepAlive(r *response) bool {
	for _, v := range r.header.Values("Connection") {
		if bytes.EqualFold(bytes.TrimSpace([]byte(v)), []byte("close")) {
			return false
		}
	}
	return true
}

func (c *Client) noteISTag(tag string) {
	if tag == "" {
		return
	}
	c.mu.Lock()
	if c.opts != nil && c.opts.ISTag != tag {
		c.stale = true
	}
	c.mu.Unlock()
}

// httpHead renders the encapsulated HTTP request header section.
func (c *Client) httpHead(r *Request) []byte {
	var b bytes.Buffer
	b.WriteString(r.Method)
	b.WriteByte(' ')
	b.WriteString(r.URL.String())
	b.WriteString(" HTTP/1.1\r\nHost: ")
	b.WriteString(r.URL.Host)
	b.WriteString("\r\n")
	r.Header.WriteSubset(&b, headExclude)
	if !r.Partial && len(r.Body) > 0 {
		b.WriteString("Content-Length: ")
		b.WriteString(strconv.Itoa(len(r.Body)))
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

var headExclude = map[string]bool{"Host": true, "Content-Length": true, "Transfer-Encoding": true}

func writeChunk(bw *bufio.Writer, p []byte) {
	if len(p) == 0 {
		return
	}
	bw.WriteString(strconv.FormatInt(int64(len(p)), 16))
	bw.WriteString("\r\n")
	bw.Write(p)
	bw.WriteString("\r\n")
}

// transact runs fn on a pooled connection, within ctx's deadline. A
// reused connection the service closed while it was idle fails before any
// answer: fn is retried once on a new connection.
func (c *Client) transact(ctx context.Context, fn func(*conn) (keep bool, err error)) error {
	for attempt := 0; ; attempt++ {
		cn, reused, err := c.get(ctx, attempt > 0)
		if err != nil {
			return err
		}
		deadline, ok := ctx.Deadline()
		if !ok {
			deadline = time.Now().Add(c.cfg.Timeout)
		}
		cn.nc.SetDeadline(deadline)
		// Cancelling ctx (the client request gone, Close) unblocks fn.
		stop := context.AfterFunc(ctx, func() { cn.nc.SetDeadline(time.Unix(1, 0)) })
		keep, err := fn(cn)
		stopped := stop()
		if err == nil && keep && stopped {
			cn.nc.SetDeadline(time.Time{})
			c.put(cn)
			return nil
		}
		c.discard(cn)
		if err == nil {
			return nil
		}
		if reused && attempt == 0 && idleClosed(err) && ctx.Err() == nil {
			continue
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
			// The connection's deadline is the transaction's: it can
			// fire a moment before the context's timer.
			return fmt.Errorf("%w (%w)", context.DeadlineExceeded, err)
		}
		return err
	}
}

// idleClosed reports whether err is what a write to or read from a
// connection the peer closed while it sat idle returns, before any answer.
func idleClosed(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isConnReset(err)
}

// get returns an idle connection (reused true) or dials a new one, waiting
// while the pool is at its limit. fresh skips idle connections.
func (c *Client) get(ctx context.Context, fresh bool) (*conn, bool, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, false, ErrClosed
		}
		now := c.cfg.Now()
		for !fresh && len(c.idle) > 0 {
			cn := c.idle[len(c.idle)-1]
			c.idle = c.idle[:len(c.idle)-1]
			if now.Sub(cn.idleFrom) > c.cfg.IdleTimeout {
				c.open--
				c.mu.Unlock()
				cn.nc.Close()
				c.mu.Lock()
				continue
			}
			c.mu.Unlock()
			return cn, true, nil
		}
		if fresh && len(c.idle) > 0 && c.open >= c.limitLocked() {
			// Make room for the new connection.
			old := c.idle[0]
			c.idle = c.idle[1:]
			c.open--
			c.mu.Unlock()
			old.nc.Close()
			c.mu.Lock()
		}
		if c.open < c.limitLocked() {
			c.open++
			c.mu.Unlock()
			nc, err := c.cfg.Dial(ctx, "tcp", c.addr)
			if err != nil {
				c.release()
				return nil, false, fmt.Errorf("dial %s: %w", c.addr, err)
			}
			return c.newConn(nc), false, nil
		}
		ch := c.freed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, false, fmt.Errorf("waiting for a connection (%d in use): %w", c.limit(), ctx.Err())
		}
	}
}

func (c *Client) newConn(nc net.Conn) *conn {
	cn := &conn{nc: nc}
	cn.br = bufio.NewReaderSize(nc, 16<<10)
	cn.bw = bufio.NewWriterSize(nc, 32<<10)
	return cn
}

// limitLocked is the pool's bound: the service's Max-Connections, else
// the configured default.
func (c *Client) limitLocked() int {
	if c.opts != nil && c.opts.MaxConnections > 0 {
		return c.opts.MaxConnections
	}
	return c.cfg.MaxConnections
}

func (c *Client) limit() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.limitLocked()
}

// put returns a healthy connection to the pool.
func (c *Client) put(cn *conn) {
	c.mu.Lock()
	if c.closed || c.open > c.limitLocked() {
		c.open--
		c.signalLocked()
		c.mu.Unlock()
		cn.nc.Close()
		return
	}
	cn.idleFrom = c.cfg.Now()
	c.idle = append(c.idle, cn)
	c.signalLocked()
	c.mu.Unlock()
}

// discard closes a connection in an unknown state.
func (c *Client) discard(cn *conn) {
	cn.nc.Close()
	c.release()
}

func (c *Client) release() {
	c.mu.Lock()
	c.open--
	c.signalLocked()
	c.mu.Unlock()
}

func (c *Client) signalLocked() {
	close(c.freed)
	c.freed = make(chan struct{})
}

// Stats is a snapshot of the pool, for tests and metrics.
type Stats struct {
	Open, Idle int
}

// Stats returns the pool's state.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{Open: c.open, Idle: len(c.idle)}
}

func isConnReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
