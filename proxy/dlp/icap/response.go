package icap

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"strconv"
	"strings"
)

// ICAP status codes a REQMOD or OPTIONS transaction can end with
// (RFC 3507 section 4.3.3).
const (
	StatusContinue  = 100
	StatusOK        = 200
	StatusNoContent = 204
)

// Bounds on what a service may send. A response past them is a protocol
// error: the transaction fails (and the failure policy decides).
const (
	maxICAPHeader = 16 << 10 // status line and ICAP headers
	maxHTTPHeader = 64 << 10 // the encapsulated HTTP header sections together
	maxLine       = 4 << 10  // one header or chunk-size line
	maxTrailers   = 64       // trailer lines after the last chunk
)

// ErrProtocol is wrapped by every error about what the service sent.
// Messages never quote the bytes received: a broken service may echo the
// request, and nothing egressd writes may repeat it.
var ErrProtocol = errors.New("icap: protocol error")

func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrProtocol}, args...)...)
}

// Entity names of the Encapsulated header (RFC 3507 section 4.4.1).
const (
	entReqHdr   = "req-hdr"
	entResHdr   = "res-hdr"
	entReqBody  = "req-body"
	entResBody  = "res-body"
	entNullBody = "null-body"
	entOptBody  = "opt-body"
)

// entity is one part of the Encapsulated header: a name and its offset
// from the start of the encapsulated message.
type entity struct {
	name   string
	offset int
}

// response is one ICAP response as read from the wire.
type response struct {
	status int
	header textproto.MIMEHeader
	// reqHdr and resHdr are the raw encapsulated HTTP header sections
	// (nil when absent).
	reqHdr, resHdr []byte
	// body is the decoded encapsulated body; hasBody tells an empty
	// body from none (null-body). sameBody: a req-body equal to the
	// request's own (body is nil then).
	body     []byte
	hasBody  bool
	sameBody bool
}

// readResponse reads one ICAP response. A 100 Continue carries no
// encapsulated message. maxBody bounds the encapsulated body. sent is the
// request's body: a req-body that equals it is compared as it arrives and
// not kept (services that take no 204 echo every request whole).
func readResponse(br *bufio.Reader, maxBody int64, sent []byte) (*response, error) {
	status, hdr, err := readHead(br)
	if err != nil {
		return nil, err
	}
	r := &response{status: status, header: hdr}
	if status == StatusContinue {
		return r, nil
	}
	ents, err := parseEncapsulated(hdr.Values("Encapsulated"))
	if err != nil {
		return nil, err
	}
	if len(ents) == 0 {
		return r, nil
	}
	last := ents[len(ents)-1]
	sections := make([]byte, last.offset)
	if _, err := readFull(br, sections); err != nil {
		return nil, err
	}
	for i, e := range ents[:len(ents)-1] {
		sec := sections[e.offset:ents[i+1].offset]
		switch e.name {
		case entReqHdr:
			r.reqHdr = sec
		case entResHdr:
			r.resHdr = sec
		}
	}
	switch last.name {
	case entReqBody:
		r.hasBody = true
		r.body, r.sameBody, err = readChunkedSame(br, maxBody, sent)
		if err != nil {
			return nil, err
		}
	case entResBody, entOptBody:
		r.hasBody = true
		r.body, err = readChunked(br, maxBody)
		if err != nil {
			return nil, err
		}
	}
	return r, nil
}

// readHead reads the status line and the ICAP headers.
func readHead(br *bufio.Reader) (int, textproto.MIMEHeader, error) {
	budget := maxICAPHeader
	line, err := readLine(br, &budget)
	if err != nil {
		return 0, nil, err
	}
	status, err := parseStatusLine(line)
	if err != nil {
		return 0, nil, err
	}
	hdr := textproto.MIMEHeader{}
	for {
		line, err := readLine(br, &budget)
		if err != nil {
			return 0, nil, err
		}
		if len(line) == 0 {
			return status, hdr, nil
		}
		k, v, err := parseHeaderLine(line)
		if err != nil {
			return 0, nil, err
		}
		hdr[k] = append(hdr[k], v)
	}
}

