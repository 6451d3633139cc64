package dlp

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"testing"

	"github.com/andybalholm/brotli"
)

// testSecret is a GitHub token with a valid checksum.
var testSecret = "ghp_" + "abcdefghijklmnopqrstuvwxyz0123" + GitHubChecksum("abcdefghijklmnopqrstuvwxyz0123")

func testEngine(t *testing.T, oversize, mode string, max int64) *Engine {
	t.Helper()
	r, err := Compile(Config{
		DefaultProfile: "strict", MaxScanBytes: max, Oversize: oversize,
		ICAP: ICAPConfig{Timeout: 1, Failure: FailureClosed},
		Profiles: map[string]ProfileConfig{
			"strict": {Mode: mode, Detectors: BuiltinDetectors, Patterns: []PatternConfig{{Name: "internal_id", Regex: "ACME-[0-9]{8}"}}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return NewEngine(r)
}

func inspect(t *testing.T, e *Engine, target string, h http.Header, body []byte) *Outcome {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	if h == nil {
		h = http.Header{}
	}
	var rc io.ReadCloser = http.NoBody
	if body != nil {
		rc = io.NopCloser(bytes.NewReader(body))
	}
	return e.Inspect(context.Background(), "", &Request{Method: "POST", URL: u, Header: h, ContentLength: int64(len(body))}, rc)
}

func locations(fs []Finding) string {
	var s []string
	for _, f := range fs {
		s = append(s, f.Detector+"@"+f.Location())
	}
	return strings.Join(s, ",")
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

// TestInspectLocations runs with the scanner this CPU has and with the
// fallback forced (what a CPU without AVX2, or not amd64, scans with).
func TestInspectLocations(t *testing.T) {
	t.Run("default", inspectLocations)
	t.Run("fallback", func(t *testing.T) {
		forceFallback(t)
		inspectLocations(t)
	})
}

func inspectLocations(t *testing.T) {
	e := testEngine(t, OversizeBlock, ModeEnforce, 1<<20)
	zl := func(b []byte) []byte {
		var buf bytes.Buffer
		w := zlib.NewWriter(&buf)
		w.Write(b)
		w.Close()
		return buf.Bytes()
	}
	raw := func(b []byte) []byte {
		var buf bytes.Buffer
		w, _ := flate.NewWriter(&buf, 5)
		w.Write(b)
		w.Close()
		return buf.Bytes()
	}
	br := func(b []byte) []byte {
		var buf bytes.Buffer
		w := brotli.NewWriter(&buf)
		w.Write(b)
		w.Close()
		return buf.Bytes()
	}
	var mp bytes.Buffer
	mw := multipart.NewWriter(&mp)
	mw.WriteField("note", "hello")
	pw, _ := mw.CreatePart(textproto.MIMEHeader{"Content-Transfer-Encoding": {"base64"}, "Content-Disposition": {`form-data; name="f"`}})
	pw.Write([]byte(base64.StdEncoding.EncodeToString([]byte("key=" + testSecret))))
	mw.Close()
	pad := bytes.Repeat([]byte("x"), 100)
	cases := []struct {
		name   string
		target string
		h      http.Header
		body   []byte
		want   string
	}{
		{"clean", "http://h.test/a?b=c", nil, []byte(`{"a":1}`), ""},
		{"body", "http://h.test/", nil, append(append(pad, ' '), testSecret...), "github_token@body:101"},
		{"header", "http://h.test/", http.Header{"Authorization": {"token " + testSecret}}, nil, "github_token@header:Authorization"},
		{"header name", "http://h.test/", http.Header{"X-" + testSecret: {"1"}}, nil, "github_token@header"},
		{"url", "http://h.test/x?t=" + testSecret, nil, nil, "github_token@url"},
		{"url escaped", "http://h.test/x?t=%67hp_" + testSecret[4:], nil, nil, "github_token@url"},
		{"custom", "http://h.test/", nil, []byte("id ACME-12345678"), "internal_id@body:3"},
		{"gzip", "http://h.test/", http.Header{"Content-Encoding": {"gzip"}}, gz(append(pad, " "+testSecret...)), "github_token@body:101"},
		{"deflate zlib", "http://h.test/", http.Header{"Content-Encoding": {"deflate"}}, zl([]byte(testSecret)), "github_token@body:0"},
		{"deflate raw", "http://h.test/", http.Header{"Content-Encoding": {"deflate"}}, raw([]byte(testSecret)), "github_token@body:0"},
		{"br", "http://h.test/", http.Header{"Content-Encoding": {"br"}}, br([]byte(testSecret)), "github_token@body:0"},
		{"gzip then br", "http://h.test/", http.Header{"Content-Encoding": {"gzip, br"}}, br(gz([]byte(testSecret))), "github_token@body:0"},
		{"form", "http://h.test/", http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, []byte("a=1&t=%67%68p_" + testSecret[4:]), "github_token@body:6"},
		{"multipart base64", "http://h.test/", http.Header{"Content-Type": {mw.FormDataContentType()}}, mp.Bytes(), "github_token"},
		{"unknown coding", "http://h.test/", http.Header{"Content-Encoding": {"zstd"}}, []byte("whatever"), "undecodable_body@body:0"},
		{"corrupt gzip", "http://h.test/", http.Header{"Content-Encoding": {"gzip"}}, []byte("\x1f\x8b\x08\x00garbage-garbage-garbage"), "undecodable_body"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := inspect(t, e, c.target, c.h, c.body)
			got := locations(out.Findings)
			if c.name == "multipart base64" || c.name == "corrupt gzip" {
				got, _, _ = strings.Cut(got, "@")
			}
			if got != c.want {
				t.Fatalf("findings %q, want %q", got, c.want)
			}
			wantAction := Forward
			if c.want != "" {
				wantAction = Block
			}
			if out.Action != wantAction {
				t.Fatalf("action %v, want %v", out.Action, wantAction)
			}
			if out.Action == Forward && c.body != nil {
				got, _ := io.ReadAll(out.Body)
				if !bytes.Equal(got, c.body) {
					t.Fatalf("forwarded body differs")
				}
			}
		})
	}
}

func TestDecompressionBomb(t *testing.T) {
	e := testEngine(t, OversizeAllow, ModeEnforce, 64<<10)
	bomb := gz(make([]byte, 64<<20)) // 64 MiB of zeros, ~64 KiB compressed
	out := inspect(t, e, "http://h.test/", http.Header{"Content-Encoding": {"gzip"}}, bomb)
	if out.Action != Block || locations(out.Findings) != "decompression_bomb@body:65536" {
		t.Fatalf("action %v findings %q, want a decompression_bomb block", out.Action, locations(out.Findings))
	}
	// A large upload that compresses a few times is not a bomb: past the
	// bound it is oversize (allowed here).
	big := make([]byte, 256<<10)
	for i := range big {
		big[i] = "abcdefghijklmnop"[i*7%16] ^ byte(i>>9)
	}
	out = inspect(t, e, "http://h.test/", http.Header{"Content-Encoding": {"gzip"}}, gz(big))
	if out.Action != Forward || len(out.Findings) != 0 {
		t.Fatalf("action %v findings %q, want forward", out.Action, locations(out.Findings))
	}
}

func TestOversize(t *testing.T) {
	const max = 4096
	head := bytes.Repeat([]byte("a"), max+1000)
	withSecret := append(append(bytes.Clone(head), ' '), testSecret...)
	withSecret = append(withSecret, bytes.Repeat([]byte("\nz"), 2500)...)
	t.Run("block", func(t *testing.T) {
		out := inspect(t, testEngine(t, OversizeBlock, ModeEnforce, max), "http://h.test/", nil, head)
		if out.Action != Block || locations(out.Findings) != "oversize@body:4096" {
			t.Fatalf("action %v findings %q", out.Action, locations(out.Findings))
		}
	})
	t.Run("allow", func(t *testing.T) {
		out := inspect(t, testEngine(t, OversizeAllow, ModeEnforce, max), "http://h.test/", nil, withSecret)
		got, err := io.ReadAll(out.Body)
		if out.Action != Forward || err != nil || !bytes.Equal(got, withSecret) {
			t.Fatalf("action %v err %v, forwarded %d of %d bytes", out.Action, err, len(got), len(withSecret))
		}
	})
	t.Run("stream clean", func(t *testing.T) {
		out := inspect(t, testEngine(t, OversizeStream, ModeEnforce, max), "http://h.test/", nil, head)
		got, err := io.ReadAll(out.Body)
		if out.Action != Forward || err != nil || !bytes.Equal(got, head) {
			t.Fatalf("action %v err %v, forwarded %d of %d bytes", out.Action, err, len(got), len(head))
		}
	})
	t.Run("stream cut", func(t *testing.T) {
		out := inspect(t, testEngine(t, OversizeStream, ModeEnforce, max), "http://h.test/", nil, withSecret)
		got, err := io.ReadAll(out.Body)
		if !errors.Is(err, ErrCut) || !out.Cut() {
			t.Fatalf("err %v, want ErrCut", err)
		}
		if bytes.Contains(got, []byte(testSecret[len(testSecret)-6:])) {
			t.Fatalf("the secret's tail was forwarded")
		}
		if locations(out.TailFindings()) != "github_token@body:5097" {
			t.Fatalf("tail findings %q", locations(out.TailFindings()))
		}
	})
	t.Run("stream cut gzip", func(t *testing.T) {
		big := append(bytes.Repeat([]byte("0123456789abcdef"), 20000), " "+testSecret+"\n"...)
		big = append(big, bytes.Repeat([]byte("q"), 100000)...)
		out := inspect(t, testEngine(t, OversizeStream, ModeEnforce, max), "http://h.test/", http.Header{"Content-Encoding": {"gzip"}}, gz(big))
		got, err := io.ReadAll(out.Body)
		if !errors.Is(err, ErrCut) {
			t.Fatalf("err %v, want ErrCut", err)
		}
		// What was forwarded decodes to less than the secret's end.
		zr, _ := gzip.NewReader(bytes.NewReader(got))
		dec, _ := io.ReadAll(zr)
		if bytes.Contains(dec, []byte(testSecret)) {
			t.Fatalf("the whole secret was forwarded (%d decoded bytes)", len(dec))
		}
	})
	t.Run("stream cut across the held part's end", func(t *testing.T) {
		// The plain body's scanner goes on from the held part: a secret
		// that starts before max_scan_bytes and ends after is found.
		across := append(bytes.Repeat([]byte("b"), max-12), ' ')
		across = append(append(across, testSecret...), bytes.Repeat([]byte(" z"), 3000)...)
		out := inspect(t, testEngine(t, OversizeStream, ModeEnforce, max), "http://h.test/", nil, across)
		got, err := io.ReadAll(out.Body)
		if !errors.Is(err, ErrCut) || bytes.Contains(got, []byte(testSecret[len(testSecret)-6:])) {
			t.Fatalf("err %v, forwarded %d bytes", err, len(got))
		}
		if locations(out.TailFindings()) != "github_token@body:4085" {
			t.Fatalf("tail findings %q", locations(out.TailFindings()))
		}
	})
	t.Run("report held and tail", func(t *testing.T) {
		both := append([]byte("t="+testSecret+" "), withSecret...)
		out := inspect(t, testEngine(t, OversizeStream, ModeReport, max), "http://h.test/", nil, both)
		got, err := io.ReadAll(out.Body)
		if err != nil || !bytes.Equal(got, both) || locations(out.Findings) != "github_token@body:2" ||
			locations(out.TailFindings()) != "github_token@body:5140" {
			t.Fatalf("err %v forwarded %d bytes, findings %q tail %q", err, len(got), locations(out.Findings), locations(out.TailFindings()))
		}
	})
	t.Run("report", func(t *testing.T) {
		out := inspect(t, testEngine(t, OversizeStream, ModeReport, max), "http://h.test/", nil, withSecret)
		got, err := io.ReadAll(out.Body)
		if err != nil || !bytes.Equal(got, withSecret) || locations(out.TailFindings()) != "github_token@body:5097" {
			t.Fatalf("err %v forwarded %d bytes, tail findings %q", err, len(got), locations(out.TailFindings()))
		}
	})
}

// The held buffer comes from a pool: a Close while a Read copies from it
// (http.Transport does that) must not hand it to another request early.
func TestHeldBodyCloseDuringRead(t *testing.T) {
	e := testEngine(t, OversizeBlock, ModeEnforce, 1<<20)
	body := bytes.Repeat([]byte("payload "), 100000)
	for range 20 {
		u, _ := url.Parse("http://h.test/")
		out := e.Inspect(context.Background(), "", &Request{Method: "POST", URL: u, Header: http.Header{}, ContentLength: -1},
			io.NopCloser(bytes.NewReader(body)))
		done := make(chan []byte)
		go func() {
			got, _ := io.ReadAll(out.Body)
			done <- got
		}()
		out.Body.Close()
		// Another request takes the buffer back and fills it.
		other := inspect(t, e, "http://h.test/", nil, bytes.Repeat([]byte("X"), 900000))
		got := <-done
		if bytes.Contains(got, []byte("X")) {
			t.Fatal("a closed body read another request's bytes")
		}
		other.Body.Close()
	}
}

func TestReportModeForwards(t *testing.T) {
	e := testEngine(t, OversizeBlock, ModeReport, 1<<20)
	body := []byte("t=" + testSecret)
	out := inspect(t, e, "http://h.test/", nil, body)
	got, _ := io.ReadAll(out.Body)
	if out.Action != Forward || !out.Report || locations(out.Findings) != "github_token@body:2" || !bytes.Equal(got, body) {
		t.Fatalf("action %v report %v findings %q", out.Action, out.Report, locations(out.Findings))
	}
}

func TestCompileErrors(t *testing.T) {
	_, err := Compile(Config{
		DefaultProfile: "nope", MaxScanBytes: 0, Oversize: "drop",
		ICAP: ICAPConfig{URL: "http://x", Failure: "maybe"},
		Profiles: map[string]ProfileConfig{
			"a": {Mode: "loud", Detectors: []string{"aws_access_key", "crystal_ball"}, Patterns: []PatternConfig{{Name: "x", Regex: "[0-9]+"}, {Name: "aws_access_key", Regex: "ABC"}}},
			"b": {},
		},
	})
	var paths []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		paths = append(paths, e.(*FieldError).Path)
	}
	want := "max_scan_bytes oversize profiles.a.mode profiles.a.detectors[1] profiles.a.patterns[0].regex profiles.a.patterns[1].name profiles.b default_profile icap.failure icap.timeout icap.url"
	if strings.Join(paths, " ") != want {
		t.Fatalf("errors at\n%s\nwant\n%s\n%v", strings.Join(paths, " "), want, err)
	}
}

// JSON escapes do not hide a secret: PHP writes every slash as \/, and any
// character may be a \u escape. Offsets are in the unescaped body.
func TestJSONEscapes(t *testing.T) {
	e := testEngine(t, OversizeBlock, ModeEnforce, 1<<20)
	jsonType := http.Header{"Content-Type": {"application/json; charset=utf-8"}}
	hook := `https:\/\/hooks.slack.com\/services\/T0ABCDEFG\/B0ABCDEFG\/` + "abcdefghijklmnopqrstuvwx"
	cases := []struct {
		name, body string
		h          http.Header
		want       string
	}{
		{"escaped slashes", `{"text":"hi","url":"` + hook + `"}`, jsonType, "slack_token@body:28"},
		{"unicode escapes", `{"t":"\u0067hp_` + testSecret[4:] + `"}`, jsonType, "github_token@body:6"},
		{"vendor json type", `{"t":"\u0067hp_` + testSecret[4:] + `"}`, http.Header{"Content-Type": {"application/vnd.api+json"}}, "github_token@body:6"},
		{"escapes elsewhere, secret plain", `{"a":"line\nnext","t":"` + testSecret + `"}`, jsonType, "github_token@body:22"},
		{"no escape: scanned in place", `{"t":"` + testSecret + `"}`, jsonType, "github_token@body:6"},
		{"not json: escapes stay", `\u0067hp_` + testSecret[4:], http.Header{"Content-Type": {"text/plain"}}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := inspect(t, e, "http://h.test/", c.h, []byte(c.body))
			if got := locations(out.Findings); got != c.want {
				t.Fatalf("findings %q, want %q", got, c.want)
			}
			if c.want == "" {
				got, _ := io.ReadAll(out.Body)
				if string(got) != c.body {
					t.Fatalf("forwarded %q", got)
				}
			}
		})
	}
}

// WriteTo (the forwarder's way to send a held body) writes exactly the
// bytes the client sent: the held part in pieces, then any rest.
func TestHeldBodyWriteTo(t *testing.T) {
	body := make([]byte, 3*heldWriteChunk+12345)
	for i := range body {
		body[i] = "abcdefgh \n{}:,"[i*7%14]
	}
	for _, c := range []struct {
		name     string
		oversize string
		max      int64
	}{{"held whole", OversizeBlock, 1 << 20}, {"held and the rest", OversizeAllow, heldWriteChunk + 100}} {
		t.Run(c.name, func(t *testing.T) {
			e := testEngine(t, c.oversize, ModeEnforce, c.max)
			out := inspect(t, e, "http://h.test/", nil, body)
			wt, ok := out.Body.(io.WriterTo)
			if out.Action != Forward || !ok {
				t.Fatalf("action %v, body %T", out.Action, out.Body)
			}
			var got bytes.Buffer
			n, err := wt.WriteTo(&got)
			if err != nil || n != int64(len(body)) || !bytes.Equal(got.Bytes(), body) {
				t.Fatalf("WriteTo: %d bytes, %v; equal %v", n, err, bytes.Equal(got.Bytes(), body))
			}
			out.Body.Close()
		})
	}
}

// blockedWriter holds its first Write until released.
type blockedWriter struct {
	started, release chan struct{}
	got              bytes.Buffer
}

func (w *blockedWriter) Write(p []byte) (int, error) {
	if w.started != nil {
		close(w.started)
		w.started = nil
		<-w.release
	}
	return w.got.Write(p)
}

// A Close while WriteTo writes from the held buffer (http.Transport closes
// bodies from another goroutine) stops it after that write, and the buffer
// is not handed to another request while the write reads it.
func TestHeldBodyCloseDuringWriteTo(t *testing.T) {
	e := testEngine(t, OversizeBlock, ModeEnforce, 1<<20)
	body := bytes.Repeat([]byte("payload "), 100000)
	for range 10 {
		out := inspect(t, e, "http://h.test/", nil, body)
		w := &blockedWriter{started: make(chan struct{}), release: make(chan struct{})}
		started := w.started
		done := make(chan error)
		go func() {
			_, err := out.Body.(io.WriterTo).WriteTo(w)
			done <- err
		}()
		<-started
		out.Body.Close()
		// Another request takes a pooled buffer and fills it: not the one
		// being written from.
		other := inspect(t, e, "http://h.test/", nil, bytes.Repeat([]byte("X"), 900000))
		close(w.release)
		if err := <-done; !errors.Is(err, errBodyClosed) {
			t.Fatalf("WriteTo after Close: %v", err)
		}
		if w.got.Len() != heldWriteChunk || bytes.Contains(w.got.Bytes(), []byte("X")) {
			t.Fatalf("wrote %d bytes, another request's bytes among them: %v", w.got.Len(), bytes.Contains(w.got.Bytes(), []byte("X")))
		}
		other.Body.Close()
	}
}
