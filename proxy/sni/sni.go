package sni

import (
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
)

// Info is what a ClientHello says about where it is going.
type Info struct {
	ServerName string   // the server_name extension's host_name, as sent (printable ASCII, no trailing dot)
	HasSNI     bool     // a server_name extension carried a host_name
	ECH        bool     // an encrypted_client_hello extension (0xfe0d) was present: ServerName is the outer name
	ALPN       []string // application_layer_protocol_negotiation protocols in client order; nil when absent
	// Version is the highest TLS version the client offers: the largest
	// supported_versions entry (RFC 8446 section 4.2.1) that is not a
	// GREASE value (RFC 8701), else the hello's legacy_version (0x0303
	// is TLS 1.2).
	Version uint16
}

// Size limits. A handshake record carries at most MaxRecordLen bytes of
// payload (RFC 8446 section 5.1); the ClientHello message body is capped at
// MaxHelloLen, the limit crypto/tls itself applies to handshake messages.
const (
	MaxRecordLen = 16384
	MaxHelloLen  = 65536
	// MaxPeek is the default cap on the bytes Peek reads: a ClientHello of
	// up to 64 KiB including its record headers.
	MaxPeek = 65536
)

// Errors. Each one fails closed; they are distinct so that a front end can
// tell "not TLS at all" from "TLS we cannot read".
var (
	// ErrNotTLS means the first bytes cannot start a TLS handshake: the
	// first byte is not a handshake record (0x16) or the record version is
	// not 3.x.
	ErrNotTLS = errors.New("not a TLS handshake")
	// ErrMalformed means a TLS handshake record stream whose first message
	// is not a well-formed ClientHello.
	ErrMalformed = errors.New("malformed ClientHello")
	// ErrTooLarge means the ClientHello announces more than MaxHelloLen
	// bytes, or did not arrive within the bytes Peek was allowed to read.
	ErrTooLarge = errors.New("ClientHello too large")
	// ErrIncomplete means the data ends before the ClientHello does. Parse
	// returns it inside an *IncompleteError.
	ErrIncomplete = errors.New("incomplete ClientHello")
)

// IncompleteError is Parse's answer when more bytes are needed. It matches
// ErrIncomplete with errors.Is.
type IncompleteError struct {
	// Need is a lower bound on how many more bytes must follow before
	// Parse can make progress.
	Need int
}

func (e *IncompleteError) Error() string {
	return fmt.Sprintf("incomplete ClientHello: need at least %d more bytes", e.Need)
}

// Is makes errors.Is(err, ErrIncomplete) true.
func (e *IncompleteError) Is(target error) bool { return target == ErrIncomplete }

// Wire constants (RFC 8446, RFC 6066, RFC 7301, draft-ietf-tls-esni).
const (
	recordHeaderLen     = 5
	recordTypeHandshake = 0x16
	handshakeHeaderLen  = 4
	typeClientHello     = 0x01
	extServerName       = 0x0000
	extALPN             = 0x0010
	extECH              = 0xfe0d
	nameTypeHostName    = 0x00
)

// Extensions whose body crypto/tls's server parses (handshake_messages.go,
// clientHelloMsg.unmarshal); Parse checks them the same way.
const (
	extStatusRequest        = 5
	extSupportedGroups      = 10
	extECPointFormats       = 11
	extSignatureAlgorithms  = 13
	extSCT                  = 18
	extExtendedMasterSecret = 23
	extPreSharedKey         = 41
	extEarlyData            = 42
	extSupportedVersions    = 43
	extCookie               = 44
	extPSKModes             = 45
	extSignatureAlgsCert    = 50
	extKeyShare             = 51
	extRenegotiationInfo    = 0xff01
)

// Parse reads the ClientHello at the start of a TLS record stream. The
// handshake message may be split over several records; they are
// reassembled (copying only when it is split). Bytes after the ClientHello
// are ignored. Parse never panics; its errors are ErrNotTLS, ErrMalformed,
// ErrTooLarge or an *IncompleteError.
//
// Parse rejects every ClientHello crypto/tls's server rejects before it
// reads the name: a duplicate extension, a second host_name, a name with a
// trailing dot, and a malformed body of any extension crypto/tls parses. It
// is stricter than crypto/tls in three ways, all failing closed: a record
// may carry at most MaxRecordLen bytes, records must all be handshake
// records with version 3.x, and a host_name must be printable ASCII (a
// name a policy could match).
func Parse(data []byte) (Info, error) {
	msg, err := handshakeMessage(data)
	if err != nil {
		return Info{}, err
	}
	return parseClientHello(msg)
}

