package dlp

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// benchBodies are 1 MiB bodies of the kinds egressd forwards: the benign
// corpus (JSON with ids, timestamps and amounts, trace headers, hashes,
// base64 blobs, minified JS: dense in digits and in near-keywords), plain
// text, base64 and random binary.
func benchBodies() map[string][]byte {
	const size = 1 << 20
	fill := func(parts ...string) []byte {
		var b bytes.Buffer
		for b.Len() < size {
			for _, p := range parts {
				b.WriteString(p)
				b.WriteByte('\n')
			}
		}
		return b.Bytes()[:size]
	}
	r := mrand.New(mrand.NewPCG(3, 4))
	raw := make([]byte, size)
	for i := range raw {
		raw[i] = byte(r.Uint32())
	}
	var api bytes.Buffer
	for k := 0; api.Len() < size; k++ {
		fmt.Fprintf(&api, `{"id":"%08x-%04x-4%03x-a%03x-%012x","created_at":"2026-12-%02dT%02d:%02d:%02d.%03dZ","amount":%d.%02d,`+
			`"currency":"EUR","qty":%d,"sku":"SKU-%06d","customer":{"id":%d,"name":"Customer %d","email":"c%d@example.com",`+
			`"phone":"+1-415-555-%04d"},"note":"refund and customer delayed warehouse with parcel priority invoice","thumb":"%s"},`,
			r.Uint32(), r.IntN(1<<16), r.IntN(1<<12), r.IntN(1<<12), r.Uint64()>>16, 1+k%28, k%24, k%60, (k*7)%60, k%1000,
			r.IntN(100000), r.IntN(100), 1+r.IntN(20), r.IntN(1000000), r.IntN(1e7), k, k, r.IntN(10000),
			base64.StdEncoding.EncodeToString(raw[k%1000:k%1000+24+k%40]))
	}
	return map[string][]byte{
		"api":    api.Bytes()[:size],
		"benign": fill(benignCorpus()...),
		"text":   fill(strings.Repeat("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor. ", 20)),
		"base64": []byte(base64.StdEncoding.EncodeToString(raw))[:size],
		"binary": raw,
	}
}

func BenchmarkScan(b *testing.B) {
	m := allDetectors(b)
	for name, body := range benchBodies() {
		b.Run(name, func(b *testing.B) {
			s := m.NewStream(PartBody, "")
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				s.Reset(PartBody, "")
				for p := body; len(p) > 0; {
					n := min(32<<10, len(p))
					s.Write(p[:n])
					p = p[n:]
				}
				s.Close()
				if len(s.found) > 0 {
					b.Fatalf("findings %v", s.found)
				}
			}
		})
	}
}

// BenchmarkInspect is the whole inspection of a 1 MiB POST: holding the
// body, decoding, scanning, and handing the held bytes on.
func BenchmarkInspect(b *testing.B) {
	r, err := Compile(Config{
		DefaultProfile: "all", MaxScanBytes: 1 << 20, Oversize: OversizeBlock,
		ICAP:     ICAPConfig{Timeout: 1, Failure: FailureClosed},
		Profiles: map[string]ProfileConfig{"all": {Detectors: BuiltinDetectors}},
	})
	if err != nil {
		b.Fatal(err)
	}
	e := NewEngine(r)
	u, _ := url.Parse("http://upload.test/api/v1/items")
	for _, name := range []string{"api", "benign", "text"} {
		body := benchBodies()[name]
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				h := http.Header{"Content-Type": {"application/json"}, "User-Agent": {"bench/1"}}
				out := e.Inspect(context.Background(), "", &Request{Method: "POST", URL: u, Header: h, ContentLength: int64(len(body))},
					io.NopCloser(bytes.NewReader(body)))
				if out.Action != Forward {
					b.Fatalf("action %d %v", out.Action, out.Findings)
				}
				io.Copy(io.Discard, out.Body)
				out.Body.Close()
			}
		})
	}
}
