package egress

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/egressd/egressd/proxy/rawio"
)

// RelayOptions tune one tunnel's relay. The zero value relays with no
// timeouts, through DefaultPipePool.
type RelayOptions struct {
	// ClientPrefix is written to upstream before anything else: the bytes
	// read from the client while checking its first message (the SNI
	// peek, or what the HTTP server had buffered). It counts as up bytes.
	ClientPrefix []byte
	// UpstreamPrefix is written to the client before anything read from
	// upstream. It counts as down bytes.
	UpstreamPrefix []byte
	// Idle closes the tunnel when no byte moved either way for this long.
	// Zero: never.
	Idle time.Duration
	// MaxDuration closes the tunnel this long after Relay started. Zero:
	// never.
	MaxDuration time.Duration
	// Up and Down, when set, count the bytes delivered client to upstream
	// and upstream to client as they move, so a caller can read live
	// totals. Nil: counted internally.
	Up, Down *atomic.Int64
	// Pipes lends the splice pipes. Nil: DefaultPipePool.
	Pipes *PipePool
	// NoSplice forces the user-space copy path (pooled 32 KiB buffers),
	// the one used where splice(2) is unavailable.
	NoSplice bool
}

// Errors that end a tunnel on a timeout; Relay returns them (wrapped).
var (
	ErrIdle        = errors.New("tunnel idle timeout")
	ErrMaxDuration = errors.New("tunnel maximum duration reached")
)

// errSpliceUnsupported sends a direction to the copy path.
var errSpliceUnsupported = errors.New("splice unsupported")

// Relay carries bytes both ways between client and upstream until both
// directions have ended, then closes both conns. It blocks until then; the
// bytes move on two goroutines of its own (see Start).
//
// On Linux each direction splices socket to pipe to socket with splice(2),
// borrowing a pipe from opts.Pipes only while bytes flow: an idle tunnel
// waits for readability holding nothing but its two sockets. Elsewhere, or
// when the kernel refuses to splice, it copies through pooled buffers.
//
// When one side finishes sending (EOF), the other side's write half is
// closed (its peer reads EOF) and the opposite direction goes on. An error
// in either direction, the idle timeout or the maximum duration closes both
// conns. Relay returns the bytes delivered each way and the error that ended
// the tunnel: nil after two clean EOFs, ErrIdle or ErrMaxDuration on a
// timeout, else the first I/O error (errors.Is works on its syscall.Errno).
func Relay(client, upstream *net.TCPConn, opts RelayOptions) (up, down int64, err error) {
	done := make(chan struct{})
	Start(client, upstream, opts, func(u, d int64, e error) {
		up, down, err = u, d, e
		close(done)
	})
	<-done
	return up, down, err
}

// Start is Relay without blocking: it starts the two directions on two new
// goroutines and returns at once. done runs exactly once, on whichever
// direction finishes last, after both conns are closed.
//
// Each direction's goroutine starts shallow and stays shallow while it
// waits, so an idle tunnel's goroutines keep the runtime's smallest stacks;
// a caller that blocks in Relay adds its own frames (and usually a grown
// stack) to one of them. Prefer Start where the caller has nothing else to do.
func Start(client, upstream *net.TCPConn, opts RelayOptions, done func(up, down int64, err error)) {
	if opts.Up == nil {
		opts.Up = new(atomic.Int64)
	}
	if opts.Down == nil {
		opts.Down = new(atomic.Int64)
	}
	if opts.Pipes == nil {
		opts.Pipes = DefaultPipePool
	}
	t := &relay{
		client:   client,
		upstream: upstream,
		idle:     opts.Idle,
		pipes:    opts.Pipes,
		noSplice: opts.NoSplice,
		up:       opts.Up,
		down:     opts.Down,
		done:     done,
	}
	now := time.Now()
	if opts.MaxDuration > 0 {
		t.end = now.Add(opts.MaxDuration).UnixNano()
	}
	t.last.Store(now.UnixNano())
	t.running.Store(2)
	t.dirs[0].init(t, "client to upstream", client, upstream, opts.ClientPrefix, opts.Up)
	t.dirs[1].init(t, "upstream to client", upstream, client, opts.UpstreamPrefix, opts.Down)
	go t.dirs[0].main()
	go t.dirs[1].main()
}

// main is one direction's goroutine: run, end the direction, and, if it is
// the last one, end the tunnel.
func (d *direction) main() {
	t := d.t
	err := d.run()
	if err != nil {
		// Before the count drops: the last direction reads t.err.
		t.fail(fmt.Errorf("relay %s: %w", d.name, err))
	}
	if t.running.Add(-1) != 0 {
		if err == nil {
			// A clean EOF half-closes dst so its peer reads EOF too,
			// while the other direction goes on. Best effort: if the peer
			// is already gone, the other direction reports it.
			rawio.CloseWrite(d.dst)
		}
		return
	}
	// The last direction: closing sends the FIN a half-close would have.
	t.client.Close()
	t.upstream.Close()
	t.done(t.up.Load(), t.down.Load(), t.err)
}

