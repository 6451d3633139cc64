package dlp

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"strings"

	"github.com/andybalholm/brotli"
)

// Decoding errors. A body that fails to decode is blocked: the origin may
// read it differently, so what the scanner could not read must not pass.
var (
	errUndecodable = errors.New("dlp: body cannot be decoded")
	errBomb        = errors.New("dlp: decoded body expands past the bound")
)

// maxEncodings bounds stacked Content-Encodings (gzip, br twice, ...).
const maxEncodings = 3

// bombRatio: a decoded body larger than max_scan_bytes that is more than
// this many times its encoded size is a decompression bomb, not a large
// upload (gzip's best is about 1000:1 on runs of one byte; real uploads
// compress a few times to a few tens of times).
const bombRatio = 100

// contentCodings returns the Content-Encoding values in the order they
// must be undone (the last applied first), and false for one egressd
// cannot decode.
func contentCodings(h []string) ([]string, bool) {
	var out []string
	for _, v := range h {
		for _, c := range strings.Split(v, ",") {
			c = strings.ToLower(strings.TrimSpace(c))
			switch c {
			case "", "identity":
				continue
			case "gzip", "x-gzip", "deflate", "br":
				out = append(out, c)
			default:
				return nil, false
			}
		}
	}
	if len(out) > maxEncodings {
		return nil, false
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, true
}

// byteReader gives decompressors an io.ByteReader, so that flate reads
// exactly the input it needs instead of buffering ahead (see tailReader).
type byteReader interface {
	io.Reader
	io.ByteReader
}

// undoCoding wraps r with the decoder for coding c.
func undoCoding(r byteReader, c string) (io.Reader, error) {
	switch c {
	case "gzip", "x-gzip":
		z, err := gzip.NewReader(r)
		if err != nil {
			return nil, errUndecodable
		}
		z.Multistream(true)
		return z, nil
	case "deflate":
		// RFC 9110 says zlib; some clients send raw deflate. A zlib
		// header is two bytes whose big-endian value is a multiple of 31
		// with compression method 8.
		br, ok := r.(*bufio.Reader)
		if !ok {
			br = bufio.NewReaderSize(r, 16)
		}
		hdr, _ := br.Peek(2)
		if len(hdr) == 2 && hdr[0]&0x0f == 8 && (uint16(hdr[0])<<8|uint16(hdr[1]))%31 == 0 {
			z, err := zlib.NewReader(br)
			if err != nil {
				return nil, errUndecodable
			}
			return z, nil
		}
		return flate.NewReader(br), nil
	case "br":
		return brotli.NewReader(r), nil
	}
	return nil, errUndecodable
}

// asByteReader returns r as a byteReader, buffering only when it must.
func asByteReader(r io.Reader) byteReader {
	if br, ok := r.(byteReader); ok {
		return br
	}
	return bufio.NewReaderSize(r, 4096)
}

// decodeCodings undoes the content codings over raw.
func decodeCodings(raw io.Reader, codings []string) (io.Reader, error) {
	r := raw
	for _, c := range codings {
		d, err := undoCoding(asByteReader(r), c)
		if err != nil {
			return nil, err
		}
		r = d
	}
	return r, nil
}

// mediaKind classifies a Content-Type for body decoding.
type mediaKind uint8

const (
	mediaPlain mediaKind = iota
	mediaForm
	mediaMultipart
	mediaJSON
)

func mediaOf(contentType string) (mediaKind, string) {
	if contentType == "" {
		return mediaPlain, ""
	}
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return mediaPlain, ""
	}
	switch {
	case mt == "application/x-www-form-urlencoded":
		return mediaForm, ""
	case strings.HasPrefix(mt, "multipart/") && params["boundary"] != "":
		return mediaMultipart, params["boundary"]
	case mt == "application/json" || strings.HasSuffix(mt, "+json"):
		return mediaJSON, ""
	}
	return mediaPlain, ""
}

