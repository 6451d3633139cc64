package tunnel

import (
	"errors"
	"net"
	"sync/atomic"
	"time"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accept"
	"github.com/egressd/egressd/proxy/accesslog"
	"github.com/egressd/egressd/proxy/egress"
	"github.com/egressd/egressd/proxy/sni"
)

// MaxHello bounds the bytes the guard reads for a ClientHello: a hello of
// up to 64 KiB with its record headers (crypto/tls's own limit). A longer
// one is denied tls_hello_invalid.
const MaxHello = sni.MaxPeek

// Runner holds what every tunnel shares. The zero value works (no drain
// tracking, no metrics, no timeouts).
type Runner struct {
	// Registry tracks live tunnels for drain. Nil: not tracked.
	Registry *egress.Registry
	// Metrics receives the active-tunnel gauge. Nil: none.
	Metrics *accesslog.Metrics
	// Handshake bounds the wait for the client's first bytes.
	Handshake time.Duration
	// Idle closes a tunnel that carried no byte either way for this long (0: never).
	Idle time.Duration
	// MaxTunnel closes any tunnel after this long (0: never).
	MaxTunnel time.Duration
	// Inspector terminates the tunnels of rules with inspect (Inspects,
	// Inspect). Nil: every tunnel is relayed.
	Inspector Inspector

	reloaded atomic.Pointer[timeouts] // from SetTimeouts; overrides Idle and MaxTunnel
}

type timeouts struct{ idle, maxTunnel time.Duration }

// SetTimeouts replaces Idle and MaxTunnel for tunnels started from now on
// (a config reload); tunnels already running keep theirs.
func (r *Runner) SetTimeouts(idle, maxTunnel time.Duration) {
	r.reloaded.Store(&timeouts{idle: idle, maxTunnel: maxTunnel})
}

func (r *Runner) timeouts() (idle, maxTunnel time.Duration) {
	if t := r.reloaded.Load(); t != nil {
		return t.idle, t.maxTunnel
	}
	return r.Idle, r.MaxTunnel
}

// GuardSNI is the first-bytes guard, run before any client byte goes
// upstream. On a port in policy.tls_ports it reads the client's ClientHello
// (after prefix, bytes already received) and judges its SNI against the
// decision (judge); elsewhere it passes prefix through. It returns
// everything read, to be replayed to the upstream first. ok is false when
// the tunnel must be closed; rec then carries the denial.
func (r *Runner) GuardSNI(client net.Conn, prefix []byte, dec policy.Decision, rec *accesslog.Record) (first []byte, ok bool) {
	if dec.Policy == nil || !dec.Policy.IsTLSPort(dec.Port) {
		return prefix, true
	}
	deadline := time.Time{}
	if r.Handshake > 0 {
		deadline = time.Now().Add(r.Handshake)
	}
	hello, info, err := sni.Peek(client, prefix, MaxHello, deadline)
	if !JudgeHello(dec, hello, info, err, rec) {
		return nil, false
	}
	return hello, true
}

// JudgeHello is the guard's verdict on a ClientHello already read with
// sni.Peek (hello, info and err are what it returned), against the decision
// dec for a tls_ports port: GuardSNI's second half, for a front end that
// must read the hello before it can decide (the in-line mode decides on
// the SNI). false: the tunnel must be closed; rec then carries the denial.
func JudgeHello(dec policy.Decision, hello []byte, info sni.Info, err error, rec *accesslog.Record) bool {
	verdict, reason := judge(dec, hello, info, err)
	if err == nil {
		rec.SNI, rec.ECH = info.ServerName, info.ECH
		rec.TLSVersion, rec.ALPN = info.Version, info.ALPN
	}
	switch verdict {
	case policy.Deny:
		rec.Deny(reason)
		return false
	case policy.Report:
		rec.Decision.Verdict = policy.Report
		rec.Reason = reason
	}
	return true
}

// judge turns what sni.Peek read into the guard's verdict. Only a hello
// that parsed cleanly is judged by its SNI; one that did not arrive whole in
// time, did not parse or exceeded the bound is tls_hello_invalid, whatever
// the destination and require_sni, because an upstream server might read a
// name in it that the guard did not.
func judge(dec policy.Decision, hello []byte, info sni.Info, err error) (policy.Verdict, policy.Reason) {
	switch {
	case err == nil:
		return dec.Policy.CheckSNI(dec, info.ServerName, info.HasSNI, info.ECH)
	case errors.Is(err, sni.ErrNotTLS):
		return dec.Policy.CheckProtocol(dec, false)
	case len(hello) == 0:
		// Nothing arrived at all (the client closed, or stayed silent for
		// timeouts.handshake): no hello, and nothing to relay.
		return policy.Deny, policy.ReasonSNIMissing
	default:
		return dec.Policy.CheckInvalidHello()
	}
}

// Start tracks the tunnel and relays it on the relay's own two goroutines
// (first, what GuardSNI read, goes upstream first; upstreamFirst, bytes
// already read from upstream, to the client first: what a parent proxy
// sent past its answer to CONNECT, or an origin past its 101 response)
// until both directions end or a timeout or drain cuts it. Then it closes
// both conns, writes the access line and releases client: the tunnel owns
// all three from here on, and the front end's goroutine can return.
func (r *Runner) Start(client *accept.Conn, upstream *net.TCPConn, first, upstreamFirst []byte, rec *accesslog.Record) {
	r.start(client, upstream, first, upstreamFirst, rec)
}

func (r *Runner) start(client *accept.Conn, upstream *net.TCPConn, first, upstreamFirst []byte, rec *accesslog.Record) {
	r.Metrics.TunnelOpened(rec.Listener)
	rec.Opened() // the open line (log.tunnel_open), before the relay touches the counters
	var id uint64
	if r.Registry != nil {
		id = r.Registry.Add(client.TCPConn, upstream)
	}
	idle, maxTunnel := r.timeouts()
	egress.Start(client.TCPConn, upstream, egress.RelayOptions{
		ClientPrefix:   first,
		UpstreamPrefix: upstreamFirst,
		Idle:           idle,
		MaxDuration:    maxTunnel,
		Up:             &rec.Up,
		Down:           &rec.Down,
	}, func(_, _ int64, _ error) {
		// The line and the metrics first: a drain (Registry.Wait) that
		// returns must find every tunnel it waited for already logged.
		r.Metrics.TunnelClosed(rec.Listener)
		rec.Finish()
		if r.Registry != nil {
			r.Registry.Remove(id)
		}
		client.Release()
	})
}
