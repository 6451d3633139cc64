//go:build !linux

package rawio

import "net"

// Read is c.Read: raw calls are used on Linux only.
func Read(c net.Conn, p []byte) (int, error) { return c.Read(p) }

// Write is c.Write: raw calls are used on Linux only.
func Write(c net.Conn, p []byte) (int, error) { return c.Write(p) }

// CloseWrite is c.CloseWrite: raw calls are used on Linux only.
func CloseWrite(c *net.TCPConn) error { return c.CloseWrite() }