// formReader percent-decodes an application/x-www-form-urlencoded stream
// ("+" is a space); '&' and '=' pass through and keep fields apart. A
// malformed escape passes through as it is, so nothing hides behind it.
// It decodes in place: output is never longer than input.
type formReader struct {
	r   io.Reader
	buf []byte
	out []byte
	pen int // bytes of an escape cut by a read ("%" or "%X"), kept at buf[0:pen]
	eof bool
}

func newFormReader(r io.Reader) *formReader {
	return &formReader{r: r, buf: make([]byte, 16<<10)}
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func (f *formReader) Read(p []byte) (int, error) {
	for len(f.out) == 0 {
		if f.eof {
			return 0, io.EOF
		}
		n, err := f.r.Read(f.buf[f.pen:])
		if err != nil && err != io.EOF {
			return 0, err
		}
		f.eof = err == io.EOF
		in := f.buf[:f.pen+n]
		f.pen = 0
		o := 0
		for i := 0; i < len(in); i++ {
			c := in[i]
			switch {
			case c == '+':
				c = ' '
			case c == '%' && i+2 >= len(in) && !f.eof:
				f.pen = copy(f.buf[o:], in[i:]) // finished on the next read
				f.out = f.buf[:o]
				if o > 0 {
					// Keep the cut escape after the output: move it to
					// the front once the output is read.
					f.out = append([]byte(nil), f.buf[:o]...)
				}
				copy(f.buf, in[i:])
				i = len(in)
				continue
			case c == '%' && i+2 < len(in):
				h, ok1 := unhex(in[i+1])
				l, ok2 := unhex(in[i+2])
				if ok1 && ok2 {
					c = h<<4 | l
					i += 2
				}
			}
			in[o] = c
			o++
		}
		if f.out == nil || f.pen == 0 {
			f.out = f.buf[:o]
		}
	}
	n := copy(p, f.out)
	f.out = f.out[n:]
	if len(f.out) == 0 {
		f.out = nil
	}
	return n, nil
}

// multipartReader yields each part's header lines and its decoded body
// (quoted-printable by mime/multipart, base64 here), one after the other.
type multipartReader struct {
	mr   *multipart.Reader
	cur  io.Reader
	head []byte
	err  error
}

func newMultipartReader(r io.Reader, boundary string) *multipartReader {
	return &multipartReader{mr: multipart.NewReader(r, boundary)}
}

func (m *multipartReader) Read(p []byte) (int, error) {
	for {
		if len(m.head) > 0 {
			n := copy(p, m.head)
			m.head = m.head[n:]
			return n, nil
		}
		if m.cur != nil {
			n, err := m.cur.Read(p)
			if err == io.EOF {
				m.cur = nil
				if n == 0 {
					continue
				}
				return n, nil
			}
			if err != nil {
				return n, errUndecodable
			}
			return n, nil
		}
		if m.err != nil {
			return 0, m.err
		}
		part, err := m.mr.NextRawPart()
		if err == io.EOF {
			m.err = io.EOF
			continue
		}
		if err != nil {
			m.err = errUndecodable
			continue
		}
		var hb bytes.Buffer
		for k, vs := range part.Header {
			for _, v := range vs {
				hb.WriteString(k + ": " + v + "\n")
			}
		}
		hb.WriteByte('\n')
		m.head = hb.Bytes()
		var body io.Reader = part
		switch strings.ToLower(part.Header.Get("Content-Transfer-Encoding")) {
		case "base64":
			body = base64.NewDecoder(base64.StdEncoding, newlineStripper{part})
		case "quoted-printable":
			body = quotedprintable.NewReader(part)
		}
		m.cur = io.MultiReader(body, strings.NewReader("\n"))
	}
}

// newlineStripper drops CR and LF, which MIME base64 wraps lines with.
type newlineStripper struct{ r io.Reader }

func (s newlineStripper) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	j := 0
	for _, c := range p[:n] {
		if c != '\r' && c != '\n' {
			p[j] = c
			j++
		}
	}
	return j, err
}
