package forward

import (
	"bytes"
	"crypto/rand"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
)

// TestRespWriterCopiesBodiesThroughPool: goproxy copies each forwarded body
// with io.Copy(w, resp.Body); through respWriter the body arrives intact, is
// counted for the access log, sets the implied 200, and the copy allocates
// no 32 KiB buffer of its own.
func TestRespWriterCopiesBodiesThroughPool(t *testing.T) {
	body := make([]byte, 100<<10)
	rand.Read(body)

	rec := httptest.NewRecorder()
	w := &respWriter{ResponseWriter: rec}
	// A plain io.Reader, as the Transport's body is: no WriterTo to take
	// the copy's place.
	n, err := io.Copy(w, struct{ io.Reader }{bytes.NewReader(body)})
	if err != nil || n != int64(len(body)) {
		t.Fatalf("copied %d, %v; want %d", n, err, len(body))
	}
	if !bytes.Equal(rec.Body.Bytes(), body) {
		t.Fatal("body changed on the way")
	}
	if w.written != int64(len(body)) || w.status != http.StatusOK {
		t.Fatalf("counted %d bytes, status %d; want %d, 200", w.written, w.status, len(body))
	}

	// Allocation per copy, into a writer that keeps nothing.
	small := body[:4<<10]
	sink := &respWriter{ResponseWriter: discardWriter{}}
	copyOnce := func() {
		if _, err := io.Copy(sink, struct{ io.Reader }{bytes.NewReader(small)}); err != nil {
			t.Fatal(err)
		}
	}
	copyOnce() // fill the pool
	const rounds = 200
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range rounds {
		copyOnce()
	}
	runtime.ReadMemStats(&after)
	limit := uint64(1 << 10)
	if raceEnabled {
		limit = 16 << 10 // the pool keeps three buffers in four: about 8 KiB a copy
	}
	if per := (after.TotalAlloc - before.TotalAlloc) / rounds; per > limit {
		t.Fatalf("%d bytes allocated per body copy, want at most %d: io.Copy allocates 32 KiB on its own", per, limit)
	}
}

type discardWriter struct{}

func (discardWriter) Header() http.Header         { return http.Header{} }
func (discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (discardWriter) WriteHeader(int)             {}
