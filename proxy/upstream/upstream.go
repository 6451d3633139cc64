package upstream

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/egressd/egressd/proxy/rawio"
)

// Results of egressd_upstream_proxy_requests_total, by the label result.
const (
	ResultOK          = "ok"          // a tunnel, or a connection for forwarded requests, through the parent
	ResultDown        = "down"        // one URL did not accept the connection; the next is tried
	ResultUnavailable = "unavailable" // no URL accepted it
	ResultRefused     = "refused"     // the parent answered with a status that is no success
	ResultError       = "error"       // the parent accepted, then gave no usable answer (closed, timeout, not HTTP)
)

// Results lists every result label value.
var Results = []string{ResultOK, ResultDown, ResultUnavailable, ResultRefused, ResultError}

// DefaultConnectTimeout bounds the TCP connect to one URL when a Parent
// sets none.
const DefaultConnectTimeout = 5 * time.Second

// DefaultReplyTimeout bounds the wait for a parent's answer to CONNECT
// when the caller gives none.
const DefaultReplyTimeout = 10 * time.Second

// Parent is one parent proxy as configured (upstream_proxies.NAME).
type Parent struct {
	Name  string
	Addrs []string // host:port of each URL, tried in order; host an IP or a name
	// Username and Password are sent as Basic credentials in
	// Proxy-Authorization; none when Username is empty.
	Username, Password string
	ConnectTimeout     time.Duration // per URL; zero: DefaultConnectTimeout
}

// parent is a Parent ready for use: what it sends that does not depend on
// the destination is built once per config.
type parent struct {
	name    string
	urls    []parentURL
	auth    string // "Basic ...", "" without credentials
	tail    string // the end of each CONNECT: the credentials' header, if any, and the empty line
	timeout time.Duration
}

// parentURL is one URL's address, parsed once: an IP (addr valid) or a
// name to resolve on each connect.
type parentURL struct {
	hostport string
	host     string
	addr     netip.AddrPort // valid when the host is an IP
	port     uint16
	err      error      // the address does not parse (Parent.Addrs not checked by the caller)
	health   *urlHealth // shared by the copies of this URL in one Set
}

// A URL that did not accept a connection is tried after the parent's
// others for downFirst, doubling with each failure in a row up to
// downMax: a blackholed first URL would otherwise cost every connection
// its connect_timeout before the next URL is tried.
const (
	downFirst = 10 * time.Second
	downMax   = 2 * time.Minute
)

// urlHealth is what the last connects to one URL said.
type urlHealth struct {
	downUntil atomic.Int64 // unix nanoseconds; 0 or past: up
	failures  atomic.Int32 // in a row
}

func (h *urlHealth) down(now time.Time) bool { return h.downUntil.Load() > now.UnixNano() }

// failed marks the URL down after a connect that failed; wasDown: it was
// marked down when that connect began. Connections that failed together
// while it was up count once, so a burst does not jump to downMax.
func (h *urlHealth) failed(now time.Time, wasDown bool) {
	if !wasDown && h.down(now) {
		return // another connection marked it meanwhile
	}
	n := h.failures.Add(1)
	d := downMax
	if n <= 4 { // 10s, 20s, 40s, 80s, then downMax
		d = downFirst << (n - 1)
	}
	h.downUntil.Store(now.Add(d).UnixNano())
}

func (h *urlHealth) connected() {
	if h.failures.Load() != 0 || h.downUntil.Load() != 0 {
		h.failures.Store(0)
		h.downUntil.Store(0)
	}
}

func parseParentURL(hostport string) parentURL {
	u := parentURL{hostport: hostport, health: &urlHealth{}}
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		u.err = err
		return u
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		u.err = fmt.Errorf("%s: bad port", hostport)
		return u
	}
	u.host, u.port = host, uint16(port)
	if a, err := netip.ParseAddr(host); err == nil {
		u.addr = netip.AddrPortFrom(a.Unmap(), u.port)
	}
	return u
}

// Set is the parents of one config generation, by name. Build it once per
// config with NewSet; it is immutable.
type Set struct {
	byName map[string]*parent
}

