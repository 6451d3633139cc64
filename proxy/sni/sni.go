package sni

import (
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/crypto/cryptobyte"
)

// Info is what the ClientHello says about its destination.
type Info struct {
	ServerName string // the server_name extension's host_name, as sent
	HasSNI     bool   // a server_name extension with a host_name was present
	ECH        bool   // an encrypted_client_hello extension was present
}

var (
	// ErrNotTLS means the bytes are not a TLS handshake record.
	ErrNotTLS = errors.New("not a TLS handshake")
	// ErrMalformed means a TLS handshake record that is not a valid ClientHello.
	ErrMalformed = errors.New("malformed ClientHello")
	// ErrTooLarge means the ClientHello did not fit in the bytes allowed.
	ErrTooLarge = errors.New("ClientHello too large")
)

// errIncomplete means more bytes are needed.
var errIncomplete = errors.New("incomplete ClientHello")

const (
	recordHeaderLen     = 5
	recordTypeHandshake = 0x16
	typeClientHello     = 0x01
	extServerName       = 0x0000
	extECH              = 0xfe0d
	nameTypeHostName    = 0x00
)

// Parse reads a ClientHello from the start of a TLS record stream. The
// handshake message may span several records; it is reassembled. Parse
// returns errIncomplete (unexported; see Peek) when data ends too early.
func Parse(data []byte) (Info, error) {
	msg, err := handshakeMessage(data)
	if err != nil {
		return Info{}, err
	}
	return parseClientHello(msg)
}

// handshakeMessage reassembles the first handshake message from records.
func handshakeMessage(data []byte) ([]byte, error) {
	if len(data) == 0 {
		return nil, errIncomplete
	}
	if data[0] != recordTypeHandshake {
		return nil, ErrNotTLS
	}
	var msg []byte
	need := -1 // total handshake message length incl. its 4-byte header, once known
	for {
		if len(data) < recordHeaderLen {
			if len(data) > 0 && data[0] != recordTypeHandshake {
				return nil, ErrMalformed
			}
			return nil, errIncomplete
		}
		if data[0] != recordTypeHandshake {
			return nil, ErrMalformed
		}
		if data[1] != 3 { // major version of SSL 3.0 / TLS 1.x record layer
			return nil, ErrNotTLS
		}
		n := int(data[3])<<8 | int(data[4])
		if n == 0 || n > 16384+2048 {
			return nil, ErrMalformed
		}
		if len(data) < recordHeaderLen+n {
			return nil, errIncomplete
		}
		if msg == nil {
			// Avoid a copy when the message sits in one record.
			frag := data[recordHeaderLen : recordHeaderLen+n]
			if len(frag) >= 4 {
				need = 4 + (int(frag[1])<<16 | int(frag[2])<<8 | int(frag[3]))
				if len(frag) >= need {
					return frag[:need], nil
				}
			}
			msg = append(make([]byte, 0, 1024), frag...)
		} else {
			msg = append(msg, data[recordHeaderLen:recordHeaderLen+n]...)
		}
		data = data[recordHeaderLen+n:]
		if need < 0 && len(msg) >= 4 {
			need = 4 + (int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3]))
		}
		if need >= 0 && len(msg) >= need {
			return msg[:need], nil
		}
	}
}

func parseClientHello(msg []byte) (Info, error) {
	var info Info
	s := cryptobyte.String(msg)
	var typ uint8
	var body cryptobyte.String
	if !s.ReadUint8(&typ) || typ != typeClientHello || !s.ReadUint24LengthPrefixed(&body) {
		return info, ErrMalformed
	}
	var version uint16
	var random, sessionID, suites, compression cryptobyte.String
	if !body.ReadUint16(&version) || !body.ReadBytes((*[]byte)(&random), 32) ||
		!body.ReadUint8LengthPrefixed(&sessionID) || !body.ReadUint16LengthPrefixed(&suites) ||
		!body.ReadUint8LengthPrefixed(&compression) {
		return info, ErrMalformed
	}
	if body.Empty() {
		return info, nil // no extensions at all: no SNI
	}
	var exts cryptobyte.String
	if !body.ReadUint16LengthPrefixed(&exts) || !body.Empty() {
		return info, ErrMalformed
	}
	seen := map[uint16]bool{}
	for !exts.Empty() {
		var typ uint16
		var data cryptobyte.String
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
			return info, ErrMalformed
		}
		if seen[typ] {
			// RFC 8446 section 4.2: duplicate extensions are illegal; a
			// second server_name could otherwise smuggle a name past us.
			return Info{}, ErrMalformed
		}
		seen[typ] = true
		switch typ {
		case extECH:
			info.ECH = true
		case extServerName:
			var list cryptobyte.String
			if !data.ReadUint16LengthPrefixed(&list) || list.Empty() || !data.Empty() {
				return Info{}, ErrMalformed
			}
			for !list.Empty() {
				var nameType uint8
				var name cryptobyte.String
				if !list.ReadUint8(&nameType) || !list.ReadUint16LengthPrefixed(&name) {
					return Info{}, ErrMalformed
				}
				if nameType != nameTypeHostName {
					continue
				}
				if info.HasSNI || len(name) == 0 {
					return Info{}, ErrMalformed // one host_name only (RFC 6066 section 3)
				}
				info.ServerName, info.HasSNI = string(name), true
			}
		}
	}
	return info, nil
}

// Peek reads from conn, after prefix (bytes already read from it), until a
// whole ClientHello is available, max bytes have been read, or deadline
// passes. It returns every byte consumed (prefix included), to be sent on
// first. A first byte that cannot start a TLS handshake returns ErrNotTLS at
// once. The read deadline is cleared before returning.
func Peek(conn net.Conn, prefix []byte, maxLen int, deadline time.Time) ([]byte, Info, error) {
	buf := make([]byte, len(prefix), max(len(prefix), 1024))
	copy(buf, prefix)
	if len(buf) > 0 {
		info, err := Parse(buf)
		if err != errIncomplete {
			return buf, info, err
		}
	}
	if !deadline.IsZero() {
		conn.SetReadDeadline(deadline)
		defer conn.SetReadDeadline(time.Time{})
	}
	for {
		if len(buf) >= maxLen {
			return buf, Info{}, ErrTooLarge
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := conn.Read(buf[len(buf):min(cap(buf), maxLen)])
		buf = buf[:len(buf)+n]
		if n > 0 {
			info, perr := Parse(buf)
			if perr != errIncomplete {
				return buf, info, perr
			}
		}
		if err != nil {
			return buf, Info{}, fmt.Errorf("reading ClientHello: %w", err)
		}
	}
}
