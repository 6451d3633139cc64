package forward

import (
	"sync/atomic"
	"time"
)

// clockBase anchors idleDeadline's monotonic readings (time.Since reads
// only the monotonic clock, half the cost of time.Now).
var clockBase = time.Now()

// idleDeadline re-arms one deadline of a connection for timeouts.idle
// without progress, lazily: only when the armed deadline has come closer
// than idle minus a sixteenth. A wait without progress then ends after
// between 15/16 of idle and idle, and a busy connection moves its runtime
// timer about once per idle/16 instead of on every read and write (a timer
// update costs several times the reading and writing of a small forwarded
// request's head).
type idleDeadline struct {
	at atomic.Int64 // armed deadline, nanoseconds after clockBase; 0: none known
}

// next returns the deadline to arm for idle from now, and false when the
// armed one is still near enough.
func (d *idleDeadline) next(idle time.Duration) (time.Time, bool) {
	want := time.Since(clockBase) + idle
	if cur := time.Duration(d.at.Load()); cur != 0 && cur <= want && want-cur < idle>>4 {
		return time.Time{}, false
	}
	d.at.Store(int64(want))
	return clockBase.Add(want), true
}

// forget records that someone else set or cleared the deadline: the next
// call arms it again.
func (d *idleDeadline) forget() { d.at.Store(0) }