// handshakeMessage returns the first handshake message (with its 4-byte
// header) from a record stream, reassembled when it spans records.
func handshakeMessage(data []byte) ([]byte, error) {
	var (
		msg   []byte // reassembly buffer; nil until the message spans records
		need  = -1   // message length with header, once its header is seen
		first = true
	)
	for {
		if len(data) < recordHeaderLen {
			if err := checkRecordHeader(data, first); err != nil {
				return nil, err
			}
			more := recordHeaderLen - len(data) + 1
			if need >= 0 {
				more = recordHeaderLen - len(data) + need - len(msg)
			}
			return nil, &IncompleteError{Need: more}
		}
		if err := checkRecordHeader(data, first); err != nil {
			return nil, err
		}
		n := int(data[3])<<8 | int(data[4])
		if n == 0 || n > MaxRecordLen {
			return nil, ErrMalformed
		}
		if len(data) < recordHeaderLen+n {
			return nil, &IncompleteError{Need: recordHeaderLen + n - len(data)}
		}
		frag := data[recordHeaderLen : recordHeaderLen+n]
		data = data[recordHeaderLen+n:]
		if first && len(frag) >= handshakeHeaderLen {
			l, err := helloLen(frag)
			if err != nil {
				return nil, err
			}
			if len(frag) >= l {
				return frag[:l], nil // the common case: one record, no copy
			}
			need = l
			msg = make([]byte, 0, l)
		}
		first = false
		if need >= 0 {
			frag = frag[:min(len(frag), need-len(msg))]
		}
		msg = append(msg, frag...)
		if need < 0 && len(msg) >= handshakeHeaderLen {
			l, err := helloLen(msg)
			if err != nil {
				return nil, err
			}
			need = l
			if len(msg) > need {
				msg = msg[:need]
			}
		}
		if need >= 0 && len(msg) == need {
			return msg, nil
		}
	}
}

// checkRecordHeader validates the header bytes present (up to 5).
func checkRecordHeader(h []byte, first bool) error {
	bad := ErrMalformed // a later record that is not a handshake record
	if first {
		bad = ErrNotTLS
	}
	if len(h) > 0 && h[0] != recordTypeHandshake {
		return bad
	}
	if len(h) > 1 && h[1] != 3 {
		return bad
	}
	return nil
}

// helloLen checks a handshake header and returns the message's total length.
func helloLen(h []byte) (int, error) {
	if h[0] != typeClientHello {
		return 0, ErrMalformed
	}
	n := int(h[1])<<16 | int(h[2])<<8 | int(h[3])
	if n > MaxHelloLen {
		return 0, ErrTooLarge
	}
	return handshakeHeaderLen + n, nil
}

