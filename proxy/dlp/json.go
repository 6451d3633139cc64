package dlp

import (
	"io"
	"unicode/utf16"
	"unicode/utf8"
)

// jsonReader undoes the backslash escapes of JSON strings (RFC 8259
// section 7) in an application/json stream: \uXXXX (surrogate pairs
// joined, a lone surrogate becomes U+FFFD), \/ (PHP's json_encode writes
// every slash so, a Slack webhook URL included), \" \\ \b \f \n \r \t. A
// malformed escape passes through as it is, so nothing hides behind it.
// Output is never longer than input: it decodes in place.
type jsonReader struct {
	r   io.Reader
	buf []byte
	out []byte
	pen int // bytes of an escape cut by a read, kept at buf[0:pen]
	eof bool
}

func newJSONReader(r io.Reader) *jsonReader {
	return &jsonReader{r: r, buf: make([]byte, 16<<10)}
}

// maxEscape is the longest escape decoded as one: a surrogate pair.
const maxEscape = 12

func (j *jsonReader) Read(p []byte) (int, error) {
	for len(j.out) == 0 {
		if j.eof && j.pen == 0 {
			return 0, io.EOF
		}
		n := 0
		var err error
		if !j.eof {
			n, err = j.r.Read(j.buf[j.pen:])
			if err != nil && err != io.EOF {
				return 0, err
			}
			j.eof = err == io.EOF
		}
		in := j.buf[:j.pen+n]
		o, rest := unescapeJSON(in, j.eof)
		// The decoded bytes are in in[:o]; an escape the next read
		// completes is in[rest:], moved to the front once the output is
		// read.
		j.out = append(j.out[:0], in[:o]...)
		j.pen = copy(j.buf, in[rest:])
	}
	n := copy(p, j.out)
	j.out = j.out[n:]
	return n, nil
}

// unescapeJSON decodes the escapes of in, in place, and returns the length
// of the output and where the unfinished escape at the end starts (len(in)
// when there is none; at eof there never is).
func unescapeJSON(in []byte, eof bool) (out, rest int) {
	o := 0
	i := 0
	for i < len(in) {
		c := in[i]
		if c != '\\' {
			in[o] = c
			o++
			i++
			continue
		}
		if !eof && len(in)-i < maxEscape {
			// Possibly cut: decide with the next read.
			if need := escapeLen(in[i:]); need < 0 || need > len(in)-i {
				return o, i
			}
		}
		n, r, size := decodeEscape(in[i:])
		if n == 0 {
			in[o] = c // malformed: the backslash passes through
			o++
			i++
			continue
		}
		if r >= 0 {
			o += utf8.EncodeRune(in[o:], r)
		} else {
			in[o] = byte(-r - 1)
			o++
		}
		i += size
		_ = n
	}
	return o, len(in)
}

// escapeLen is how many bytes the escape at b[0] needs to be decided: -1
// when b is too short to tell.
func escapeLen(b []byte) int {
	if len(b) < 2 {
		return -1
	}
	if b[1] != 'u' {
		return 2
	}
	if len(b) < 6 {
		return -1
	}
	r, ok := hex4(b[2:6])
	if ok && utf16.IsSurrogate(r) && r < 0xdc00 {
		return maxEscape // a high surrogate: is a low one next?
	}
	return 6
}

// decodeEscape decodes the escape at b[0] (a backslash). It returns n > 0
// and either a rune (r >= 0) or a single byte (as -byte-1), and size, the
// bytes consumed; n == 0 when the escape is malformed.
func decodeEscape(b []byte) (n int, r rune, size int) {
	if len(b) < 2 {
		return 0, 0, 0
	}
	switch b[1] {
	case '"', '\\', '/':
		return 1, -rune(b[1]) - 1, 2
	case 'b':
		return 1, -'\b' - 1, 2
	case 'f':
		return 1, -'\f' - 1, 2
	case 'n':
		return 1, -'\n' - 1, 2
	case 'r':
		return 1, -'\r' - 1, 2
	case 't':
		return 1, -'\t' - 1, 2
	case 'u':
	default:
		return 0, 0, 0
	}
	if len(b) < 6 {
		return 0, 0, 0
	}
	r, ok := hex4(b[2:6])
	if !ok {
		return 0, 0, 0
	}
	if !utf16.IsSurrogate(r) {
		return 1, r, 6
	}
	if r < 0xdc00 && len(b) >= maxEscape && b[6] == '\\' && b[7] == 'u' {
		if lo, ok := hex4(b[8:12]); ok {
			if pair := utf16.DecodeRune(r, lo); pair != utf8.RuneError {
				return 1, pair, maxEscape
			}
		}
	}
	return 1, utf8.RuneError, 6
}

func hex4(b []byte) (rune, bool) {
	var r rune
	for _, c := range b[:4] {
		d, ok := unhex(c)
		if !ok {
			return 0, false
		}
		r = r<<4 | rune(d)
	}
	return r, true
}