// NewSet builds the set of parents ps.
func NewSet(ps []Parent) *Set {
	s := &Set{byName: make(map[string]*parent, len(ps))}
	for _, p := range ps {
		cp := &parent{name: p.Name, timeout: p.ConnectTimeout}
		for _, a := range p.Addrs {
			cp.urls = append(cp.urls, parseParentURL(a))
		}
		if cp.timeout <= 0 {
			cp.timeout = DefaultConnectTimeout
		}
		cp.tail = "\r\n\r\n"
		if p.Username != "" {
			cp.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(p.Username+":"+p.Password))
			cp.tail = "\r\nProxy-Authorization: " + cp.auth + "\r\n\r\n"
		}
		s.byName[p.Name] = cp
	}
	return s
}

// Names returns the parents' names.
func (s *Set) Names() []string {
	out := make([]string, 0, len(s.byName))
	for n := range s.byName {
		out = append(out, n)
	}
	return out
}

// Resolver looks up the addresses of a parent given by name.
// cache.Resolver satisfies it.
type Resolver interface {
	LookupNetIP(ctx context.Context, host string) ([]netip.Addr, error)
}

// Dialer connects through the parents of the current Set. The zero value,
// and a nil *Dialer, have no parents: every call fails with an *Error.
type Dialer struct {
	// Resolver resolves parents given by name. Nil: only parents given by
	// IP address can be reached.
	Resolver Resolver
	// Observe, when set, counts each outcome (see the Result constants)
	// by the parent's name.
	Observe func(proxy, result string)
	// now is the clock of the URLs' health (tests set it); nil: time.Now.
	now func() time.Time

	set atomic.Pointer[Set]
}

// Store makes s the parents of calls from now on (a config reload).
// Calls under way keep the parent they started with.
func (d *Dialer) Store(s *Set) { d.set.Store(s) }

// Error is a failure to reach a destination through a parent. Its text
// names the parent and what happened; never credentials.
type Error struct {
	Proxy  string         // the parent's name
	Addr   netip.AddrPort // the parent address that answered; zero when none did
	Status int            // the parent's HTTP status, when it refused; 0 otherwise
	Result string         // the outcome counted (ResultUnavailable, ResultRefused, ResultError)
	Err    error          // the cause
}

