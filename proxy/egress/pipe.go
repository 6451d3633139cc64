package egress

import "sync"

// PipePool keeps a few drained kernel pipes for the splice relay. A tunnel
// takes a pipe only while bytes are flowing and gives it back as soon as its
// source would block, so an idle tunnel holds none: it costs its two sockets
// and nothing else. The zero value is ready to use.
type PipePool struct {
	// MaxIdle bounds the drained pipes kept for reuse; a pipe returned to a
	// full pool is closed. Zero: 16. Negative: keep none.
	MaxIdle int
	// Size is the capacity asked for each new pipe (F_SETPIPE_SZ). Zero:
	// DefaultPipeSize. The kernel may grant less (fs.pipe-max-size,
	// fs.pipe-user-pages-soft); splice still works, with more calls.
	Size int

	mu    sync.Mutex
	free  []*pipe
	inUse int
}

// DefaultPipePool is shared by relays whose RelayOptions.Pipes is nil.
var DefaultPipePool = &PipePool{}

// DefaultPipeSize is the pipe capacity asked for when PipePool.Size is zero:
// 1 MiB, as Go's own splice uses: fewer splices per GiB than smaller pipes
// (docs/benchmarks-notes.md has the A/B). The pages are only allocated while bytes
// sit in the pipe, but Linux charges the capacity to the user: past
// fs.pipe-user-pages-soft (64 MiB by default) an unprivileged process gets
// small pipes (still correct, more syscalls) until some are closed.
const DefaultPipeSize = 1 << 20

// PipeStats counts a pool's pipes. Each open pipe is two descriptors.
type PipeStats struct {
	InUse int // lent to relays that are moving bytes
	Idle  int // drained, kept for reuse
}

// Stats returns the pool's current counts.
func (pp *PipePool) Stats() PipeStats {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	return PipeStats{InUse: pp.inUse, Idle: len(pp.free)}
}

// Trim closes every idle pipe.
func (pp *PipePool) Trim() {
	pp.mu.Lock()
	free := pp.free
	pp.free = nil
	pp.mu.Unlock()
	for _, p := range free {
		p.close()
	}
}

func (pp *PipePool) maxIdle() int {
	switch {
	case pp.MaxIdle == 0:
		return 16
	case pp.MaxIdle < 0:
		return 0
	}
	return pp.MaxIdle
}

// get lends a drained pipe, opening one when none is idle.
func (pp *PipePool) get() (*pipe, error) {
	pp.mu.Lock()
	if n := len(pp.free); n > 0 {
		p := pp.free[n-1]
		pp.free = pp.free[:n-1]
		pp.inUse++
		pp.mu.Unlock()
		return p, nil
	}
	pp.inUse++
	pp.mu.Unlock()
	size := pp.Size
	if size == 0 {
		size = DefaultPipeSize
	}
	p, err := newPipe(size)
	if err != nil {
		pp.mu.Lock()
		pp.inUse--
		pp.mu.Unlock()
		return nil, err
	}
	return p, nil
}

// put takes a pipe back. A pipe that may still hold bytes is closed: its
// bytes belong to a dead tunnel and must never reach another one.
func (pp *PipePool) put(p *pipe) {
	pp.mu.Lock()
	pp.inUse--
	if p.buffered == 0 && len(pp.free) < pp.maxIdle() {
		pp.free = append(pp.free, p)
		pp.mu.Unlock()
		return
	}
	pp.mu.Unlock()
	p.close()
}

// pipe is a kernel pipe, both ends non-blocking.
type pipe struct {
	r, w     int
	buffered int // bytes spliced in and not yet out
}
