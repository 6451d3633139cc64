package dlp

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"testing"
	"unicode/utf8"
)

// FuzzChunkedScan: scanning a stream in pieces finds exactly what scanning
// it whole finds (the scanner keeps what a match across a cut needs).
func FuzzChunkedScan(f *testing.F) {
	for _, c := range secretCorpus(f) {
		f.Add([]byte("x "+c.body+" y"), uint64(7), uint16(13))
	}
	f.Add([]byte("4111 1111 1111 1111 and 123-45-6780"), uint64(1), uint16(3))
	m := allDetectors(f)
	f.Fuzz(func(t *testing.T, data []byte, seed uint64, step uint16) {
		whole := sortFindings(m.scanAll(data, PartBody, ""))
		var cuts []int
		s := int(step%97) + 1
		for c, k := 0, seed; c < len(data); k = k*6364136223846793005 + 1442695040888963407 {
			c += 1 + int(k>>33)%s
			cuts = append(cuts, c)
		}
		if got := chunked(m, data, cuts); !slices.Equal(got, whole) {
			t.Fatalf("cuts %v: %v, whole buffer %v", cuts, got, whole)
		}
	})
}

// referenceForm is the obvious whole-buffer form decoding.
func referenceForm(in []byte) []byte {
	var out []byte
	for i := 0; i < len(in); i++ {
		c := in[i]
		switch {
		case c == '+':
			c = ' '
		case c == '%' && i+2 < len(in):
			h, ok1 := unhex(in[i+1])
			l, ok2 := unhex(in[i+2])
			if ok1 && ok2 {
				c = h<<4 | l
				i += 2
			}
		}
		out = append(out, c)
	}
	return out
}

// oneByte reads one byte at a time, so escapes are cut everywhere.
type oneByte struct{ r io.Reader }

func (o oneByte) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1]
	}
	return o.r.Read(p)
}

func FuzzFormReader(f *testing.F) {
	f.Add([]byte("a=1&b=%41%4a+c%zz%4"))
	f.Add([]byte("%"))
	f.Add([]byte("t=%67%68p_x%2"))
	f.Fuzz(func(t *testing.T, in []byte) {
		want := referenceForm(in)
		for _, r := range []io.Reader{bytes.NewReader(in), oneByte{bytes.NewReader(in)}} {
			got, err := io.ReadAll(newFormReader(r))
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%q: got %q (%v), want %q", in, got, err, want)
			}
		}
	})
}

// FuzzDecodeBody: any body under any coding and media type decodes
// without a panic, and never yields more than max_scan_bytes.
func FuzzDecodeBody(f *testing.F) {
	f.Add([]byte("hello"), "gzip", "text/plain")
	f.Add(gz([]byte("a=%41")), "gzip", "application/x-www-form-urlencoded")
	f.Add([]byte("--b\r\nContent-Transfer-Encoding: base64\r\n\r\naGk=\r\n--b--\r\n"), "", "multipart/form-data; boundary=b")
	f.Add([]byte("\x1b\x0a\x00\xf8\xa5\x02\x00"), "br", "")
	f.Add([]byte("x\x9c\x03\x00\x00\x00\x00\x01"), "deflate", "")
	const max = 4096
	f.Fuzz(func(t *testing.T, raw []byte, coding, ctype string) {
		h := http.Header{"Content-Encoding": {coding}, "Content-Type": {ctype}}
		for _, complete := range []bool{true, false} {
			codings, ok := contentCodings(h.Values("Content-Encoding"))
			media, boundary := mediaOf(ctype)
			b := &Body{raw: raw, complete: complete, codings: codings, codingOK: ok, media: media, boundary: boundary, max: max}
			n, _ := io.Copy(io.Discard, b.Decoded())
			if n > max {
				t.Fatalf("decoded %d bytes, max %d", n, max)
			}
			b.stat()
		}
	})
}

// FuzzJSONReader: read in pieces of any size, the JSON unescaper gives
// what it gives in one piece; where encoding/json reads the input as a
// string, both agree.
func FuzzJSONReader(f *testing.F) {
	f.Add([]byte(`{"url":"https:\/\/hooks.slack.com\/services\/T1\/B2\/x","s":"\u0067hp_\ud83d\ude00\n\"q\"\\"}`))
	f.Add([]byte(`\u12`))
	f.Add([]byte(`\ud800\u0041 \udc00 \x \u00zz \`))
	f.Fuzz(func(t *testing.T, in []byte) {
		want := bytes.Clone(in)
		n, _ := unescapeJSON(want, true)
		want = want[:n]
		for _, r := range []io.Reader{bytes.NewReader(in), oneByte{bytes.NewReader(in)}} {
			got, err := io.ReadAll(newJSONReader(r))
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%q: got %q (%v), want %q", in, got, err, want)
			}
		}
		if len(want) > len(in) {
			t.Fatalf("%q: output longer than input", in)
		}
		var s string
		if utf8.Valid(in) && json.Unmarshal(append(append([]byte{'"'}, in...), '"'), &s) == nil && s != string(want) {
			t.Fatalf("%q: encoding/json reads %q, the unescaper %q", in, s, want)
		}
	})
}