// parseStatusLine parses "ICAP/1.0 204 No Content".
func parseStatusLine(line []byte) (int, error) {
	rest, ok := bytes.CutPrefix(line, []byte("ICAP/1."))
	if !ok || len(rest) < 5 || !isDigit(rest[0]) || rest[1] != ' ' {
		return 0, protoErr("bad status line")
	}
	code := rest[2:]
	if len(code) > 3 && code[3] != ' ' {
		return 0, protoErr("bad status line")
	}
	code = code[:min(3, len(code))]
	if len(code) != 3 || !isDigit(code[0]) || !isDigit(code[1]) || !isDigit(code[2]) || code[0] == '0' {
		return 0, protoErr("bad status code")
	}
	return int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0'), nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// parseHeaderLine parses "Name: value". Folded lines (obsolete) and
// names that are no token are errors.
func parseHeaderLine(line []byte) (string, string, error) {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return "", "", protoErr("bad header line")
	}
	name := line[:i]
	for _, c := range name {
		if !isTokenChar(c) {
			return "", "", protoErr("bad header name")
		}
	}
	v := bytes.Trim(line[i+1:], " \t")
	for _, c := range v {
		if c < ' ' && c != '\t' || c == 0x7f {
			return "", "", protoErr("control character in a header value")
		}
	}
	return textproto.CanonicalMIMEHeaderKey(string(name)), string(v), nil
}

func isTokenChar(c byte) bool {
	if c <= ' ' || c >= 0x7f {
		return false
	}
	return !strings.ContainsRune(`"(),/:;<=>?@[\]{}`, rune(c))
}

// readLine reads one line ending in CRLF (or a bare LF) and charges it to
// budget. The returned slice is valid until the next read.
func readLine(br *bufio.Reader, budget *int) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(line)+len(frag) > min(*budget, maxLine) {
			return nil, protoErr("line too long")
		}
		if err == nil {
			if line == nil {
				line = frag
			} else {
				line = append(line, frag...)
			}
			break
		}
		if err != bufio.ErrBufferFull {
			return nil, readErr(err, len(line)+len(frag))
		}
		line = append(line, frag...)
	}
	*budget -= len(line)
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// readErr wraps a read failure: an EOF after some bytes of a message is
// an unexpected EOF.
func readErr(err error, got int) error {
	if errors.Is(err, io.EOF) && got > 0 {
		return fmt.Errorf("icap: response cut short: %w", io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("icap: read response: %w", err)
}

func readFull(br *bufio.Reader, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := br.Read(p[n:])
		n += m
		if err != nil {
			if n == len(p) {
				break
			}
			return n, readErr(err, 1)
		}
	}
	return n, nil
}

// parseEncapsulated parses the Encapsulated header: entities in offset
// order, header sections first, then exactly one body entity (or none),
// offsets starting at 0 and within maxHTTPHeader.
func parseEncapsulated(values []string) ([]entity, error) {
	if len(values) == 0 {
		return nil, nil
	}
	if len(values) > 1 {
		return nil, protoErr("more than one Encapsulated header")
	}
	var ents []entity
	seen := map[string]bool{}
	for part := range strings.SplitSeq(values[0], ",") {
		name, off, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, protoErr("bad Encapsulated entry")
		}
		switch name {
		case entReqHdr, entResHdr, entReqBody, entResBody, entNullBody, entOptBody:
		default:
			return nil, protoErr("unknown Encapsulated entity")
		}
		if seen[name] {
			return nil, protoErr("repeated Encapsulated entity")
		}
		seen[name] = true
		if len(off) == 0 || len(off) > 6 {
			return nil, protoErr("bad Encapsulated offset")
		}
		n, err := strconv.Atoi(off)
		if err != nil || n < 0 || n > maxHTTPHeader {
			return nil, protoErr("bad Encapsulated offset")
		}
		if len(ents) == 0 && n != 0 {
			return nil, protoErr("Encapsulated does not start at 0")
		}
		if len(ents) > 0 {
			prev := ents[len(ents)-1]
			if isBody(prev.name) {
				return nil, protoErr("Encapsulated entity after the body")
			}
			if n <= prev.offset {
				return nil, protoErr("Encapsulated offsets out of order")
			}
		}
		ents = append(ents, entity{name, n})
	}
	if last := ents[len(ents)-1]; !isBody(last.name) {
		return nil, protoErr("Encapsulated ends without a body entity")
	}
	return ents, nil
}