// parseClientHello parses a ClientHello message (RFC 8446 section 4.1.2,
// which also covers the TLS 1.0-1.2 layout).
func parseClientHello(msg []byte) (Info, error) {
	var info Info
	s := cryptobyte.String(msg)
	var typ uint8
	var body cryptobyte.String
	if !s.ReadUint8(&typ) || typ != typeClientHello || !s.ReadUint24LengthPrefixed(&body) {
		return Info{}, ErrMalformed
	}
	var sessionID, suites, compression cryptobyte.String
	if !body.ReadUint16(&info.Version) || // legacy_version
		!body.Skip(32) || // random
		!body.ReadUint8LengthPrefixed(&sessionID) ||
		!body.ReadUint16LengthPrefixed(&suites) || len(suites)%2 != 0 ||
		!body.ReadUint8LengthPrefixed(&compression) {
		return Info{}, ErrMalformed
	}
	if body.Empty() {
		return info, nil // extensions are optional before TLS 1.3
	}
	var exts cryptobyte.String
	if !body.ReadUint16LengthPrefixed(&exts) || !body.Empty() {
		return Info{}, ErrMalformed
	}
	var seen extSet
	for !exts.Empty() {
		var typ uint16
		var data cryptobyte.String
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
			return Info{}, ErrMalformed
		}
		// RFC 8446 section 4.2: no extension may appear twice. A second
		// server_name could otherwise carry a name the upstream reads
		// instead of ours.
		if seen.addDup(typ) {
			return Info{}, ErrMalformed
		}
		var err error
		switch typ {
		case extServerName:
			info.ServerName, info.HasSNI, err = parseServerName(data)
		case extALPN:
			info.ALPN, err = parseALPN(data)
		case extECH:
			info.ECH = true
			if !validECH(data) {
				err = ErrMalformed
			}
		case extSupportedVersions:
			if !validExtension(typ, data) {
				err = ErrMalformed
			} else if v := maxVersion(data); v != 0 {
				info.Version = v
			}
		case extPreSharedKey:
			// RFC 8446 section 4.2.11: pre_shared_key comes last.
			if !exts.Empty() || !validPSK(data) {
				err = ErrMalformed
			}
		default:
			if !validExtension(typ, data) {
				err = ErrMalformed
			}
		}
		if err != nil {
			return Info{}, err
		}
	}
	return info, nil
}

// validExtension checks the body of an extension the way crypto/tls's
// server does; extensions it does not parse are accepted as they are.
func validExtension(typ uint16, data cryptobyte.String) bool {
	var list cryptobyte.String
	switch typ {
	case extStatusRequest:
		var ignored cryptobyte.String
		return data.Skip(1) && data.ReadUint16LengthPrefixed(&ignored) &&
			data.ReadUint16LengthPrefixed(&ignored) && data.Empty()
	case extSupportedGroups, extSignatureAlgorithms, extSignatureAlgsCert:
		return data.ReadUint16LengthPrefixed(&list) && !list.Empty() && len(list)%2 == 0 && data.Empty()
	case extSupportedVersions:
		return data.ReadUint8LengthPrefixed(&list) && !list.Empty() && len(list)%2 == 0 && data.Empty()
	case extECPointFormats:
		return data.ReadUint8LengthPrefixed(&list) && !list.Empty() && data.Empty()
	case extRenegotiationInfo, extPSKModes:
		return data.ReadUint8LengthPrefixed(&list) && data.Empty()
	case extCookie:
		return data.ReadUint16LengthPrefixed(&list) && !list.Empty() && data.Empty()
	case extExtendedMasterSecret, extSCT, extEarlyData:
		return data.Empty()
	case extKeyShare:
		if !data.ReadUint16LengthPrefixed(&list) || !data.Empty() {
			return false
		}
		for !list.Empty() {
			var share cryptobyte.String
			if !list.Skip(2) || !list.ReadUint16LengthPrefixed(&share) || share.Empty() {
				return false
			}
		}
	}
	return true
}

// maxVersion returns the largest version in a supported_versions body that
// validExtension accepted, GREASE values (0x?a?a) left out; 0 when none is
// left.
func maxVersion(data cryptobyte.String) uint16 {
	var list cryptobyte.String
	data.ReadUint8LengthPrefixed(&list)
	var best uint16
	for !list.Empty() {
		var v uint16
		list.ReadUint16(&v)
		if v&0x0f0f != 0x0a0a && v > best {
			best = v
		}
	}
	return best
}

// VersionName is the conventional name of a TLS version (TLSv1.3, as
// OpenSSL, nginx and Envoy log it), or its hex value when it is not a
// known one; "" for 0.
func VersionName(v uint16) string {
	switch v {
	case 0:
		return ""
	case 0x0300:
		return "SSLv3"
	case 0x0301:
		return "TLSv1"
	case 0x0302:
		return "TLSv1.1"
	case 0x0303:
		return "TLSv1.2"
	case 0x0304:
		return "TLSv1.3"
	}
	const hex = "0123456789abcdef"
	return string([]byte{'0', 'x', hex[v>>12], hex[v>>8&0xf], hex[v>>4&0xf], hex[v&0xf]})
}

