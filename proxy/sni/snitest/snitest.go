// Package snitest builds real TLS ClientHellos for tests of the SNI guard
// and its parser: the first flight crypto/tls itself sends, so the tests
// judge what clients really send, not a hand-made imitation.
package snitest

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
)

// Hello returns the first flight a crypto/tls client sends with cfg (one
// record holding its ClientHello).
func Hello(cfg *tls.Config) []byte {
	rc := &recordingConn{}
	tls.Client(rc, cfg).Handshake() // fails on the first read; only the write is wanted
	return rc.out.Bytes()
}

// HelloFor is Hello for serverName ("" sends no server_name; then the
// client skips verification, as it must to start at all).
func HelloFor(serverName string) []byte {
	return Hello(&tls.Config{ServerName: serverName, InsecureSkipVerify: serverName == ""})
}

// ECHConfigList builds an ECHConfigList (draft-ietf-tls-esni, version
// 0xfe0d) for a fresh X25519 key: enough for crypto/tls to send an
// Encrypted Client Hello whose outer SNI is publicName.
func ECHConfigList(t testing.TB, publicName string) []byte {
	t.Helper()
	key, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var b cryptobyte.Builder
	b.AddUint16LengthPrefixed(func(list *cryptobyte.Builder) {
		list.AddUint16(0xfe0d)
		list.AddUint16LengthPrefixed(func(c *cryptobyte.Builder) {
			c.AddUint8(7)     // config_id
			c.AddUint16(0x20) // DHKEM(X25519, HKDF-SHA256)
			c.AddUint16LengthPrefixed(func(k *cryptobyte.Builder) { k.AddBytes(key.PublicKey().Bytes()) })
			c.AddUint16LengthPrefixed(func(s *cryptobyte.Builder) {
				s.AddUint16(1) // HKDF-SHA256
				s.AddUint16(1) // AES-128-GCM
			})
			c.AddUint8(0) // maximum_name_length
			c.AddUint8LengthPrefixed(func(n *cryptobyte.Builder) { n.AddBytes([]byte(publicName)) })
			c.AddUint16(0) // no extensions
		})
	})
	return b.BytesOrPanic()
}

// recordingConn is the client side of a handshake that never gets an
// answer: it keeps everything crypto/tls writes and fails every read, so
// Handshake returns right after sending its first flight.
type recordingConn struct {
	net.Conn // nil: any other method panics, which would be a test bug
	out      bytes.Buffer
}

func (c *recordingConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *recordingConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (c *recordingConn) Close() error                     { return nil }
func (c *recordingConn) SetDeadline(time.Time) error      { return nil }
func (c *recordingConn) SetReadDeadline(time.Time) error  { return nil }
func (c *recordingConn) SetWriteDeadline(time.Time) error { return nil }
func (c *recordingConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *recordingConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
