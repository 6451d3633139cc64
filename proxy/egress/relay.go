package egress

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// RelayOptions tune one tunnel's relay.
type RelayOptions struct {
	// ClientPrefix is sent to upstream before anything else: the bytes read
	// from the client while checking its first message.
	ClientPrefix []byte
	// Idle closes the tunnel when no byte moved either way for this long.
	// Zero: never.
	Idle time.Duration
	// MaxDuration closes the tunnel this long after it started. Zero: never.
	MaxDuration time.Duration
	// Up and Down, when set, count bytes client to upstream and upstream
	// to client as they move, so a caller can read live totals.
	Up, Down *atomic.Int64
}

// Relay carries bytes both ways between client and upstream until both
// directions have ended, then closes both. When one side finishes sending
// (EOF), the other side's write half is closed and the opposite direction
// goes on. An error, the idle timeout or the maximum duration closes both.
// It uses the calling goroutine and one more.
func Relay(client, upstream *net.TCPConn, o RelayOptions) (up, down int64, err error) {
	if o.Up == nil {
		o.Up = new(atomic.Int64)
	}
	if o.Down == nil {
		o.Down = new(atomic.Int64)
	}
	prefix := o.ClientPrefix
	o.ClientPrefix = nil // not kept for the tunnel's life once sent
	t := &relay{o: o, start: time.Now()}
	t.touch()
	var wg sync.WaitGroup
	var downErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		downErr = t.pump(client, upstream, nil, o.Down)
		t.done(client, upstream, downErr)
	}()
	upErr := t.pump(upstream, client, prefix, o.Up)
	t.done(upstream, client, upErr)
	wg.Wait()
	client.Close()
	upstream.Close()
	if upErr != nil {
		return o.Up.Load(), o.Down.Load(), upErr
	}
	return o.Up.Load(), o.Down.Load(), downErr
}

// ErrIdle and ErrMaxDuration end tunnels that hit their timeouts.
var (
	ErrIdle        = errors.New("tunnel idle timeout")
	ErrMaxDuration = errors.New("tunnel maximum duration reached")
)

type relay struct {
	o     RelayOptions
	start time.Time
	last  atomic.Int64 // unix nanos of the last byte moved either way
}

func (t *relay) touch() { t.last.Store(time.Now().UnixNano()) }

// deadline is when the tunnel ends if nothing moves from now on.
func (t *relay) deadline() time.Time {
	var d time.Time
	if t.o.Idle > 0 {
		d = time.Unix(0, t.last.Load()).Add(t.o.Idle)
	}
	if t.o.MaxDuration > 0 {
		if m := t.start.Add(t.o.MaxDuration); d.IsZero() || m.Before(d) {
			d = m
		}
	}
	return d
}

// expired decides, after a deadline fired, whether the tunnel is over or
// the other direction's traffic pushed the deadline out.
func (t *relay) expired() error {
	now := time.Now()
	if t.o.MaxDuration > 0 && !now.Before(t.start.Add(t.o.MaxDuration)) {
		return ErrMaxDuration
	}
	if t.o.Idle > 0 && !now.Before(time.Unix(0, t.last.Load()).Add(t.o.Idle)) {
		return ErrIdle
	}
	return nil
}

// done ends one direction: a clean EOF half-closes, anything else cuts both.
func (t *relay) done(dst, src *net.TCPConn, err error) {
	if err == nil {
		dst.CloseWrite()
		src.CloseRead()
		return
	}
	dst.Close()
	src.Close()
}

// pump moves src to dst until EOF (nil) or an error.
func (t *relay) pump(dst, src *net.TCPConn, prefix []byte, count *atomic.Int64) error {
	if len(prefix) > 0 {
		if err := t.write(dst, prefix, count); err != nil {
			return err
		}
	}
	err := t.splice(dst, src, count)
	if errors.Is(err, errSpliceUnsupported) {
		err = t.copy(dst, src, count)
	}
	return err
}

func (t *relay) write(dst *net.TCPConn, p []byte, count *atomic.Int64) error {
	if d := t.deadline(); !d.IsZero() {
		dst.SetWriteDeadline(d)
	}
	n, err := dst.Write(p)
	count.Add(int64(n))
	t.touch()
	return err
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copy is the portable path: user-space copy with pooled buffers.
func (t *relay) copy(dst, src *net.TCPConn, count *atomic.Int64) error {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		if d := t.deadline(); !d.IsZero() {
			src.SetReadDeadline(d)
		}
		n, err := src.Read(buf)
		if n > 0 {
			if werr := t.write(dst, buf[:n], count); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if xerr := t.expired(); xerr != nil {
				return xerr
			}
			continue
		}
		if err != nil {
			return err
		}
	}
}