// validPSK checks a pre_shared_key extension body (RFC 8446 section
// 4.2.11) as crypto/tls does: non-empty identities and binders.
func validPSK(data cryptobyte.String) bool {
	var ids, binders cryptobyte.String
	if !data.ReadUint16LengthPrefixed(&ids) || ids.Empty() {
		return false
	}
	for !ids.Empty() {
		var label cryptobyte.String
		if !ids.ReadUint16LengthPrefixed(&label) || label.Empty() || !ids.Skip(4) {
			return false
		}
	}
	if !data.ReadUint16LengthPrefixed(&binders) || binders.Empty() || !data.Empty() {
		return false
	}
	for !binders.Empty() {
		var b cryptobyte.String
		if !binders.ReadUint8LengthPrefixed(&b) || b.Empty() {
			return false
		}
	}
	return true
}

// validECH checks an encrypted_client_hello extension body as crypto/tls's
// server does before it reads the name (ech.go, parseECHExt): empty, an
// inner marker (type 1, nothing else), or an outer one (type 0, cipher
// suite, config id, encapsulated key, payload).
func validECH(data cryptobyte.String) bool {
	if data.Empty() {
		return true
	}
	var typ uint8
	data.ReadUint8(&typ)
	switch typ {
	case 1:
		return data.Empty()
	case 0:
		var enc, payload cryptobyte.String
		return data.Skip(2+2+1) && data.ReadUint16LengthPrefixed(&enc) && data.ReadUint16LengthPrefixed(&payload)
	}
	return false
}

// parseServerName reads a server_name extension (RFC 6066 section 3).
func parseServerName(data cryptobyte.String) (string, bool, error) {
	var list cryptobyte.String
	if !data.ReadUint16LengthPrefixed(&list) || list.Empty() || !data.Empty() {
		return "", false, ErrMalformed
	}
	var host cryptobyte.String
	found := false
	for !list.Empty() {
		var nameType uint8
		var name cryptobyte.String
		if !list.ReadUint8(&nameType) || !list.ReadUint16LengthPrefixed(&name) || name.Empty() {
			return "", false, ErrMalformed
		}
		if nameType != nameTypeHostName {
			continue
		}
		if found {
			return "", false, ErrMalformed // one host_name only
		}
		host, found = name, true
	}
	if !found {
		return "", false, nil
	}
	if host[len(host)-1] == '.' {
		return "", false, ErrMalformed // RFC 6066: no trailing dot
	}
	for _, c := range host {
		if c < 0x21 || c > 0x7e {
			return "", false, ErrMalformed
		}
	}
	return string(host), true, nil
}

// parseALPN reads an ALPN extension (RFC 7301 section 3.1) with two
// allocations: one string holding the list and the slice of its parts.
func parseALPN(data cryptobyte.String) ([]string, error) {
	var list cryptobyte.String
	if !data.ReadUint16LengthPrefixed(&list) || list.Empty() || !data.Empty() {
		return nil, ErrMalformed
	}
	count := 0
	for l := list; !l.Empty(); count++ {
		var proto cryptobyte.String
		if !l.ReadUint8LengthPrefixed(&proto) || proto.Empty() {
			return nil, ErrMalformed
		}
	}
	raw := string(list)
	out := make([]string, 0, count)
	for i := 0; i < len(raw); {
		n := int(raw[i])
		out = append(out, raw[i+1:i+1+n])
		i += 1 + n
	}
	return out, nil
}

// extSet detects duplicate extension types without allocating for real
// hellos: types below 256 go in a bitmap, others (GREASE, ECH, ...) in a
// small array; only a hello with more than len(high) such types spills to
// a map.
type extSet struct {
	low   [4]uint64
	high  [32]uint16
	nhigh int
	more  map[uint16]bool
}

// addDup adds t and reports whether it was already present.
func (s *extSet) addDup(t uint16) bool {
	if t < 256 {
		w, b := t/64, uint64(1)<<(t%64)
		dup := s.low[w]&b != 0
		s.low[w] |= b
		return dup
	}
	for _, h := range s.high[:s.nhigh] {
		if h == t {
			return true
		}
	}
	if s.nhigh < len(s.high) {
		s.high[s.nhigh] = t
		s.nhigh++
		return false
	}
	if s.more == nil {
		s.more = map[uint16]bool{}
	}
	dup := s.more[t]
	s.more[t] = true
	return dup
}