func (e *Error) Error() string {
	switch {
	case e.Status != 0:
		return fmt.Sprintf("upstream proxy %s (%s) refused: %v", e.Proxy, e.Addr, e.Err)
	case e.Addr.IsValid():
		return fmt.Sprintf("upstream proxy %s (%s): %v", e.Proxy, e.Addr, e.Err)
	}
	return fmt.Sprintf("upstream proxy %s: %v", e.Proxy, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Parent returns the parent address that answered and its status, for the
// access log (accesslog.Record.DialFailed).
func (e *Error) Parent() (netip.AddrPort, int) { return e.Addr, e.Status }

var (
	errNoParent = errors.New("no such parent in upstream_proxies")
	errNoURL    = errors.New("no URL accepted the connection")
)

func (d *Dialer) lookup(name string) (*parent, error) {
	if d == nil {
		return nil, &Error{Proxy: name, Result: ResultUnavailable, Err: errNoParent}
	}
	if s := d.set.Load(); s != nil {
		if p := s.byName[name]; p != nil {
			return p, nil
		}
	}
	d.observe(name, ResultUnavailable)
	return nil, &Error{Proxy: name, Result: ResultUnavailable, Err: errNoParent}
}

func (d *Dialer) observe(name, result string) {
	if d.Observe != nil {
		d.Observe(name, result)
	}
}

// Connect opens a tunnel to host:port through the parent named via: it
// connects to the parent's first URL that accepts (each within its
// connect_timeout; every one that does not is counted down), sends
// CONNECT host:port with the credentials, and waits up to replyTimeout
// (zero: DefaultReplyTimeout) for a success status. It returns the parent
// connection (the tunnel), early, and the parent address it reached. The
// answer is read with plain reads, so what the parent sent in the same
// segment after its answer head (a server-first destination's banner) may
// have been read with it: early holds those bytes (usually none), the
// tunnel's first bytes from the destination, which the caller must hand
// to its client before anything read from the connection. host goes to
// the parent as given: by name, for the parent to resolve and judge.
func (d *Dialer) Connect(ctx context.Context, via, host string, port uint16, replyTimeout time.Duration) (_ *net.TCPConn, early []byte, _ netip.AddrPort, _ error) {
	p, err := d.lookup(via)
	if err != nil {
		return nil, nil, netip.AddrPort{}, err
	}
	c, addr, err := d.dial(ctx, p)
	if err != nil {
		return nil, nil, netip.AddrPort{}, err
	}
	if replyTimeout <= 0 {
		replyTimeout = DefaultReplyTimeout
	}
	deadline := time.Now().Add(replyTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	early, status, err := connect(c, p, host, port, deadline)
	if err != nil {
		c.Close()
		e := &Error{Proxy: p.name, Addr: addr, Status: status, Result: ResultError, Err: err}
		if status != 0 {
			e.Result = ResultRefused
		}
		d.observe(p.name, e.Result)
		return nil, nil, netip.AddrPort{}, e
	}
	d.observe(p.name, ResultOK)
	return c, early, addr, nil
}

// Dial connects to the parent named via (its first URL that accepts) for
// forwarded requests, which go to it in absolute form with the
// Proxy-Authorization value Auth gives. It returns the connection and the
// address reached.
func (d *Dialer) Dial(ctx context.Context, via string) (*net.TCPConn, netip.AddrPort, error) {
	p, err := d.lookup(via)
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	c, addr, err := d.dial(ctx, p)
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	d.observe(p.name, ResultOK)
	return c, addr, nil
}

// Auth returns the Proxy-Authorization value of parent via: "Basic ..."
// with its credentials, "" without (or with no such parent).
func (d *Dialer) Auth(via string) string {
	if d == nil {
		return ""
	}
	if s := d.set.Load(); s != nil {
		if p := s.byName[via]; p != nil {
			return p.auth
		}
	}
	return ""
}

// Refused counts a parent's refusal of a forwarded request (its 407: the
// credentials egressd sent are wrong) and returns it as an *Error.
func (d *Dialer) Refused(via string, addr netip.AddrPort, status int) error {
	d.observe(via, ResultRefused)
	return &Error{Proxy: via, Addr: addr, Status: status, Result: ResultRefused, Err: fmt.Errorf("status %d", status)}
}

func (d *Dialer) clock() time.Time {
	if d.now != nil {
		return d.now()
	}
	return time.Now()
}

// dial connects to p's URLs in order and returns the first connection;
// the URLs that failed recently (urlHealth) come after the others, in
// order, so that all of them are still tried before giving up.
func (d *Dialer) dial(ctx context.Context, p *parent) (*net.TCPConn, netip.AddrPort, error) {
	var errs []string
	// Which URLs were down when this call began: each is tried once.
	var wasDown uint64
	now := d.clock()
	for i, u := range p.urls {
		if i < 64 && u.health.down(now) {
			wasDown |= 1 << i
		}
	}
tries:
	for _, recentlyDown := range [2]bool{false, true} {
		for i, u := range p.urls {
			if (i < 64 && wasDown&(1<<i) != 0) != recentlyDown {
				continue
			}
			c, addr, err := d.dialURL(ctx, p, u)
			if err == nil {
				u.health.connected()
				return c, addr, nil
			}
			if ctx.Err() == nil { // else the caller gave up: not the URL's failure
				u.health.failed(d.clock(), recentlyDown)
			}
			d.observe(p.name, ResultDown)
			errs = append(errs, err.Error())
			if ctx.Err() != nil {
				break tries
			}
		}
	}
	d.observe(p.name, ResultUnavailable)
	return nil, netip.AddrPort{}, &Error{Proxy: p.name, Result: ResultUnavailable,
		Err: fmt.Errorf("%w: %s", errNoURL, strings.Join(errs, "; "))}
}

// dialURL connects to one URL's host:port: an IP as it is, a name through
// the Resolver, its addresses in order. The whole URL gets the parent's
// connect timeout. Parent addresses are configuration, not client input:
// they are not checked against the deny ranges (a corporate proxy is
// usually on a private address).
func (d *Dialer) dialURL(ctx context.Context, p *parent, u parentURL) (*net.TCPConn, netip.AddrPort, error) {
	if u.err != nil {
		return nil, netip.AddrPort{}, u.err
	}
	if u.addr.IsValid() {
		// The common case: no deadline context of our own, the dialer's
		// Timeout bounds the connect.
		return dialOne(ctx, u.addr, p.timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	var addrs []netip.Addr
	var err error
	if d.Resolver == nil {
		return nil, netip.AddrPort{}, fmt.Errorf("resolve %s: no resolver", u.host)
	} else if addrs, err = d.Resolver.LookupNetIP(ctx, u.host); err != nil {
		return nil, netip.AddrPort{}, fmt.Errorf("resolve %s: %w", u.host, err)
	} else if len(addrs) == 0 {
		return nil, netip.AddrPort{}, fmt.Errorf("resolve %s: no addresses", u.host)
	}
	var errs []string
	for _, a := range addrs {
		c, target, err := dialOne(ctx, netip.AddrPortFrom(a.Unmap(), u.port), 0)
		if err == nil {
			return c, target, nil
		}
		errs = append(errs, err.Error())
		if ctx.Err() != nil {
			break
		}
	}
	return nil, netip.AddrPort{}, errors.New(strings.Join(errs, "; "))
}

// dialOne connects to target, within timeout when it is not zero.
func dialOne(ctx context.Context, target netip.AddrPort, timeout time.Duration) (*net.TCPConn, netip.AddrPort, error) {
	network := "tcp6"
	if target.Addr().Is4() {
		network = "tcp4"
	}
	nd := net.Dialer{Timeout: timeout, KeepAlive: -1, ControlContext: only(target)}
	c, err := nd.DialContext(ctx, network, target.String())
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	return c.(*net.TCPConn), target, nil
}

// only lets a socket connect to target alone.
func only(target netip.AddrPort) func(context.Context, string, string, syscall.RawConn) error {
	return func(_ context.Context, _, address string, _ syscall.RawConn) error {
		got, err := netip.ParseAddrPort(address)
		if err != nil || netip.AddrPortFrom(got.Addr().Unmap(), got.Port()) != target {
			return fmt.Errorf("%s: not the parent address being dialed", address)
		}
		return nil
	}
}

// heads lends the buffer a CONNECT is written into and its answer read
// into: 8 KiB on a goroutine's stack would make it grow.
var heads = sync.Pool{New: func() any { return new([maxHead]byte) }}

// appendAuthority appends host:port in the request-target's authority
// form (RFC 9112 section 3.2.3): an IPv6 literal in brackets.
func appendAuthority(b []byte, host string, port uint16) []byte {
	if strings.IndexByte(host, ':') >= 0 {
		b = append(b, '[')
		b = append(b, host...)
		b = append(b, ']')
	} else {
		b = append(b, host...)
	}
	b = append(b, ':')
	return strconv.AppendUint(b, uint64(port), 10)
}

// connect sends CONNECT host:port and reads the parent's answer head. It
// returns what was read past the head (a copy; nil when nothing was), or
// the parent's status when it is no success (with an error), or 0 and an
// error when there was no usable answer.
func connect(c *net.TCPConn, p *parent, host string, port uint16, deadline time.Time) ([]byte, int, error) {
	buf := heads.Get().(*[maxHead]byte)
	defer heads.Put(buf)
	req := append(buf[:0], "CONNECT "...)
	authStart := len(req)
	req = appendAuthority(req, host, port)
	authority := req[authStart:]
	req = append(req, " HTTP/1.1\r\nHost: "...)
	req = append(req, authority...)
	req = append(req, p.tail...)
	c.SetDeadline(deadline)
	defer c.SetDeadline(time.Time{})
	if _, err := rawio.Write(c, req); err != nil {
		return nil, 0, fmt.Errorf("send CONNECT: %w", err)
	}
	head, rest, err := readHead(c, buf[:])
	if err != nil {
		return nil, 0, fmt.Errorf("read the answer to CONNECT: %w", err)
	}
	status, err := ParseStatus(head)
	if err != nil {
		return nil, 0, err
	}
	if status < 200 || status > 299 {
		return nil, status, fmt.Errorf("status %d", status)
	}
	if len(rest) == 0 {
		return nil, status, nil
	}
	return bytes.Clone(rest), status, nil
}
