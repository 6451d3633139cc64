package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Sizes from the PROXY protocol specification.
const (
	// MaxV1 is the longest v1 header, CRLF included.
	MaxV1 = 107
	// v2Fixed is the v2 header before its address block: signature,
	// version and command, family and protocol, length.
	v2Fixed = 16
	// MaxV2Payload bounds the v2 address block plus TLVs we accept. The
	// format allows 65535 bytes; addresses take at most 216 (AF_UNIX) and
	// load balancers add a few TLVs (AWS: the VPC endpoint ID).
	MaxV2Payload = 4096
)

var (
	v1Sig = []byte("PROXY ")
	v2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

// v2 command, address family and transport protocol nibbles.
const (
	v2Version = 0x2

	cmdLocal = 0x0
	cmdProxy = 0x1

	afUnspec = 0x0
	afInet   = 0x1
	afInet6  = 0x2
	afUnix   = 0x3

	protoUnspec = 0x0
	protoStream = 0x1
	protoDgram  = 0x2
)

// Errors of ParseHeader other than malformed headers.
var (
	// ErrNoHeader means the bytes do not start with a PROXY signature.
	ErrNoHeader = errors.New("no PROXY protocol header")
	// ErrIncomplete means the bytes are the start of a header (or of a
	// signature): more bytes are needed to decide.
	ErrIncomplete = errors.New("incomplete PROXY protocol header")
)

// Header is a parsed PROXY protocol header.
type Header struct {
	// Version is 1 (text) or 2 (binary).
	Version int
	// Local is set when the header carries no client address to use: a v2
	// LOCAL command (the load balancer's own connection, a health check),
	// v1 UNKNOWN, or a v2 PROXY command for AF_UNSPEC or AF_UNIX. The
	// connection's socket address then identifies the client.
	Local bool
	// Source is the client's address and port; Dest is the address the
	// client connected to. Both are zero when Local.
	Source, Dest netip.AddrPort
}

// sigMatch is how a byte prefix relates to the two signatures.
type sigMatch int

const (
	sigNone    sigMatch = iota // not a PROXY header
	sigPartial                 // a prefix of a signature: more bytes decide
	sigV1                      // starts with the whole v1 signature
	sigV2                      // starts with the whole v2 signature
)

func matchSignature(b []byte) sigMatch {
	switch {
	case bytes.HasPrefix(b, v1Sig):
		return sigV1
	case bytes.HasPrefix(b, v2Sig):
		return sigV2
	case len(b) < len(v2Sig) && (bytes.HasPrefix(v1Sig, b) || bytes.HasPrefix(v2Sig, b)):
		return sigPartial
	default:
		return sigNone
	}
}

// ParseHeader parses the PROXY header at the start of b and returns it with
// its length in bytes; the bytes after it are the client's.
//
// It returns ErrNoHeader when b does not start with a signature, and
// ErrIncomplete when b is a prefix of what may still become a valid header;
// n is then the number of bytes that suffice to decide (for v1 an upper
// bound, MaxV1). Any other error means the header is malformed.
func ParseHeader(b []byte) (h Header, n int, err error) {
	switch matchSignature(b) {
	case sigNone:
		return Header{}, 0, ErrNoHeader
	case sigPartial:
		return Header{}, v2Fixed, ErrIncomplete
	case sigV1:
		return parseV1(b)
	default:
		return parseV2(b)
	}
}

func parseV1(b []byte) (Header, int, error) {
	end := bytes.IndexByte(b[:min(len(b), MaxV1)], '\n')
	if end < 0 {
		if len(b) >= MaxV1 {
			return Header{}, 0, errors.New("proxy v1: no CRLF within 107 bytes")
		}
		return Header{}, MaxV1, ErrIncomplete
	}
	if end == 0 || b[end-1] != '\r' {
		return Header{}, 0, errors.New("proxy v1: line does not end in CRLF")
	}
	n := end + 1
	line := string(b[len(v1Sig) : end-1])
	if strings.IndexByte(line, '\r') >= 0 {
		return Header{}, 0, errors.New("proxy v1: stray CR")
	}
	f := strings.Split(line, " ")
	h := Header{Version: 1}
	switch f[0] {
	case "UNKNOWN":
		// The receiver ignores the rest of the line.
		h.Local = true
		return h, n, nil
	case "TCP4", "TCP6":
	default:
		return Header{}, 0, fmt.Errorf("proxy v1: unknown protocol %q", truncate(f[0]))
	}
	if len(f) != 5 {
		return Header{}, 0, fmt.Errorf("proxy v1: %d fields, want 5", len(f))
	}
	src, err1 := parseV1Addr(f[0], f[1])
	dst, err2 := parseV1Addr(f[0], f[2])
	sport, err3 := parseV1Port(f[3])
	dport, err4 := parseV1Port(f[4])
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return Header{}, 0, fmt.Errorf("proxy v1: %w", err)
	}
	h.Source = netip.AddrPortFrom(src, sport)
	h.Dest = netip.AddrPortFrom(dst, dport)
	return h, n, nil
}

