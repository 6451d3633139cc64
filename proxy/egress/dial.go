package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/egressd/egressd/policy"
)

// ErrNoDecision is returned when Dial is called without an allowing
// decision: the one way out of egressd fails closed.
var ErrNoDecision = errors.New("refusing to dial without an allowing decision")

// Dialer connects to a decision's pinned addresses.
type Dialer struct {
	// Timeout bounds each address's connection attempt. Zero: 10s.
	Timeout time.Duration
	// KeepAlive is the TCP keep-alive period of upstream conns. Zero: 30s.
	KeepAlive time.Duration
}

// Dial tries dec.Addrs in order, each with its own timeout, and returns the
// first connection and the address that answered. It never resolves a name.
// A socket-level check (ControlContext) refuses any address not in the
// decision, so no caller can steer it elsewhere. Errors keep the syscall
// error: errors.Is(err, syscall.ECONNREFUSED) works.
func (d *Dialer) Dial(ctx context.Context, dec policy.Decision) (*net.TCPConn, netip.AddrPort, error) {
	if !dec.Verdict.Passes() || len(dec.Addrs) == 0 {
		return nil, netip.AddrPort{}, ErrNoDecision
	}
	timeout, keepAlive := d.Timeout, d.KeepAlive
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	if keepAlive <= 0 {
		keepAlive = 30 * time.Second
	}
	var errs []error
	for _, ap := range dec.Addrs {
		nd := net.Dialer{
			Timeout:        timeout,
			KeepAlive:      keepAlive,
			ControlContext: pinned(ap),
		}
		c, err := nd.DialContext(ctx, "tcp", ap.String())
		if err == nil {
			return c.(*net.TCPConn), ap, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, netip.AddrPort{}, fmt.Errorf("dial %s: %w", dec.Host, errors.Join(errs...))
}

var errNotPinned = errors.New("socket address is not the pinned address")

// pinned returns a ControlContext hook that allows only connects to ap.
func pinned(ap netip.AddrPort) func(context.Context, string, string, syscall.RawConn) error {
	return func(_ context.Context, _, address string, _ syscall.RawConn) error {
		got, err := netip.ParseAddrPort(address)
		if err != nil || got.Addr().Unmap() != ap.Addr().Unmap() || got.Port() != ap.Port() {
			return fmt.Errorf("%s: %w", address, errNotPinned)
		}
		return nil
	}
}