// relay is the state both directions of one tunnel share.
type relay struct {
	client, upstream *net.TCPConn
	idle             time.Duration
	end              int64        // unix nanos when MaxDuration ends the tunnel; 0: never
	last             atomic.Int64 // unix nanos of the last bytes delivered either way
	pipes            *PipePool
	noSplice         bool
	up, down         *atomic.Int64
	done             func(up, down int64, err error)
	running          atomic.Int32 // directions still running
	dirs             [2]direction // one allocation for the whole tunnel

	failOnce sync.Once
	err      error // the error that ended the tunnel; set once, read after both directions end
}

// fail ends the tunnel on its first error: both conns close, which wakes
// the other direction (its own error is then ignored).
func (t *relay) fail(err error) {
	t.failOnce.Do(func() {
		t.err = err
		t.client.Close()
		t.upstream.Close()
	})
}

func (t *relay) touch() { t.last.Store(time.Now().UnixNano()) }

// deadline is when the tunnel ends if nothing moves from now on (zero
// time: never). Waits use it as their I/O deadline; when it fires, expired
// decides whether the other direction's traffic pushed it out.
func (t *relay) deadline() time.Time {
	var d int64
	if t.idle > 0 {
		d = t.last.Load() + int64(t.idle)
	}
	if t.end != 0 && (d == 0 || t.end < d) {
		d = t.end
	}
	if d == 0 {
		return time.Time{}
	}
	return time.Unix(0, d)
}

// expired reports why the tunnel is over, or nil if it is not.
func (t *relay) expired() error {
	now := time.Now().UnixNano()
	if t.end != 0 && now >= t.end {
		return ErrMaxDuration
	}
	if t.idle > 0 && now >= t.last.Load()+int64(t.idle) {
		return ErrIdle
	}
	return nil
}

// direction moves one way: src to dst. Its fields are touched only by the
// goroutine that runs it.
type direction struct {
	t        *relay
	name     string
	src, dst *net.TCPConn
	srcRC    syscall.RawConn
	dstRC    syscall.RawConn
	prefix   []byte
	count    *atomic.Int64
	timed    bool // deadlines are in use (Idle or MaxDuration set)

	// Scratch for the RawConn callbacks, which are method values bound
	// once so that moving bytes allocates nothing.
	pipe      *pipe
	n         int
	errno     error
	poolErr   error
	calls     int
	peekBuf   [1]byte
	waitFn    func(uintptr) bool
	spliceIn  func(uintptr) bool
	spliceOut func(uintptr) bool
}

func (d *direction) init(t *relay, name string, src, dst *net.TCPConn, prefix []byte, count *atomic.Int64) {
	*d = direction{t: t, name: name, src: src, dst: dst, prefix: prefix, count: count}
	d.timed = t.idle > 0 || t.end != 0
}

// run moves bytes until src's EOF (nil) or an error.
func (d *direction) run() error {
	// Also clears a deadline the caller may have left (a handshake's):
	// from here on only the tunnel's own timeouts apply.
	dl := d.t.deadline()
	d.src.SetReadDeadline(dl)
	d.dst.SetWriteDeadline(dl)
	if len(d.prefix) > 0 {
		err := d.write(d.prefix)
		d.prefix = nil // not kept for the tunnel's life
		if err != nil {
			return err
		}
	}
	if !d.t.noSplice {
		err := d.splice()
		if !errors.Is(err, errSpliceUnsupported) {
			return err
		}
	}
	return d.copy()
}

// timedOut handles an I/O error: for a deadline that fired while the
// tunnel is still live (the other direction moved bytes), it re-arms the
// deadlines and returns nil so the caller retries. Otherwise it returns the
// error that ends the direction.
func (d *direction) timedOut(err error) error {
	if !errors.Is(err, os.ErrDeadlineExceeded) || !d.timed {
		return err
	}
	if xerr := d.t.expired(); xerr != nil {
		return xerr
	}
	dl := d.t.deadline()
	d.src.SetReadDeadline(dl)
	d.dst.SetWriteDeadline(dl)
	return nil
}

// write writes p to dst whole, through deadlines that turn out not to end
// the tunnel.
func (d *direction) write(p []byte) error {
	for len(p) > 0 {
		n, err := rawio.Write(d.dst, p)
		if n > 0 {
			d.count.Add(int64(n))
			d.t.touch()
			p = p[n:]
		}
		if err != nil {
			if err := d.timedOut(err); err != nil {
				return err
			}
		}
	}
	return nil
}

// copyBufs holds the copy path's buffers; a direction holds one only while
// it has bytes to move (on Linux), or for the length of a read elsewhere.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// CopyPooled is io.CopyBuffer through the copy path's pooled 32 KiB buffers,
// for copies elsewhere that would otherwise allocate a buffer each (io.Copy
// between a reader and a writer that offer neither WriterTo nor ReaderFrom).
func CopyPooled(dst io.Writer, src io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	return io.CopyBuffer(dst, src, *bp)
}

// copy is the user-space path: wait for bytes, then read them into a pooled
// buffer and write them on.
func (d *direction) copy() error {
	for {
		if err := d.waitReadable(); err != nil {
			return err
		}
		bp := copyBufs.Get().(*[]byte)
		n, err := rawio.Read(d.src, *bp)
		var werr error
		if n > 0 {
			werr = d.write((*bp)[:n])
		}
		copyBufs.Put(bp)
		switch {
		case werr != nil:
			return werr
		case err == io.EOF:
			return nil
		case err != nil:
			if err := d.timedOut(err); err != nil {
				return err
			}
		}
	}
}
