package forward

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/policy"
)

// ListenerOptions configure a Listener.
type ListenerOptions struct {
	// Client returns the client address of an accepted conn (with
	// listen.proxy_protocol, the PROXY header's source). Nil: the peer.
	Client func(net.Conn) netip.Addr
	// MaxHeaderBytes: larger heads go to net/http, which answers 431.
	MaxHeaderBytes int
	// OnPanic is called after a panic on a connection was recovered.
	OnPanic func()
}

// Listener is the HTTP listener's fast path for new tunnels. It peeks at
// what each new connection sends first (MSG_PEEK: nothing is consumed);
// a plain CONNECT that the policy allows it answers itself, and it hands
// every other connection, untouched, to the http.Server that Accepts from
// it: absolute-URI requests, refused or challenged CONNECTs, and anything
// unusual (see parseConnectHead).
//
// Why: through net/http a tunnel costs the server's per-connection state,
// its 4 KiB reader and writer (lost to its pools at hijack), the request's
// contexts and goproxy's dispatch. A/B under the benchmark, same rounds:
// about 20% less CPU per new tunnel and a shorter tail (docs/benchmarks-notes.md).
// Decisions are the same Decider's, the tunnel the same code.
type Listener struct {
	inner net.Listener
	h     *Handler
	o     ListenerOptions

	conns chan net.Conn
	errs  chan error
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup // the accept loop and every connection it is peeking at

	mu      sync.Mutex
	peeking map[*net.TCPConn]struct{}

	// clients holds the address Options.Client gave for each conn handed
	// to the http.Server, for Client: that function answers once per conn.
	// An entry lives from the hand-off to the http.Server's ConnContext,
	// which runs right after its Accept (or is deleted when the Listener
	// closes first).
	clients sync.Map // *net.TCPConn -> netip.Addr
}

// Listener wraps ln, from which it accepts; serve an http.Server (with h
// as its handler) on the result.
func (h *Handler) Listener(ln net.Listener, o ListenerOptions) *Listener {
	if o.MaxHeaderBytes <= 0 || o.MaxHeaderBytes > headBufSize {
		o.MaxHeaderBytes = headBufSize
	}
	l := &Listener{
		inner:   ln,
		h:       h,
		o:       o,
		conns:   make(chan net.Conn),
		errs:    make(chan error),
		done:    make(chan struct{}),
		peeking: map[*net.TCPConn]struct{}{},
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

// Accept returns the next connection the fast path did not take.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case err := <-l.errs:
		return nil, err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting. Connections being peeked at finish their first
// request (bounded by the handshake timeout); those that would go to the
// http.Server are closed instead. Abort cuts them.
func (l *Listener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.inner.Close()
	})
	return err
}

// Addr is the listening address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

// Client returns the client address of a conn this Listener's Accept
// returned, for http.Server.ConnContext: what Options.Client said when the
// fast path asked, once per conn.
func (l *Listener) Client(c net.Conn) netip.Addr {
	if tc, ok := c.(*net.TCPConn); ok {
		if a, ok := l.clients.LoadAndDelete(tc); ok {
			return a.(netip.Addr)
		}
	}
	return l.clientOf(c)
}

// Unclaimed returns how many client addresses are held for conns handed
// to the http.Server that have not been asked for theirs yet: zero but for
// a conn between the hand-off and ConnContext (a leak check).
func (l *Listener) Unclaimed() int {
	n := 0
	l.clients.Range(func(_, _ any) bool { n++; return true })
	return n
}

// Abort closes the connections still being peeked at.
func (l *Listener) Abort() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.peeking {
		c.Close()
	}
}

// Wait returns when the accept loop and every connection's fast path have
// returned (after Close).
func (l *Listener) Wait() { l.wg.Wait() }

func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	for {
		c, err := l.inner.Accept()
		if err != nil {
			// The http.Server decides: it backs off on temporary
			// errors (EMFILE) before it asks again.
			select {
			case l.errs <- err:
			case <-l.done:
				return
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		tc, ok := c.(*net.TCPConn)
		if !ok {
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				l.handOff(c)
			}()
			continue
		}
		l.wg.Add(1)
		go l.serve(tc)
	}
}

func (l *Listener) handOff(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		if tc, ok := c.(*net.TCPConn); ok {
			l.clients.Delete(tc)
		}
		c.Close()
	}
}

// headBufSize is the most the fast path peeks at; a longer head goes to
// net/http.
const headBufSize = 4096