func parseV1Addr(proto, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return netip.Addr{}, fmt.Errorf("bad address %q", truncate(s))
	case a.Zone() != "":
		return netip.Addr{}, fmt.Errorf("address %q has a zone", truncate(s))
	case proto == "TCP4" && !a.Is4():
		return netip.Addr{}, fmt.Errorf("TCP4 with address %q", truncate(s))
	case proto == "TCP6" && !a.Is6():
		return netip.Addr{}, fmt.Errorf("TCP6 with address %q", truncate(s))
	}
	return a, nil
}

func parseV1Port(s string) (uint16, error) {
	if len(s) == 0 || len(s) > 5 || strings.Trim(s, "0123456789") != "" {
		return 0, fmt.Errorf("bad port %q", truncate(s))
	}
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("bad port %q", truncate(s))
	}
	return uint16(p), nil
}

func parseV2(b []byte) (Header, int, error) {
	if len(b) < v2Fixed {
		return Header{}, v2Fixed, ErrIncomplete
	}
	verCmd, famProto := b[12], b[13]
	if verCmd>>4 != v2Version {
		return Header{}, 0, fmt.Errorf("proxy v2: version %d", verCmd>>4)
	}
	cmd, fam, proto := verCmd&0xF, famProto>>4, famProto&0xF
	if cmd != cmdLocal && cmd != cmdProxy {
		return Header{}, 0, fmt.Errorf("proxy v2: unknown command %#x", cmd)
	}
	if fam > afUnix || proto > protoDgram {
		return Header{}, 0, fmt.Errorf("proxy v2: unknown family/protocol %#02x", famProto)
	}
	size := int(binary.BigEndian.Uint16(b[14:16]))
	if size > MaxV2Payload {
		return Header{}, 0, fmt.Errorf("proxy v2: %d bytes of addresses and TLVs, more than %d", size, MaxV2Payload)
	}
	n := v2Fixed + size
	if len(b) < n {
		return Header{}, n, ErrIncomplete
	}
	body := b[v2Fixed:n]
	h := Header{Version: 2}
	if cmd == cmdLocal {
		// The load balancer's own connection: address information, if
		// any, is ignored.
		h.Local = true
		return h, n, nil
	}
	switch fam {
	case afUnspec, afUnix:
		// Nothing we can identify a client by: use the socket address.
		// (The spec lets a receiver accept these; AF_UNIX still needs
		// its 216 address bytes.)
		if fam == afUnix && size < 216 {
			return Header{}, 0, fmt.Errorf("proxy v2: AF_UNIX with %d address bytes", size)
		}
		h.Local = true
		return h, n, nil
	}
	if proto != protoStream {
		return Header{}, 0, errors.New("proxy v2: not a stream (TCP) connection")
	}
	alen := 4
	if fam == afInet6 {
		alen = 16
	}
	if size < 2*alen+4 {
		return Header{}, 0, fmt.Errorf("proxy v2: %d address bytes, want %d", size, 2*alen+4)
	}
	src, _ := netip.AddrFromSlice(body[:alen])
	dst, _ := netip.AddrFromSlice(body[alen : 2*alen])
	ports := body[2*alen:]
	h.Source = netip.AddrPortFrom(src, binary.BigEndian.Uint16(ports[0:2]))
	h.Dest = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(ports[2:4]))
	return h, n, nil
}

// truncate bounds what an error quotes from untrusted input.
func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
