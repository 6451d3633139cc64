package httpcache

import (
	"context"
	"errors"
	"io"
	"sync"
)

// errAborted ends a fill whose readers all left before the body was complete.
var errAborted = errors.New("httpcache: every reader of the response left")

// errTruncated ends a fill whose body was shorter than its Content-Length.
var errTruncated = errors.New("httpcache: response body shorter than its Content-Length")

// pullSize is how much one read from the origin asks for.
const pullSize = 32 << 10

// fill is one response body on its way from the origin, shared by every
// request reading it: the one that fetched it and those collapsed onto it.
// No goroutine of its own moves bytes: whichever reader reaches the end of
// what has arrived reads the next piece from the origin, and the others wait
// for it. While the body fits in limit it is kept whole (and stored once
// complete); a body that outgrows it is no longer kept, and only a window of
// limit bytes ahead of the slowest reader is buffered.
type fill struct {
	mu      sync.Mutex
	origin  io.ReadCloser // the origin's body; closed once done
	buf     []byte        // body bytes [base, base+len(buf))
	base    int64
	length  int64 // Content-Length, -1 when unknown
	limit   int64
	keep    bool // buf holds the whole body so far (base 0) and may be stored
	pulling bool // a reader is reading from origin into buf's spare capacity
	done    bool
	err     error         // io.EOF once complete
	wake    chan struct{} // closed and replaced whenever something changes
	readers map[*fillReader]struct{}
	after   []func() // run by unlock, outside the lock

	// end is called once, without the lock, when the fill ends: with the
	// body when it arrived whole and was kept, else with nil. overflow is
	// called when the body outgrows the limit (to stop new readers).
	end      func(body []byte)
	overflow func()
}

func newFill(origin io.ReadCloser, length, limit int64, end func([]byte), overflow func()) *fill {
	f := &fill{
		origin:   origin,
		length:   length,
		limit:    limit,
		keep:     length <= limit,
		wake:     make(chan struct{}),
		readers:  make(map[*fillReader]struct{}),
		end:      end,
		overflow: overflow,
	}
	if length >= 0 && length <= limit {
		f.buf = make([]byte, 0, length)
	}
	return f
}

// reader returns a new reader from the start of the body, or nil when the
// fill failed or stopped keeping the whole body (it outgrew its limit).
func (f *fill) reader(ctx context.Context) *fillReader {
	f.mu.Lock()
	defer f.unlock()
	if !f.keep || f.done && f.err != io.EOF {
		return nil
	}
	r := &fillReader{f: f, ctx: ctx}
	f.readers[r] = struct{}{}
	return r
}

// unlock releases the lock, then runs what was deferred under it (closing
// the origin's body, storing a complete body, stopping new readers).
func (f *fill) unlock() {
	after := f.after
	f.after = nil
	f.mu.Unlock()
	for _, fn := range after {
		fn()
	}
}

// fillReader reads a fill from the start; it is a response body.
type fillReader struct {
	f      *fill
	ctx    context.Context
	off    int64
	closed bool
}

var errClosed = errors.New("httpcache: read from a closed body")

func (r *fillReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	f := r.f
	f.mu.Lock()
	defer f.unlock()
	for {
		if r.closed {
			return 0, errClosed
		}
		if end := f.base + int64(len(f.buf)); r.off < end {
			n := copy(p, f.buf[r.off-f.base:])
			r.off += int64(n)
			f.trimLocked()
			return n, nil
		}
		if f.done {
			return 0, f.err
		}
		if !f.pulling && f.roomLocked() {
			f.pullLocked()
			continue
		}
		wake := f.wake
		f.unlock()
		select {
		case <-wake:
		case <-r.ctx.Done():
			f.mu.Lock()
			return 0, r.ctx.Err()
		}
		f.mu.Lock()
	}
}

// Close detaches the reader. The last reader to leave an unfinished fill
// ends it: the origin's body is closed and nothing is stored.
func (r *fillReader) Close() error {
	f := r.f
	f.mu.Lock()
	defer f.unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	delete(f.readers, r)
	if len(f.readers) == 0 && !f.done {
		// The origin's Close also unblocks a read in progress.
		f.finishLocked(errAborted)
		return nil
	}
	f.trimLocked()
	f.wakeLocked()
	return nil
}

// roomLocked reports whether another piece may be buffered: always while the
// body is kept whole (pullLocked notices when it outgrows the limit), else
// only while the window ahead of the slowest reader is below the limit.
func (f *fill) roomLocked() bool {
	return f.keep || int64(len(f.buf)) < f.limit
}

// pullLocked reads the next piece from the origin into buf's spare
// capacity. The lock is released during the read: other readers only copy
// from buf[:len], and buf is neither grown nor trimmed while pulling.
func (f *fill) pullLocked() {
	f.pulling = true
	if cap(f.buf)-len(f.buf) < pullSize/4 {
		grown := make([]byte, len(f.buf), max(2*cap(f.buf), len(f.buf)+pullSize))
		copy(grown, f.buf)
		f.buf = grown
	}
	dst := f.buf[len(f.buf) : len(f.buf)+min(cap(f.buf)-len(f.buf), pullSize)]
	f.unlock()
	got, err := f.origin.Read(dst)
	f.mu.Lock()
	f.pulling = false
	if f.done { // aborted meanwhile
		return
	}
	f.buf = f.buf[:len(f.buf)+got]
	total := f.base + int64(len(f.buf))
	switch {
	case f.length >= 0 && total > f.length:
		err = errors.New("httpcache: response body longer than its Content-Length")
	case err == io.EOF && f.length >= 0 && total < f.length:
		err = errTruncated
	}
	if f.keep && total > f.limit {
		f.keep = false
		if f.overflow != nil {
			f.after = append(f.after, f.overflow)
		}
	}
	if err != nil {
		f.finishLocked(err)
		return
	}
	f.wakeLocked()
}

// finishLocked ends the fill with err (io.EOF: complete): the origin's body
// is closed (after EOF that returns its connection to the pool) and end is
// told, with the body when it was kept whole, both once the lock is
// released.
func (f *fill) finishLocked(err error) {
	f.done = true
	f.err = err
	f.after = append(f.after, func() { f.origin.Close() })
	if f.end != nil {
		var body []byte
		if err == io.EOF && f.keep {
			body = f.buf
			if body == nil {
				body = []byte{}
			}
		}
		f.after = append(f.after, func() { f.end(body) })
	}
	f.wakeLocked()
}

// trimLocked drops bytes every reader has read once the body is not kept.
func (f *fill) trimLocked() {
	if f.keep || f.pulling || len(f.readers) == 0 {
		return
	}
	low := f.base + int64(len(f.buf))
	for r := range f.readers {
		low = min(low, r.off)
	}
	if k := low - f.base; k > 0 {
		f.buf = f.buf[k:]
		f.base = low
	}
}

func (f *fill) wakeLocked() {
	close(f.wake)
	f.wake = make(chan struct{})
}
