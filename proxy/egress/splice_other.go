//go:build !linux

package egress

import (
	"errors"
	"net"
	"sync/atomic"
)

var errSpliceUnsupported = errors.New("splice unsupported")

func (t *relay) splice(dst, src *net.TCPConn, count *atomic.Int64) error {
	return errSpliceUnsupported
}
