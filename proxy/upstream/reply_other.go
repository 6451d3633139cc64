//go:build !unix

package upstream

import "net"

// readHead reads a parent's answer head from c into buf and nothing after
// it, one byte per read (no MSG_PEEK here; egressd's home is Linux).
func readHead(c *net.TCPConn, buf []byte) ([]byte, error) {
	for n := 0; n < len(buf); n++ {
		if _, err := c.Read(buf[n : n+1]); err != nil {
			return nil, err
		}
		if end := headEnd(buf[max(0, n-2) : n+1]); end >= 0 {
			return buf[:n+1], nil
		}
	}
	return nil, errHeadTooLarge
}
