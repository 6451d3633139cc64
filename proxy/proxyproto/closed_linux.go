package proxyproto

import "golang.org/x/sys/unix"

// tcpCloseWait is TCP_CLOSE_WAIT (include/net/tcp_states.h): the peer has
// sent its FIN and we have not closed yet.
const tcpCloseWait = 8

// peerClosed reports whether the peer of the TCP socket fd has closed its
// sending side.
func peerClosed(fd uintptr) bool {
	info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	return err == nil && info.State == tcpCloseWait
}