var headBufs = sync.Pool{New: func() any { return new([headBufSize]byte) }}

func (l *Listener) serve(c *net.TCPConn) {
	defer l.wg.Done()
	defer func() {
		if p := recover(); p != nil {
			l.h.o.Diag.Error("connect: recovered panic", zap.Any("panic", p), zap.Stack("stack"))
			if l.o.OnPanic != nil {
				l.o.OnPanic()
			}
			c.Close()
		}
	}()
	// Behind a load balancer the client address is held for each conn
	// until asked for (proxyproto.Listener.Client): ask at once, so that a
	// conn that closes or stalls before a whole head (a health check, a
	// scanner) leaves nothing behind.
	var client netip.Addr
	if l.o.Client != nil {
		client = l.o.Client(c)
	}
	bp := headBufs.Get().(*[headBufSize]byte)
	l.setPeeking(c, true)
	head, verdict, gone := l.peek(c, bp[:])
	l.setPeeking(c, false)
	switch {
	case gone:
		// Closed, reset or silent past the handshake timeout before a
		// whole head arrived: net/http would close it without an answer.
		headBufs.Put(bp)
		c.Close()
		return
	case verdict == headAccepted && head.size <= l.o.MaxHeaderBytes:
		if l.o.Client == nil {
			client = l.clientOf(c)
		}
		if x, dec, ok := l.h.admitConnect(client, head); ok {
			// Take the head off the socket. Whatever the client sent
			// after it (often its TLS ClientHello) stays there for the
			// tunnel's checks.
			_, err := io.ReadFull(c, bp[:head.size])
			headBufs.Put(bp) // not held through the dial and the SNI check
			if err != nil {
				c.Close()
				x.rec.Finish()
				return
			}
			l.h.tunnel(c, x, dec)
			return
		}
	}
	headBufs.Put(bp)
	if l.o.Client != nil {
		l.clients.Store(c, client)
	}
	l.handOff(c)
}

func (l *Listener) setPeeking(c *net.TCPConn, on bool) {
	l.mu.Lock()
	if on {
		l.peeking[c] = struct{}{}
	} else {
		delete(l.peeking, c)
	}
	l.mu.Unlock()
}

func (l *Listener) clientOf(c net.Conn) netip.Addr {
	if l.o.Client != nil {
		return l.o.Client(c)
	}
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// peek waits, up to the handshake timeout, until what c has sent is a
// complete head or cannot become one the fast path takes. gone reports a
// connection that closed, failed or timed out first.
func (l *Listener) peek(c *net.TCPConn, buf []byte) (head connectHead, verdict headVerdict, gone bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return connectHead{}, headDeclined, false
	}
	if l.h.o.Handshake > 0 {
		c.SetReadDeadline(time.Now().Add(l.h.o.Handshake))
		defer c.SetReadDeadline(time.Time{})
	}
	seen := -1
	err = rc.Read(func(fd uintptr) bool {
		for {
			n, _, err := unix.Recvfrom(int(fd), buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				return false
			case err != nil || n == 0:
				gone = true
				return true
			}
			head, verdict = parseConnectHead(buf[:n])
			if verdict != headIncomplete {
				return true
			}
			if n == len(buf) || n == seen {
				// Too long for the fast path, or woken by something
				// other than new bytes (a FIN after a partial head):
				// net/http reads it and answers as it always has.
				verdict = headDeclined
				return true
			}
			seen = n
			return false
		}
	})
	if err != nil {
		return connectHead{}, headDeclined, true
	}
	return head, verdict, gone
}

// admitConnect decides a CONNECT request whose head the fast path
// accepted. It returns ok=false, having written and consumed nothing, when
// the request must go the general way: an auth challenge, a refusal or a
// failed decision, whose answers goproxy and net/http shape (that path asks
// the policy again; nothing was logged).
func (h *Handler) admitConnect(client netip.Addr, head connectHead) (*exchange, policy.Decision, bool) {
	rec := h.o.Log.NewRecord(policy.ListenerConnect, client)
	if h.o.Auth != nil {
		user, ok := h.o.Auth(head.proxyAuth)
		switch {
		case ok:
			rec.User = user
		case h.o.AuthRequired || head.hasAuth:
			return nil, policy.Decision{}, false
		}
	}
	x := &exchange{rec: rec, tunnel: true}
	dec, status, _ := h.decide(context.Background(), x, policy.ListenerConnect, head.authority, "")
	return x, dec, status == 0
}