func isBody(name string) bool {
	return name == entReqBody || name == entResBody || name == entNullBody || name == entOptBody
}

// readChunked reads an ICAP chunked body (HTTP/1.1 chunked coding; chunk
// extensions such as ieof are ignored) up to and including the empty
// line after the last chunk's trailers.
func readChunked(br *bufio.Reader, max int64) ([]byte, error) {
	body, _, err := readChunkedSame(br, max, nil)
	return body, err
}

// readChunkedSame is readChunked that, while the body read so far equals
// the start of same (non-nil), keeps nothing: same reports a body equal to
// same, returned as nil.
func readChunkedSame(br *bufio.Reader, max int64, same []byte) (body []byte, isSame bool, err error) {
	matching := same != nil
	pos := 0 // bytes matched so far
	for {
		budget := maxLine
		line, err := readLine(br, &budget)
		if err != nil {
			return nil, false, err
		}
		size, err := parseChunkSize(line)
		if err != nil {
			return nil, false, err
		}
		if size == 0 {
			break
		}
		if size > max-int64(pos+len(body)) {
			return nil, false, protoErr("encapsulated body larger than %d bytes", max)
		}
		for left := int(size); left > 0; {
			if matching {
				// Compare in place, in the reader's buffer.
				chunk, err := br.Peek(min(left, br.Size()))
				if len(chunk) == 0 {
					return nil, false, readErr(err, 1)
				}
				if pos+len(chunk) <= len(same) && bytes.Equal(chunk, same[pos:pos+len(chunk)]) {
					pos += len(chunk)
					left -= len(chunk)
					br.Discard(len(chunk))
					continue
				}
				// It differs: keep what matched and read on.
				matching = false
				body = append(make([]byte, 0, min(int64(pos+left), max)), same[:pos]...)
				pos = 0
			}
			n := len(body)
			body = grow(body, left)
			if _, err := readFull(br, body[n:]); err != nil {
				return nil, false, err
			}
			left = 0
		}
		budget = 2
		crlf, err := readLine(br, &budget)
		if err != nil || len(crlf) != 0 {
			return nil, false, protoErr("chunk not followed by CRLF")
		}
	}
	for i := 0; ; i++ {
		if i == maxTrailers {
			return nil, false, protoErr("too many trailer lines")
		}
		budget := maxLine
		line, err := readLine(br, &budget)
		if err != nil {
			return nil, false, err
		}
		if len(line) == 0 {
			break
		}
	}
	if matching {
		if pos == len(same) {
			return nil, true, nil
		}
		body = append([]byte(nil), same[:pos]...)
	}
	if body == nil {
		body = []byte{}
	}
	return body, false, nil
}

// grow extends b by n bytes, doubling capacity so that many small chunks
// do not copy the body over and over.
func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b[:len(b)+n]
	}
	nb := make([]byte, len(b)+n, max(2*cap(b), len(b)+n))
	copy(nb, b)
	return nb
}

// parseChunkSize parses "1a2b" or "1a2b; ieof".
func parseChunkSize(line []byte) (int64, error) {
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	}
	line = bytes.TrimRight(line, " \t")
	if len(line) == 0 || len(line) > 15 {
		return 0, protoErr("bad chunk size")
	}
	var n int64
	for _, c := range line {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, protoErr("bad chunk size")
		}
		n = n<<4 | int64(d)
	}
	return n, nil
}
