package icap

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"
)

// FuzzReadResponse: whatever a service sends, reading it never panics,
// never returns a body past the bound, and a body that was read re-reads
// the same from a canonical encoding.
func FuzzReadResponse(f *testing.F) {
	for _, s := range []string{
		"ICAP/1.0 204 No Content\r\nISTag: \"T1\"\r\nEncapsulated: null-body=0\r\n\r\n",
		"ICAP/1.0 100 Continue\r\n\r\n",
		"ICAP/1.0 200 OK\r\nEncapsulated: res-hdr=0, res-body=45\r\n\r\nHTTP/1.1 403 Forbidden\r\nContent-Type: x/y\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"ICAP/1.0 200 OK\r\nEncapsulated: req-hdr=0, req-body=44\r\n\r\nPOST http://a.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n3; ext\r\nabc\r\n0; ieof\r\nTrailer: x\r\n\r\n",
		"ICAP/1.0 200 OK\r\nEncapsulated: req-hdr=0, null-body=44\r\n\r\nGET http://a.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n",
		"ICAP/1.0 200 OK\r\nMethods: REQMOD\r\nPreview: 1024\r\nMax-Connections: 3\r\nOptions-TTL: 60\r\nEncapsulated: opt-body=0\r\n\r\n4\r\nopts\r\n0\r\n\r\n",
		"ICAP/1.0 500 Server Error\r\n\r\n",
		"ICAP/1.0 200 OK\nEncapsulated: res-hdr=0, res-body=17\n\nHTTP/1.0 403 X\r\n\r\n0\n\n",
		// c-icap 0.5.10's answers, as captured: OPTIONS, 204, an echo, a block.
		"ICAP/1.0 200 OK\r\nMethods: RESPMOD, REQMOD\r\nService: C-ICAP/0.5.10 server - Echo demo service\r\nISTag: \"CI0001-XXXXXXXXX\"\r\nTransfer-Preview: *\r\nOptions-TTL: 3600\r\nDate: Mon, 07 Dec 2026 05:06:59 GMT\r\nPreview: 1024\r\nAllow: 204\r\nX-Include: X-Authenticated-User, X-Authenticated-Groups\r\nEncapsulated: null-body=0\r\n\r\n",
		"ICAP/1.0 204 Unmodified\r\nServer: C-ICAP/0.5.10\r\nConnection: keep-alive\r\nISTag: \"CI0001-XXXXXXXXX\"\r\n\r\n",
		"ICAP/1.0 200 OK\r\nServer: C-ICAP/0.5.10\r\nConnection: keep-alive\r\nISTag: \"CI0001-XXXXXXXXX\"\r\nEncapsulated: req-hdr=0, req-body=156\r\n\r\nPOST http://upload.test/x HTTP/1.1\r\nHost: upload.test\r\nContent-Type: text/plain\r\nContent-Length: 10\r\nVia: ICAP/1.0 vm (C-ICAP/0.5.10 Echo demo service )\r\n\r\na\r\nclean body\r\n0\r\n\r\n",
		"ICAP/1.0 200 OK\r\nServer: C-ICAP/0.5.10\r\nConnection: keep-alive\r\nISTag: \"CI0001-XXXXXXXXX\"\r\nX-ICAP-Profile: dlp\r\nX-Attribute: secret=10\r\nX-Response-Info: block\r\nEncapsulated: res-hdr=0, res-body=108\r\n\r\nHTTP/1.0 403 Forbidden\r\nServer: C-ICAP\r\nConnection: close\r\nContent-Type: text/html\r\nContent-Language: en\r\n\r\n13\r\n<html>BLOCKED</html\r\n0\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	const max = 4096
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := readResponse(bufio.NewReader(bytes.NewReader(data)), max, nil)
		if err != nil {
			return
		}
		if len(r.body) > max {
			t.Fatalf("body of %d bytes past the bound %d", len(r.body), max)
		}
		if r.status < 100 || r.status > 999 {
			t.Fatalf("status %d", r.status)
		}
		if r.status != StatusContinue {
			parseOptions(r, time.Time{})
			if res, err := interpret(r); err == nil {
				if res.Response != nil {
					b, _ := io.ReadAll(res.Response.Body)
					if !bytes.Equal(b, r.body) {
						t.Fatal("response body differs from the encapsulated body")
					}
				}
			}
		}
		// Reading against the request's own body gives the same body,
		// whether it turns out equal (and is not kept) or not.
		for _, sent := range [][]byte{r.body, r.body[:len(r.body)/2], append(bytes.Clone(r.body), 'x'), {}} {
			r2, err := readResponse(bufio.NewReader(bytes.NewReader(data)), max, sent)
			if err != nil {
				t.Fatalf("read against a sent body: %v", err)
			}
			got := r2.body
			if r2.sameBody {
				got = sent
			}
			if !bytes.Equal(got, r.body) || r2.sameBody && !bytes.Equal(sent, r.body) {
				t.Fatalf("against %q: body %q (same %v), want %q", sent, got, r2.sameBody, r.body)
			}
		}
		if r.hasBody {
			var enc bytes.Buffer
			if len(r.body) > 0 {
				fmt.Fprintf(&enc, "%x\r\n%s\r\n", len(r.body), r.body)
			}
			enc.WriteString("0\r\n\r\n")
			again, err := readChunked(bufio.NewReader(&enc), max)
			if err != nil || !bytes.Equal(again, r.body) {
				t.Fatalf("re-read body: %v", err)
			}
		}
	})
}

// FuzzChunked: a body cut in chunks of any size, with extensions, reads
// back whole; a bound smaller than the body is a protocol error.
func FuzzChunked(f *testing.F) {
	f.Add([]byte("hello world"), uint8(3), true, uint16(100))
	f.Add([]byte{}, uint8(1), false, uint16(0))
	f.Add(bytes.Repeat([]byte{0, '\r', '\n'}, 50), uint8(7), true, uint16(10))
	f.Fuzz(func(t *testing.T, body []byte, size uint8, ext bool, bound uint16) {
		n := max(int(size), 1)
		var enc bytes.Buffer
		for rest := body; len(rest) > 0; {
			k := min(n, len(rest))
			fmt.Fprintf(&enc, "%X", k)
			if ext {
				enc.WriteString(" ; name=value")
			}
			enc.WriteString("\r\n")
			enc.Write(rest[:k])
			enc.WriteString("\r\n")
			rest = rest[k:]
		}
		enc.WriteString("0; ieof\r\n\r\n")
		got, err := readChunked(bufio.NewReader(&enc), int64(bound))
		if len(body) > int(bound) {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("body of %d past bound %d: %v", len(body), bound, err)
			}
			return
		}
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("read back %q, %v; want %q", got, err, body)
		}
	})
}
