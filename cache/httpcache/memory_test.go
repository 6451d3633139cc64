package httpcache

import (
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
)

// TestMemoryBoundedUnderFlood: a flood of unique URLs, four times what the
// store may hold, never grows the heap past max_bytes plus a constant: the
// accounting (bodies, header fields, per-object overhead) covers what the
// objects really hold. Small bodies make the overhead dominate, large ones
// the bodies.
func TestMemoryBoundedUnderFlood(t *testing.T) {
	const maxBytes = 2 << 20
	// What the test itself, the origin, the Transport's pooled connections
	// and the runtime may grow by besides the store.
	const slack = 1 << 20
	for _, size := range []int{16, 4 << 10} {
		t.Run(fmt.Sprintf("%d-byte bodies", size), func(t *testing.T) {
			body := strings.Repeat("m", size)
			e := newEnv(t, Options{MaxBytes: maxBytes}, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "max-age=600")
				w.Header().Set("Content-Type", "application/octet-stream")
				w.Header().Set("ETag", `"`+r.URL.Path+`"`)
				io.WriteString(w, body)
			})
			flood := func(from, to int) {
				for i := from; i < to; i++ {
					resp, err := e.client.Get(fmt.Sprintf("%s/flood/%d", e.origin.srv.URL, i))
					if err != nil {
						t.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
			perObject := int64(size) + objectOverhead
			n := int(4 * maxBytes / perObject)
			flood(0, 50) // warm up the Transport, the origin and the runtime
			base := heapInUse()
			flood(50, n)
			grown := heapInUse() - base
			stored, objects := e.cache.Usage()
			t.Logf("%d requests, %d objects stored in %d accounted bytes; heap grew %d bytes (%.0f per object)",
				n, objects, stored, grown, float64(grown)/float64(objects))
			if stored > maxBytes {
				t.Errorf("the store accounts %d bytes, more than max_bytes %d", stored, maxBytes)
			}
			if e.obs.evicted.Load() == 0 {
				t.Errorf("nothing was evicted: the flood did not fill the store")
			}
			if grown > maxBytes+slack {
				t.Errorf("the heap grew by %d bytes, past max_bytes %d plus %d", grown, maxBytes, slack)
			}
		})
	}
}

func heapInUse() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
