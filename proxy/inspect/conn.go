package inspect

import (
	"net"
	"time"

	"github.com/egressd/egressd/proxy/accesslog"
)

// clientConn is the client's side of an inspected tunnel as crypto/tls
// and net/http read it: the bytes the guard already read (the
// ClientHello) first, then the socket. It counts the bytes of the tunnel
// line (TLS records, as a spliced tunnel would count them) and carries
// the name the leaf is issued for. It is a plain net.Conn on purpose (no
// ReadFrom or WriteTo of the TCPConn): every byte passes Read and Write.
type clientConn struct {
	tc     *net.TCPConn
	prefix []byte
	rec    *accesslog.Record
	name   string
}

func (c *clientConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		c.rec.Up.Add(int64(n))
		return n, nil
	}
	n, err := c.tc.Read(p)
	c.rec.Up.Add(int64(n))
	return n, err
}

func (c *clientConn) Write(p []byte) (int, error) {
	n, err := c.tc.Write(p)
	c.rec.Down.Add(int64(n))
	return n, err
}

func (c *clientConn) Close() error                       { return c.tc.Close() }
func (c *clientConn) LocalAddr() net.Addr                { return c.tc.LocalAddr() }
func (c *clientConn) RemoteAddr() net.Addr               { return c.tc.RemoteAddr() }
func (c *clientConn) SetDeadline(t time.Time) error      { return c.tc.SetDeadline(t) }
func (c *clientConn) SetReadDeadline(t time.Time) error  { return c.tc.SetReadDeadline(t) }
func (c *clientConn) SetWriteDeadline(t time.Time) error { return c.tc.SetWriteDeadline(t) }

// CloseWrite half-closes the socket (net/http does before it closes a
// connection whose request it refused).
func (c *clientConn) CloseWrite() error { return c.tc.CloseWrite() }
