package upstream

import (
	"bytes"
	"errors"
	"fmt"
	"net"

	"github.com/egressd/egressd/proxy/rawio"
)

// maxHead bounds a parent's answer head (status line and headers).
const maxHead = 8 << 10

var (
	errHeadTooLarge = errors.New("answer head larger than 8 KiB")
	errNotHTTP      = errors.New("not an HTTP/1.x status line")
)

// headEnd returns the length of the head at the start of b (up to and
// including the empty line that ends it), or -1 when b holds no complete
// head. RFC 9112 section 2.2 lets a recipient take a bare LF as a line
// end; a parent that sends one is understood.
func headEnd(b []byte) int {
	for i := 0; i < len(b); i++ {
		if b[i] != '\n' {
			continue
		}
		switch {
		case i+1 < len(b) && b[i+1] == '\n':
			return i + 2
		case i+2 < len(b) && b[i+1] == '\r' && b[i+2] == '\n':
			return i + 3
		}
	}
	return -1
}

// ParseStatus reads the status code of an HTTP/1.x answer head: "HTTP/1.1
// 200 Connection established". The reason phrase may be empty.
func ParseStatus(head []byte) (int, error) {
	line, _, _ := bytes.Cut(head, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[7] < '0' || line[7] > '9' ||
		line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return 0, fmt.Errorf("%w: %q", errNotHTTP, printable(line))
	}
	status := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: %q", errNotHTTP, printable(line))
		}
		status = status*10 + int(c-'0')
	}
	if status < 100 {
		return 0, fmt.Errorf("%w: %q", errNotHTTP, printable(line))
	}
	return status, nil
}

// printable bounds what of a parent's answer goes into an error.
func printable(b []byte) []byte {
	if len(b) > 64 {
		b = b[:64]
	}
	return b
}

// readHead reads a parent's answer head from c into buf with plain reads
// (c's read deadline applies) and returns it and what the last read
// brought past its end: the tunnel's first bytes, when the parent sent
// them in the same segment. A parent answering in one segment costs one
// read once the answer is there.
func readHead(c *net.TCPConn, buf []byte) (head, rest []byte, err error) {
	have := 0
	for {
		n, err := rawio.Read(c, buf[have:])
		if n > 0 {
			from := max(0, have-2) // a line end split across reads
			if end := headEnd(buf[from : have+n]); end >= 0 {
				return buf[:from+end], buf[from+end : have+n], nil
			}
			have += n
			if have == len(buf) {
				return nil, nil, errHeadTooLarge
			}
		}
		if err != nil {
			return nil, nil, err
		}
	}
}
