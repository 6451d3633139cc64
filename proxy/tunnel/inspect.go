package tunnel

import (
	"net"
	"time"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accept"
	"github.com/egressd/egressd/proxy/accesslog"
)

// Inspector terminates the tunnels whose rule inspects them
// (proxy/inspect.Server): it completes the client's TLS handshake and
// serves the requests inside, instead of a relay to one upstream.
type Inspector interface {
	// Inspects reports whether a tunnel allowed by dec is terminated.
	Inspects(dec policy.Decision) bool
	// Serve takes conn over (first: what the guard read) and calls done
	// once, after conn is closed.
	Serve(conn *net.TCPConn, first []byte, dec policy.Decision, rec *accesslog.Record, maxTunnel time.Duration, done func())
}

// Inspects reports whether a tunnel allowed by dec is terminated (Inspect)
// rather than dialed and relayed: its rule says inspect, and the Inspector
// agrees (a CA is loaded, the host is not in tls_inspection.bypass). A
// front end asks before it dials: an inspected tunnel's requests are
// dialed one by one, each to its own decision's addresses.
func (r *Runner) Inspects(dec policy.Decision) bool {
	return r.Inspector != nil && r.Inspector.Inspects(dec)
}

// Inspect hands an inspected tunnel, once GuardSNI let it through, to the
// Inspector: tracked for drain and counted active like a relayed tunnel,
// its line written and client released when it ends. It returns once the
// client's TLS handshake is over (done or failed); the tunnel owns client
// from here on.
func (r *Runner) Inspect(client *accept.Conn, first []byte, dec policy.Decision, rec *accesslog.Record) {
	r.Metrics.TunnelOpened(rec.Listener)
	rec.Opened() // the open line (log.tunnel_open), before the handshake
	var id uint64
	if r.Registry != nil {
		// Closing the socket under the TLS session ends it: both halves
		// of the registry's pair are the client.
		id = r.Registry.Add(client.TCPConn, client.TCPConn)
	}
	_, maxTunnel := r.timeouts()
	r.Inspector.Serve(client.TCPConn, first, dec, rec, maxTunnel, func() {
		// The line first: a drain that returns finds it logged.
		r.Metrics.TunnelClosed(rec.Listener)
		rec.Finish()
		if r.Registry != nil {
			r.Registry.Remove(id)
		}
		client.Release()
	})
}
