//go:build !unix

package proxyproto

import (
	"errors"
	"syscall"
)

// peek needs MSG_PEEK; egressd runs on Linux.
func peek(syscall.RawConn, []byte, int) (int, error) {
	return 0, errors.New("PROXY protocol needs a Unix system (MSG_PEEK)")
}
