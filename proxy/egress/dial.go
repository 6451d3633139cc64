package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/upstream"
)

// ErrNoDecision is returned when Dial is called without a decision that
// lets traffic pass or without a pinned address: the way out of egressd
// fails closed.
var ErrNoDecision = errors.New("no allowing decision with pinned addresses")

// errNotPinned is the ControlContext refusal of a socket address that is
// not the one being tried or not in the decision.
var errNotPinned = errors.New("socket address is not pinned by the decision")

// Default dial settings.
const (
	DefaultDialTimeout = 10 * time.Second
	DefaultKeepAlive   = 30 * time.Second
)

// Dialer connects to a decision's pinned addresses. The zero value is ready
// to use.
type Dialer struct {
	// Timeout bounds each address's connection attempt. Zero:
	// DefaultDialTimeout.
	Timeout time.Duration
	// KeepAlive is the TCP keep-alive period of upstream conns. Zero:
	// DefaultKeepAlive; negative: off.
	KeepAlive time.Duration
	// Observe, when set, receives how long each Dial took (all of its
	// attempts) and its error (nil: connected), for the dial-duration
	// metric.
	Observe func(time.Duration, error)
	// Upstream carries decisions with a Via through that parent proxy
	// instead of dialing their destination. Nil: such decisions fail.
	Upstream *upstream.Dialer

	timeout atomic.Pointer[time.Duration] // from SetTimeout; overrides Timeout
}

// SetTimeout replaces Timeout for dials started from now on (a config
// reload).
func (d *Dialer) SetTimeout(t time.Duration) { d.timeout.Store(&t) }

// attemptTimeout bounds one address's attempt.
func (d *Dialer) attemptTimeout() time.Duration {
	t := d.Timeout
	if p := d.timeout.Load(); p != nil {
		t = *p
	}
	if t <= 0 {
		t = DefaultDialTimeout
	}
	return t
}

// Dial connects to the first of dec.Addrs that answers, trying them in
// order, each with its own Timeout, and returns the conn and the address
// it reached. It never resolves a name: it dials netip.AddrPorts. It
// refuses (ErrNoDecision) unless dec.Verdict passes and dec.Addrs is not
// empty. A socket-level check (net.Dialer.ControlContext) refuses any
// address that is not the one being tried and in dec.Addrs, so no code path
// can steer a connect elsewhere.
//
// When every address fails, the error wraps each attempt's error, keeping
// its syscall error and text: errors.Is(err, syscall.ECONNREFUSED) works
// and "connection refused" survives in the message.
//
// A decision with a Via is not dialed: its parent proxy is asked for a
// tunnel to dec.Host:dec.Port (upstream.Dialer.Connect, its answer awaited
// up to Timeout), and the address returned is the parent's. Its failures
// are *upstream.Error. Only such a tunnel can have early bytes: what the
// parent sent after its answer, in the same read (the destination's
// first bytes), which the caller must send to its client before anything
// it reads from the conn (tunnel.Runner.Start takes them). A direct dial
// returns none.
func (d *Dialer) Dial(ctx context.Context, dec policy.Decision) (_ *net.TCPConn, early []byte, _ netip.AddrPort, err error) {
	if !dec.Verdict.Passes() || len(dec.Addrs) == 0 && dec.Via == "" {
		return nil, nil, netip.AddrPort{}, ErrNoDecision
	}
	if d.Observe != nil {
		start := time.Now()
		defer func() { d.Observe(time.Since(start), err) }()
	}
	if dec.Via != "" {
		return d.Upstream.Connect(ctx, dec.Via, dec.Host, dec.Port, d.attemptTimeout())
	}
	timeout, keepAlive := d.attemptTimeout(), d.KeepAlive
	if keepAlive == 0 {
		keepAlive = DefaultKeepAlive
	}
	var errs dialErrors
	for _, ap := range dec.Addrs {
		target := netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if !target.IsValid() || target.Port() == 0 {
			errs = append(errs, fmt.Errorf("dial %v: invalid address", ap))
			continue
		}
		network := "tcp6"
		if target.Addr().Is4() {
			network = "tcp4"
		}
		nd := net.Dialer{
			Timeout:        timeout,
			KeepAlive:      keepAlive,
			ControlContext: pinned(target, dec.Addrs),
		}
		c, err := nd.DialContext(ctx, network, target.String())
		if err == nil {
			return c.(*net.TCPConn), nil, ap, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, nil, netip.AddrPort{}, fmt.Errorf("dial %s: %w", dec.Host, errs)
}

// DialParent connects to the parent proxy of a decision with a Via, for a
// forwarded request that goes to it in absolute form (with the header
// upstream.Dialer.Auth gives). It returns the connection and the parent
// address. It refuses (ErrNoDecision) a decision that does not pass or has
// no Via.
func (d *Dialer) DialParent(ctx context.Context, dec policy.Decision) (_ *net.TCPConn, _ netip.AddrPort, err error) {
	if !dec.Verdict.Passes() || dec.Via == "" {
		return nil, netip.AddrPort{}, ErrNoDecision
	}
	if d.Observe != nil {
		start := time.Now()
		defer func() { d.Observe(time.Since(start), err) }()
	}
	return d.Upstream.Dial(ctx, dec.Via)
}

// LocalAddrPort is the local address c was dialed from (IPv4-mapped IPv6
// unmapped): the source address the origin, flow logs and NAT logs see.
// The zero AddrPort when c has none.
func LocalAddrPort(c *net.TCPConn) netip.AddrPort {
	ta, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}
	}
	ap := ta.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// pinned returns a ControlContext hook that lets the socket connect only to
// target, and only if target is one of allowed.
func pinned(target netip.AddrPort, allowed []netip.AddrPort) func(context.Context, string, string, syscall.RawConn) error {
	return func(_ context.Context, _, address string, _ syscall.RawConn) error {
		got, err := netip.ParseAddrPort(address)
		if err == nil {
			got = netip.AddrPortFrom(got.Addr().Unmap(), got.Port())
		}
		if err != nil || got != target || !contains(allowed, got) {
			return fmt.Errorf("%s: %w", address, errNotPinned)
		}
		return nil
	}
}

func contains(addrs []netip.AddrPort, ap netip.AddrPort) bool {
	for _, a := range addrs {
		if a.Addr().Unmap() == ap.Addr() && a.Port() == ap.Port() {
			return true
		}
	}
	return false
}

// dialErrors is every failed attempt, on one line (errors.Join would use
// several), and unwraps to each of them for errors.Is and errors.As.
type dialErrors []error

func (e dialErrors) Error() string {
	s := make([]string, len(e))
	for i, err := range e {
		s[i] = err.Error()
	}
	return strings.Join(s, "; ")
}

func (e dialErrors) Unwrap() []error { return e }
